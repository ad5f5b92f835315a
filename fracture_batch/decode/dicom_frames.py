"""Frame 0 of a DICOM object as code-stream bytes or stored values, reduced where it pays.

Shared by the CPU reduced decode (``frame0_reduced``, called from ``dicom.decode_dicom``)
and the device path (``gpu_dicom``), which both need the frame's bytes without pydicom
decoding them. The reference decode (pydicom's ``pixel_array``) stays the fallback:
any failure of a fast path (an odd code stream, a tile-part with fewer levels than the
main header, a missing binding) falls back to it, so a file that decodes today still
decodes and a corrupt one still gives the reference path's error row.
"""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from fracture_batch.decode import reduce
from fracture_batch.model.preprocess import SourceGeometry

log = logging.getLogger(__name__)

JPEG2000_SYNTAXES = frozenset({
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",  # JPEG 2000 lossless / lossy
    "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203",  # HTJ2K
})
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LOSSLESS_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"})
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
UNCOMPRESSED_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"})


def transfer_syntax(ds) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(meta.get("TransferSyntaxUID", "") if meta is not None else "")


def frame0_bytes(ds) -> bytes:
    """The encapsulated code stream of frame 0 (fragments joined)."""
    from pydicom.encaps import generate_frames

    n = int(ds.get("NumberOfFrames") or 1)
    return next(generate_frames(ds.PixelData, number_of_frames=max(n, 1)))


def is_plain_gray(ds) -> bool:
    """One sample, no LUT tables: the only case a fast path (or the device) handles."""
    seq = ds.get("VOILUTSequence")
    return (int(ds.get("SamplesPerPixel") or 1) == 1 and not ds.get("ModalityLUTSequence")
            and not (seq and "LUTData" in seq[0])
            and str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper() in ("MONOCHROME1", "MONOCHROME2"))


def frame0_reduced(ds, need: tuple[float, float], full: Callable[[], np.ndarray],
                   check_jpeg: Callable[[], None] = lambda: None) -> tuple[np.ndarray, SourceGeometry | None]:
    """(frame 0 stored values, geometry or None), at the resolution the rule allows.

    ``full()`` is the reference decode of frame 0 (the caller's ``_frame0``);
    ``check_jpeg()`` refuses a JPEG frame whose SOF contradicts the header
    (``dicom._check_jpeg_frame_header``, passed in so the two modules do not import each other)."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    ts = transfer_syntax(ds)
    if is_plain_gray(ds):
        try:
            fast = _codec_reduced(ds, ts, rows, cols, need, check_jpeg)
        except Exception as exc:  # the reference decode below decides what the file is
            log.debug("reduced decode failed (%s: %s); decoding in full", exc.__class__.__name__, exc)
            fast = None
        if fast is not None:
            return fast
    arr = full()
    if arr.ndim == 2 and is_plain_gray(ds):
        return reduce.reduce_by_box(arr, need)  # stored values: the window then runs on 1/k^2
    return arr, None  # colour / LUT tables: reduced after the LUTs by the caller


def _codec_reduced(ds, ts: str, rows: int, cols: int, need, check_jpeg) -> tuple[np.ndarray, SourceGeometry] | None:
    if ts in JPEG2000_SYNTAXES:
        frame = frame0_bytes(ds)
        header = reduce.parse_j2k_header(frame)
        if (header is None or (header.width, header.height) != (cols, rows) or header.components != 1
                or header.signed or header.precision > 16 or int(ds.get("PixelRepresentation") or 0)):
            return None
        r = reduce.j2k_levels(cols, rows, header.levels, need)
        if r == 0:
            return None
        bits = int(ds.get("BitsStored") or header.precision)
        return reduce.decode_j2k_reduced(frame, header, r, bits), reduce.j2k_geometry(cols, rows, r)
    if ts in JPEG_LOSSLESS_SYNTAXES and not int(ds.get("PixelRepresentation") or 0):
        check_jpeg()
        arr = _jpeg_lossless(ds, rows, cols)
        return None if arr is None else reduce.reduce_by_box(arr, need)
    if ts == JPEG_BASELINE and int(ds.get("BitsAllocated") or 8) == 8:
        if reduce.dct_scale(cols, rows, need) == 1:
            return None
        arr, s = reduce.decode_jpeg_scaled(frame0_bytes(ds), need)
        if s == 1 or arr.shape != (-(-rows // s), -(-cols // s)):
            return None
        return arr, reduce.dct_geometry(cols, rows, s)
    return None


def _jpeg_lossless(ds, rows: int, cols: int) -> np.ndarray | None:
    """Stored values of a JPEG lossless (process 14) frame through imagecodecs' liblj92
    decoder: 110 vs 200-260 ms for python-gdcm on a 5 MP 12-bit frame (same values,
    tests/test_dicom_reduce.py). The SOF is checked against the header first, as for gdcm
    (``dicom._check_jpeg_frame_header``, by the caller); None when imagecodecs is missing."""
    try:
        import imagecodecs
    except ImportError:
        return None
    arr = np.asarray(imagecodecs.ljpeg_decode(frame0_bytes(ds)))
    if arr.shape != (rows, cols) or arr.dtype.kind not in "ui":
        raise ValueError(f"JPEG lossless frame decoded to {arr.dtype} {arr.shape}, expected {rows}x{cols}")
    bits = int(ds.get("BitsStored") or 16)
    if bits < 16 and int(arr.max(initial=0)) >> bits:
        raise ValueError(f"JPEG lossless frame holds values above Bits Stored {bits}")
    return arr
