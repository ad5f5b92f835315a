"""Tiny test images and DICOM objects made in code (no files shipped, no downloads)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PID-9876543"
PATIENT_BIRTH = "19700101"


def ramp(h: int = 40, w: int = 56, hi: int = 255, dtype=np.uint8) -> np.ndarray:
    """A diagonal ramp with a bright square: structure that resizing must preserve."""
    y, x = np.mgrid[0:h, 0:w]
    arr = (x / max(w - 1, 1) * 0.6 + y / max(h - 1, 1) * 0.4) * hi
    arr[h // 4 : h // 2, w // 4 : w // 2] = hi
    return np.round(arr).astype(dtype)


def smooth_noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Radiograph-like smooth texture in [0, 1] (no hard edges, like real films)."""
    rng = np.random.default_rng(seed)
    small = rng.random((max(h // 16, 2), max(w // 16, 2)))
    from PIL import Image

    img = Image.fromarray(small.astype(np.float32), mode="F").resize((w, h), Image.Resampling.BICUBIC)
    arr = np.asarray(img)
    return np.clip((arr - arr.min()) / (np.ptp(arr) + 1e-6), 0, 1)


def make_dicom(
    path: Path,
    arr: np.ndarray,
    *,
    bits_stored: int | None = None,
    photometric: str | None = None,
    signed: bool = False,
    rescale: tuple[float, float] | None = None,
    window: tuple[float, float] | list | None = None,
    voi_lut: tuple[int, int, list[int]] | None = None,
    transfer_syntax: str | None = None,
    compress: str | None = None,
    encapsulated: list[bytes] | None = None,
    sop_class: str | None = None,
    preamble: bool = True,
    extra: dict | None = None,
) -> Path:
    """Write ``arr`` ((H, W), (F, H, W) or (H, W, 3)) as a DICOM image with PHI set."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    arr = np.asarray(arr)
    colour = arr.ndim == 3 and arr.shape[-1] == 3
    frames = arr.shape[0] if arr.ndim == 3 and not colour else 1
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class or SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT_NAME, PATIENT_ID, PATIENT_BIRTH
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", "HAND", "PA"
    ds.Rows, ds.Columns = arr.shape[-3:-1] if colour else arr.shape[-2:]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = photometric or ("RGB" if colour else "MONOCHROME2")
    if colour:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8 if arr.dtype.itemsize == 1 else 16
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if rescale:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_lut:
        item = Dataset()
        first, bits, data = voi_lut
        item.LUTDescriptor = [len(data), first, bits]
        item.add_new(0x00283006, "US", data)  # LUTData: US, not the ambiguous OW
        ds.VOILUTSequence = Sequence([item])
    for k, v in (extra or {}).items():
        setattr(ds, k, v)
    if encapsulated is not None:  # codestreams made elsewhere (e.g. Pillow's JPEG baseline)
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate(encapsulated)
        ds["PixelData"].VR = "OB"
    elif compress:
        ds.compress(compress, arr, generate_instance_uid=False)
    else:
        ds.PixelData = np.ascontiguousarray(arr).tobytes()
    ds.save_as(path, enforce_file_format=preamble)
    return Path(path)


def make_non_image(path: Path, kind: str) -> Path:
    """An SR document, RT Plan or DICOMDIR-like object: valid DICOM without Pixel Data."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop = {
        "sr": "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR Storage
        "rtplan": "1.2.840.10008.5.1.4.1.1.481.5",  # RT Plan Storage
        "dicomdir": "1.2.840.10008.1.3.10",  # Media Storage Directory Storage
    }[kind]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    if kind == "dicomdir":
        ds.FileSetID = "TEST"
        ds.DirectoryRecordSequence = Sequence([])
    else:
        ds.SOPClassUID = sop
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.PatientName = PATIENT_NAME
        ds.Modality = "SR" if kind == "sr" else "RTPLAN"
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


def png_header_only(path: Path, width: int, height: int, bit_depth: int = 8) -> Path:
    """A PNG whose IHDR claims width x height, with a tiny (invalid) IDAT: a bomb header."""
    import struct
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    body = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    Path(path).write_bytes(body)
    return Path(path)
