"""Decode one radiograph file to float32 gray in [0, 1] per the pixel contract.

The contract (ARCHITECTURE.md "Pixels") is what callers rely on:

- 8- and 16-bit gray read without clipping: 8-bit data divided by 255, 16-bit PNG/TIFF
  by 65535 (the max of the type; PIL modes ``I;16``/``I;16B``/``I``), never truncated.
  16-bit colour TIFF goes through tifffile (PIL would reduce it to 8 bits); 16-bit
  colour PNG is reduced to 8 bits per channel by PIL (no clipping, less precision).
- colour (RGB, RGBA, palette, CMYK, gray+alpha) -> luminance (ITU-R 601: PIL's ``L``);
  alpha is ignored. EXIF orientation is honoured.
- multi-page TIFF: page 0; more than ``MAX_TIFF_PAGES`` pages is refused (counted by
  walking the IFD chain, bounded, before any pixel is read).
- DICOM is recognised by content (``DICM`` at offset 128, or a bare dataset without
  preamble, see ``is_dicom``) or by a ``.dcm``/``.dicom``/``.dic`` suffix and handled by
  ``fracture_batch.decode.dicom`` (pixel rules and output columns documented there).

``max_pixels`` (``--max-pixels``, default ``DEFAULT_MAX_PIXELS``) is checked from the
header before pixel data is decoded, for every format, so a PNG claiming 50,000 x 50,000
becomes a ``DecodeError`` without allocating it. PIL's own decompression-bomb check
(a process-wide ``Image.MAX_IMAGE_PIXELS``, which warns or raises) is bypassed per call
by opening through the format plugin directly; the limit we apply is the caller's.

``decode_for_model`` returns the model tensor and the metadata without keeping the
full-size pixels, and decodes only what the model sees: per the spec's reduction rule
(``ModelSpec.decode_reduce`` / ``reduce_min_ratio``, ``fracture_batch.decode.reduce``)
JPEG 2000 / HTJ2K drop resolution levels, JPEG uses libjpeg's DCT scaling, everything
else is box-averaged before the final antialiased resize, which maps the reduced pixels
back onto the full image's geometry. ``reduce=False`` decodes every pixel (parity checks
against DALI, which always does).
Every failure raises ``DecodeError`` with a message a person understands.
"""
from __future__ import annotations
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from fracture_batch.decode.raster import MAX_TIFF_PAGES, decode_raster, open_image, probe_image, tiff_page_count
from fracture_batch.decode.types import (
    DEFAULT_MAX_PIXELS,
    DICOM_SUFFIXES,
    Decoded,
    DecodeError,
    DecoderKind,
    IdentifierMode,
    check_size,
    contained,
)

__all__ = [
    "DEFAULT_MAX_PIXELS", "DICOM_SUFFIXES", "MAX_TIFF_PAGES", "Decoded", "DecodeError", "DecoderKind",
    "IdentifierMode", "check_size", "decode_file", "decode_for_model", "decode_gray", "is_dicom", "looks_like_dicom",
    "open_image", "probe_image", "tiff_page_count",
]


_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB",
        b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
        b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV"}


def is_dicom(path: str | Path) -> bool:
    """DICOM by content (the suffix is not trusted): 128-byte preamble then b'DICM', or a
    bare dataset (no preamble, as some old archives hold) starting with a group 0002/0008
    element in little-endian explicit VR (a VR code at bytes 4-5) or implicit VR (a small
    length at bytes 4-7). No raster format starts like either."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return looks_like_dicom(head)


def looks_like_dicom(head: bytes) -> bool:
    """``is_dicom`` on the first 132 (or more) bytes of a file."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if len(head) < 8 or head[:2] not in (b"\x02\x00", b"\x08\x00"):
        return False
    return head[4:6] in _VRS or int.from_bytes(head[4:8], "little") < 256


@contained
def decode_file(
    path: str | Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    identifiers: IdentifierMode = IdentifierMode.HASH,
    uid_salt: str = "",
) -> Decoded:
    path = Path(path)
    if is_dicom(path) or path.suffix.lower() in DICOM_SUFFIXES:
        from fracture_batch.decode.dicom import decode_dicom

        return decode_dicom(path, max_pixels=max_pixels, identifiers=identifiers, uid_salt=uid_salt)
    return decode_raster(path, max_pixels=max_pixels)


@contained
def decode_for_model(
    path: str | Path,
    spec,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    identifiers: IdentifierMode = IdentifierMode.HASH,
    uid_salt: str = "",
    reduce: bool | None = None,
    normalize: bool = True,
) -> tuple[np.ndarray, Decoded]:
    """(3, S, S) float32 model input and the file's metadata (``pixels`` left empty).

    ``reduce``: None follows the spec's rule (``spec.decode_reduce``), False decodes every
    pixel whatever the spec says (parity checks against full decodes), True applies the
    rule even where the spec turns it off. ``normalize=False``: the (S, S) resized gray
    in [0, 1] instead, one third of the bytes (what a decode child sends its parent);
    ``model.preprocess.normalize_gray`` of it is the model input, bit for bit."""
    from fracture_batch.model.preprocess import resize_gray, to_model_input

    decoded = decode_gray(path, spec, max_pixels=max_pixels, identifiers=identifiers, uid_salt=uid_salt,
                          reduce=reduce)
    if normalize:
        tensor = to_model_input(decoded.pixels, spec, decoded.geometry)
    else:
        if decoded.pixels.ndim != 2:
            raise ValueError(f"expected a 2-D gray image, got shape {decoded.pixels.shape}")
        tensor = resize_gray(decoded.pixels, spec, decoded.geometry)
    return tensor, replace(decoded, pixels=np.empty((0, 0), np.float32))


@contained
def decode_gray(
    path: str | Path,
    spec,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    identifiers: IdentifierMode = IdentifierMode.HASH,
    uid_salt: str = "",
    reduce: bool | None = None,
) -> Decoded:
    """The first half of ``decode_for_model``: gray [0, 1] pixels decoded by the spec's
    reduction rule, with their ``geometry`` (None when full size); the second half is
    ``model.preprocess.to_model_input(pixels, spec, geometry)``."""
    from fracture_batch.model.spec import DecodeReduce

    path = Path(path)
    rule = spec if reduce is None else spec.replace(decode_reduce=DecodeReduce.AUTO if reduce else DecodeReduce.OFF)
    if is_dicom(path) or path.suffix.lower() in DICOM_SUFFIXES:
        from fracture_batch.decode.dicom import decode_dicom

        decoded = decode_dicom(path, max_pixels=max_pixels, identifiers=identifiers, uid_salt=uid_salt,
                               reduce_spec=rule)
    else:
        decoded = decode_raster(path, max_pixels=max_pixels, reduce_spec=rule)
    return decoded

