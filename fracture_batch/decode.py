"""Decode one radiograph file to float32 gray in [0, 1] per the pixel contract.

First version: PIL for raster formats, pydicom for DICOM. The contract
(ARCHITECTURE.md "Pixels") is what callers rely on:
- 8- and 16-bit gray read without clipping; 16-bit scaled by its real bit depth;
- colour -> luminance; EXIF orientation honoured;
- DICOM: modality LUT -> VOI LUT / window -> MONOCHROME1 inverted after VOI -> [0, 1].
Every failure raises ``DecodeError`` with a message a person understands.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 100_000_000  # 10k x 10k: above any plain radiograph (CR/DR ~ 3k x 3.5k)


class DecodeError(Exception):
    """A file that cannot become pixels; the message is shown to the user as is."""


@dataclass
class Decoded:
    pixels: np.ndarray  # (H, W) float32 in [0, 1]
    format: str  # png | jpeg | tiff | bmp | dicom | ...
    width: int
    height: int
    bit_depth: int
    meta: dict[str, Any] = field(default_factory=dict)


def is_dicom(path: Path) -> bool:
    """DICOM by content: 128-byte preamble then b'DICM' (suffix is not trusted)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def decode_file(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    path = Path(path)
    if is_dicom(path) or path.suffix.lower() in {".dcm", ".dicom"}:
        from fracture_batch.dicom import decode_dicom

        return decode_dicom(path, max_pixels=max_pixels)
    return _decode_raster(path, max_pixels=max_pixels)


def _decode_raster(path: Path, *, max_pixels: int) -> Decoded:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise DecodeError(
                    f"image is {w}x{h} = {w * h:,} pixels, above the limit of {max_pixels:,} "
                    "(raise --max-pixels if this is a real image)"
                )
            fmt = (img.format or path.suffix.lstrip(".")).lower()
            img = ImageOps.exif_transpose(img)
            arr, depth = _to_gray_float(img)
    except DecodeError:
        raise
    except UnidentifiedImageError:
        raise DecodeError("not an image file that can be read (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DecodeError(f"corrupt or truncated image: {exc}") from None
    return Decoded(arr, "jpeg" if fmt == "jpg" else fmt, arr.shape[1], arr.shape[0], depth)


def _to_gray_float(img) -> tuple[np.ndarray, int]:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img).astype(np.float32)
        # PNG/TIFF 16-bit: scaled by the max of the type; 'I' (32-bit) from 16-bit PNG too.
        return np.clip(arr / 65535.0, 0.0, 1.0), 16
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        return ((arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)), 32
    if mode == "1":
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0, 1
    if mode != "L":
        # Colour, palette, CMYK, alpha: luminance (ITU-R 601-2) as PIL computes it.
        if mode in ("LA", "RGBA", "PA"):
            img = img.convert("RGBA").convert("RGB")
        img = img.convert("L")
    return np.asarray(img, dtype=np.float32) / 255.0, 8
