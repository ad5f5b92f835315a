"""Write a rendered radiograph (float32 gray in [0, 1], bone bright) in one file format.

Every format stores the same picture the way real archives do:
- ``png8`` / ``jpeg``: 8-bit gray (JPEG quality varies per file);
- ``png16``: 12-bit data bit-replicated into the 16-bit container, so a reader scaling
  by the type's max sees the full range and more than 8 bits are really used;
- ``dicom-mono1`` / ``dicom-mono2``: 12 bits stored in 16 allocated, with Rescale
  Slope/Intercept and Window Center/Width chosen so that modality LUT -> first window
  -> (MONOCHROME1: inversion) reproduces the picture; MONOCHROME1 stores inverted values;
- ``dicom-j2k``: the same, JPEG 2000 lossless (pylibjpeg-openjpeg, MIT) via pydicom 3's
  ``Dataset.compress``.
Random choices (quality, window, rescale, UIDs) come from the caller's generator, so
bytes are reproducible. Identifiers are synthetic ("SYNTH^PATIENT") and carry no PHI.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

BITS_STORED = 12
_MAX12 = (1 << BITS_STORED) - 1


class ImageFormat(str, Enum):
    PNG8 = "png8"
    PNG16 = "png16"
    JPEG = "jpeg"
    DICOM_MONO1 = "dicom-mono1"
    DICOM_MONO2 = "dicom-mono2"
    DICOM_J2K = "dicom-j2k"

    @property
    def suffix(self) -> str:
        return {"png8": ".png", "png16": ".png", "jpeg": ".jpg"}.get(self.value, ".dcm")

    @property
    def is_dicom(self) -> bool:
        return self.value.startswith("dicom")


DEFAULT_FORMATS = (
    ImageFormat.PNG8, ImageFormat.PNG16, ImageFormat.JPEG, ImageFormat.DICOM_MONO1, ImageFormat.DICOM_MONO2,
)


def has_j2k_encoder() -> bool:
    """True when pydicom can write JPEG 2000 (pylibjpeg-openjpeg or gdcm installed)."""
    try:
        from pydicom.pixels.encoders import JPEG2000LosslessEncoder
    except ImportError:  # pragma: no cover - pydicom < 3
        return False
    return bool(JPEG2000LosslessEncoder.is_available)


@dataclass(frozen=True)
class DicomInfo:
    """Class-independent acquisition details that end up in DICOM tags."""

    body_part: str = "FOREARM"
    laterality: str = "L"  # matches the side marker when there is one
    view: str = "AP"
    study_uid: str = ""  # views of one study share these (synth.studies); "" = new ones per file
    series_uid: str = ""


def write_image(
    stem: Path, gray01: np.ndarray, fmt: ImageFormat, rng: np.random.Generator, info: DicomInfo = DicomInfo()
) -> Path:
    """Write ``gray01`` as ``stem + suffix`` and return the path."""
    from PIL import Image

    path = stem.with_suffix(fmt.suffix)
    if fmt is ImageFormat.PNG8:
        Image.fromarray(_quantize(gray01, 255).astype(np.uint8)).save(path, compress_level=1)
    elif fmt is ImageFormat.JPEG:
        quality = int(rng.integers(80, 96))
        Image.fromarray(_quantize(gray01, 255).astype(np.uint8)).save(path, quality=quality)
    elif fmt is ImageFormat.PNG16:
        q12 = _quantize(gray01, _MAX12).astype(np.uint16)
        # bit replication (PNG spec's recommended 12 -> 16 bit scaling): 4095 -> 65535
        Image.fromarray((q12 << 4) | (q12 >> 8)).save(path, compress_level=1)
    else:
        _write_dicom(path, gray01, fmt, rng, info)
    return path


def _quantize(gray01: np.ndarray, top: int) -> np.ndarray:
    return np.rint(np.clip(gray01, 0.0, 1.0) * top)


def _write_dicom(path: Path, gray01: np.ndarray, fmt: ImageFormat, rng: np.random.Generator, info: DicomInfo) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        ComputedRadiographyImageStorage,
        DigitalXRayImageStorageForPresentation,
        ExplicitVRLittleEndian,
        JPEG2000Lossless,
        generate_uid,
    )

    mono1 = fmt is ImageFormat.DICOM_MONO1 or (fmt is ImageFormat.DICOM_J2K and rng.random() < 0.5)
    stored, rescale, windows = _stored_values(gray01, mono1, rng)
    token = rng.bytes(16).hex()  # entropy for UIDs and fake identifiers, drawn from the seed
    cr = rng.random() < 0.5
    sop_class = ComputedRadiographyImageStorage if cr else DigitalXRayImageStorageForPresentation
    sop_uid = generate_uid(entropy_srcs=[token, "sop"])
    when = dt.date(2015, 1, 1) + dt.timedelta(days=int(rng.integers(0, 3650)))
    seconds = int(rng.integers(7 * 3600, 20 * 3600))

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.StudyInstanceUID = info.study_uid or generate_uid(entropy_srcs=[token, "study"])
    ds.SeriesInstanceUID = info.series_uid or generate_uid(entropy_srcs=[token, "series"])
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = when.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"
    ds.AccessionNumber = f"SYN{token[:10].upper()}"
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, int(rng.integers(1, 10))
    # Clearly fake identifiers, present so downstream privacy options can be tested.
    ds.PatientName = "SYNTH^PATIENT"
    ds.PatientID = f"SYNTH-{token[10:18].upper()}"
    ds.PatientBirthDate, ds.PatientSex = "", "O"
    ds.Modality = "CR" if cr else "DX"
    ds.Manufacturer = "fracture-batch synthetic"
    ds.BodyPartExamined, ds.ViewPosition = info.body_part, info.view
    if cr:
        ds.Laterality = info.laterality
    else:
        ds.ImageLaterality = info.laterality
        ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.BurnedInAnnotation = "NO"
    spacing = round(float(rng.uniform(0.1, 0.2)), 3)
    ds.ImagerPixelSpacing = [spacing, spacing]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if mono1 else "MONOCHROME2"
    ds.Rows, ds.Columns = gray01.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, BITS_STORED, BITS_STORED - 1, 0
    ds.RescaleSlope, ds.RescaleIntercept = rescale
    ds.RescaleType = "US"
    ds.WindowCenter = [c for c, _ in windows] if len(windows) > 1 else windows[0][0]
    ds.WindowWidth = [w for _, w in windows] if len(windows) > 1 else windows[0][1]
    ds.VOILUTFunction = "LINEAR"
    ds.PixelData = stored.tobytes()
    if fmt is ImageFormat.DICOM_J2K:
        if not has_j2k_encoder():
            raise RuntimeError("JPEG 2000 DICOM needs an encoder: pip install pylibjpeg pylibjpeg-openjpeg")
        ds.compress(JPEG2000Lossless, stored, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)


def _stored_values(gray01: np.ndarray, mono1: bool, rng: np.random.Generator):
    """Stored 12-bit values, (slope, intercept) and windows whose first entry maps the
    modality values back to the picture (inverted for MONOCHROME1, which the viewer
    inverts again after the window)."""
    slope = float(rng.choice([1.0, 1.0, 0.5, 2.0]))
    intercept = float(rng.choice([0.0, 0.0, -1024.0]))
    lo, span = intercept, _MAX12 * slope  # modality value range of 12 stored bits
    width = float(np.round(span * rng.uniform(0.6, 0.95)))
    center = float(np.round(lo + width / 2 + rng.uniform(0.0, span - width)))
    shown = 1.0 - gray01 if mono1 else gray01
    modality = center - width / 2 + shown * width
    stored = np.clip(np.rint((modality - intercept) / slope), 0, _MAX12).astype(np.uint16)
    windows = [(center, width)]
    if rng.random() < 0.3:  # a second, narrower preset as real modalities add
        windows.append((center, float(np.round(width * 0.6))))
    return stored, (slope, intercept), windows
