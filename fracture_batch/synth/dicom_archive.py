"""A PACS-like DICOM archive: full-size 12-bit radiographs, each stored losslessly in every
transfer syntax an archive holds that can be written here.

Every image is drawn once (``synth.anatomy``), written as uncompressed DICOM by the synth
writer (MONOCHROME1 or MONOCHROME2, rescale and window per file), then re-encoded without
loss into the other syntaxes, so the copies of one image hold the same stored values
(``tests/test_dicom_reduce.py`` checks it) and any difference in their scores is the
decoders'. Encoders: pydicom ``compress`` (RLE; JPEG-LS through pyjpegls; JPEG 2000
through pylibjpeg-openjpeg), GDCM (JPEG lossless SV1, process 14), imagecodecs / OpenJPH
(HTJ2K lossless, wrapped by pydicom's ``encapsulate``).
"""
from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

log = logging.getLogger(__name__)


class DicomSyntax(str, enum.Enum):
    EXPLICIT = "explicit"  # Explicit VR Little Endian, uncompressed
    RLE = "rle"
    JPEG_LS = "jpeg-ls"  # lossless
    JPEG2000 = "j2k"  # lossless
    JPEG_LOSSLESS = "jpeg-lossless"  # process 14, selection value 1
    HTJ2K = "htj2k"  # lossless

    @property
    def uid(self) -> str:
        from pydicom import uid

        return {"explicit": uid.ExplicitVRLittleEndian, "rle": uid.RLELossless, "jpeg-ls": uid.JPEGLSLossless,
                "j2k": uid.JPEG2000Lossless, "jpeg-lossless": uid.JPEGLosslessSV1,
                "htj2k": uid.HTJ2KLossless}[self.value]


def syntax_available(syntax: DicomSyntax) -> tuple[bool, str]:
    """(can be written here, why not)."""
    try:
        if syntax is DicomSyntax.JPEG_LOSSLESS:
            import gdcm  # noqa: F401  (importable = the encoder is there)
        elif syntax is DicomSyntax.HTJ2K:
            import imagecodecs

            if not imagecodecs.HTJ2K.available:
                return False, "imagecodecs was built without OpenJPH"
        elif syntax is not DicomSyntax.EXPLICIT:
            from pydicom.pixels import get_encoder

            if not get_encoder(syntax.uid).is_available:
                return False, f"no pydicom encoder plugin for {syntax.value} is installed"
    except ImportError as exc:
        return False, f"{exc.name} is not installed"
    return True, ""


def available_syntaxes() -> tuple[DicomSyntax, ...]:
    return tuple(s for s in DicomSyntax if syntax_available(s)[0])


def transcode(src: Path, dst: Path, syntax: DicomSyntax) -> Path:
    """Re-encode an uncompressed DICOM file without loss."""
    import pydicom

    if syntax is DicomSyntax.EXPLICIT:
        dst.write_bytes(src.read_bytes())
    elif syntax is DicomSyntax.JPEG_LOSSLESS:
        _gdcm_transcode(src, dst, "JPEGLosslessProcess14_1")
    elif syntax is DicomSyntax.HTJ2K:
        import imagecodecs
        from pydicom.encaps import encapsulate

        ds = pydicom.dcmread(src)
        stream = imagecodecs.htj2k_encode(ds.pixel_array, reversible=True)
        ds.PixelData = encapsulate([bytes(stream)])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = syntax.uid
        ds.save_as(dst, enforce_file_format=True)
    else:
        ds = pydicom.dcmread(src)
        ds.compress(syntax.uid, generate_instance_uid=False)
        ds.save_as(dst, enforce_file_format=True)
    return dst


def _gdcm_transcode(src: Path, dst: Path, ts_name: str) -> None:
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(src))
    if not reader.Read():
        raise RuntimeError(f"GDCM cannot read {src}")
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, ts_name)))
    change.SetInput(reader.GetImage())
    if not change.Change():
        raise RuntimeError(f"GDCM cannot re-encode {src} as {ts_name}")
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(dst))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    if not writer.Write():
        raise RuntimeError(f"GDCM cannot write {dst}")


@dataclass(frozen=True)
class ArchiveFile:
    path: Path
    image: int  # which drawn image (copies of one image share it)
    syntax: DicomSyntax
    photometric: str
    width: int
    height: int


def generate_dicom_archive(
    out_dir: str | Path,
    n_images: int,
    *,
    shape: tuple[int, int] = (2500, 2000),
    syntaxes: Iterable[DicomSyntax | str] | None = None,
    seed: int = 0,
    fractured_fraction: float = 0.5,
) -> list[ArchiveFile]:
    """``n_images`` drawn radiographs (alternately MONOCHROME2 / MONOCHROME1), each in every
    syntax of ``syntaxes`` (default: all writable here) as ``<image>-<syntax>.dcm``."""
    from fracture_batch.synth.anatomy import render, sample_scene
    from fracture_batch.synth.generate import dicom_info
    from fracture_batch.synth.writers import ImageFormat, write_image

    chosen = tuple(DicomSyntax(s) for s in syntaxes) if syntaxes is not None else available_syntaxes()
    for s in chosen:
        ok, why = syntax_available(s)
        if not ok:
            raise RuntimeError(f"cannot write {s.value} DICOM here: {why}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: list[ArchiveFile] = []
    for k in range(n_images):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(4000, k)))
        fractured = bool(rng.random() < fractured_fraction)
        scene = sample_scene(rng, shape[0], shape[1], fractured=fractured, subtle_fraction=0.1)
        fmt = ImageFormat.DICOM_MONO1 if k % 2 else ImageFormat.DICOM_MONO2
        src = write_image(out / f"img{k:03d}-source", render(scene), fmt, rng, dicom_info(scene, rng))
        for s in chosen:
            dst = transcode(src, out / f"img{k:03d}-{s.value}.dcm", s)
            files.append(ArchiveFile(dst, k, s, "MONOCHROME1" if k % 2 else "MONOCHROME2", shape[1], shape[0]))
        src.unlink()
    log.info("wrote %d images x %d syntaxes to %s", n_images, len(chosen), out)
    return files
