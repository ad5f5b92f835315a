"""DICOM decoding per the pixel contract (pydicom 3)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fracture_batch.decode import Decoded, DecodeError

log = logging.getLogger(__name__)


def decode_dicom(path: Path, *, max_pixels: int) -> Decoded:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError as exc:
        raise DecodeError(f"not a readable DICOM file: {exc}") from None
    except Exception as exc:  # pydicom raises many types on truncated data
        raise DecodeError(f"corrupt or truncated DICOM file: {exc}") from None
    if "PixelData" not in ds:
        kind = str(getattr(ds, "SOPClassUID", "unknown SOP class"))
        try:
            kind = ds.SOPClassUID.name
        except Exception:
            pass
        raise DecodeError(f"DICOM object without pixel data (not an image): {kind}")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    if rows * cols > max_pixels:
        raise DecodeError(f"DICOM claims {cols}x{rows} pixels, above the limit of {max_pixels:,}")
    try:
        arr = ds.pixel_array
    except Exception as exc:
        raise DecodeError(f"DICOM pixel data cannot be decoded: {exc}") from None
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[0]  # multi-frame: frame 0 (documented in the README)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if arr.ndim == 3:  # colour DICOM -> luminance
        arr = arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        photometric = "RGB"
    bits = int(ds.get("BitsStored", 8))
    values = apply_modality_lut(arr, ds)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        values = apply_voi_lut(values, ds, index=0)
        lo, hi = _voi_output_range(ds, values)
    else:
        lo, hi = float(np.min(values)), float(np.max(values))
    out = (np.asarray(values, dtype=np.float32) - lo) / max(hi - lo, 1e-6)
    out = np.clip(out, 0.0, 1.0)
    if photometric == "MONOCHROME1":
        out = 1.0 - out  # after VOI, so bone ends bright
    return Decoded(
        out.astype(np.float32), "dicom", out.shape[1], out.shape[0], bits,
        meta={"photometric": photometric},
    )


def _voi_output_range(ds, values) -> tuple[float, float]:
    """Output range of the VOI stage: window output spans [min, max] of the input type
    range for linear windows in pydicom; use the data's own range as a robust bound."""
    return float(np.min(values)), float(np.max(values))
