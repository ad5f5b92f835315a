"""Raster formats (PNG, JPEG, TIFF, BMP, ...) -> float32 gray in [0, 1] per the pixel contract.

See the package docstring (``fracture_batch.decode``) for the rules; everything here
reads headers before pixels so size limits apply before any allocation.
"""
from __future__ import annotations

import io
import logging
import os
import struct
from pathlib import Path

import numpy as np

from fracture_batch.decode.types import DEFAULT_MAX_PIXELS, Decoded, DecodeError, check_size, contained

log = logging.getLogger(__name__)

MAX_TIFF_PAGES = 256  # radiographs have a handful; thousands means not a radiograph


# ---- header-only checks -----------------------------------------------------------------
def open_image(path: Path, data: bytes | None = None):
    """PIL image (header parsed, pixels not read), without PIL's global bomb check.

    Same plugin search as ``PIL.Image.open`` minus ``_decompression_bomb_check``, whose
    limit is process-wide and which warns below it; ``check_size`` applies ours.
    ``data``: the file's bytes when the caller has already read them.
    """
    from PIL import Image

    if data is None:
        with open(path, "rb") as f:
            prefix = f.read(16)
    else:
        prefix = data[:16]
    for loader in (Image.preinit, Image.init):
        loader()
        for fmt in list(Image.ID):
            factory, accept = Image.OPEN[fmt]
            try:
                result = not accept or accept(prefix)
                if isinstance(result, str) or not result:
                    continue
                # Given a path, the plugin opens (and later closes) the file itself.
                return factory(str(path)) if data is None else factory(io.BytesIO(data), str(path))
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue
            except OSError as exc:  # the file was readable above: its header is broken
                raise DecodeError(f"corrupt or truncated {fmt} image header: {exc}") from None
    raise DecodeError("not an image file that can be read (unknown or corrupt format)")


@contained
def probe_image(path: str | Path, data: bytes | None = None, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """Format, oriented size and bit depth from the header alone (``pixels`` empty).

    Applies the same refusals as ``decode_file`` that need no pixels (size limit,
    TIFF page count), so a batch decoder (DALI) can be fed only plausible files.
    """
    path = Path(path)
    img, fmt = _open_checked(path, data, max_pixels)
    with img:
        w, h = img.size
        if fmt == "tiff":
            _check_tiff_pages(io.BytesIO(data) if data is not None else path)
        depth = _MODE_DEPTH.get(img.mode, 8)
        if fmt == "tiff" and _tiff_needs_tifffile(img):
            depth = 16
        orientation = 1
        # PIL's PNG getexif() decodes the whole image when the eXIf chunk is not in the
        # header part: only look when it was already seen (a header probe must stay cheap).
        if fmt != "png" or "exif" in img.info:
            try:
                orientation = img.getexif().get(0x0112, 1)
            except Exception:
                pass
        if orientation in (5, 6, 7, 8):
            w, h = h, w
        return Decoded(np.empty((0, 0), np.float32), fmt, w, h, depth, {"pil_mode": img.mode})


_MODE_DEPTH = {"I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32, "1": 1}


def _open_checked(path: Path, data: bytes | None, max_pixels: int):
    """(PIL image with header only, format name), size checked against ``max_pixels``."""
    try:
        img = open_image(path, data)
    except OSError as exc:
        raise DecodeError(f"cannot read file: {exc.strerror or exc}") from None
    try:
        check_size(*img.size, max_pixels)
        if img.format == "PNG":
            _check_png_data_fits(path, data)
    except DecodeError:
        img.close()
        raise
    return img, _format_name(img, path)


PNG_MAX_DEFLATE_RATIO = 1032  # deflate's bound: a 258-byte match costs at least 2 bits


def _check_png_data_fits(path: Path, data: bytes | None) -> None:
    """Refuse a PNG whose IDAT chunks are too small to hold the image its header claims
    even at deflate's maximum ratio. PIL ends quietly when the zlib stream does: an 81-byte
    file claiming 16 x 6,160,396 16-bit pixels decoded as 12 real rows, ~1 GB of zeros and
    an "ok" row (found by tests/test_fuzz.py). Only chunk headers are read."""
    f = io.BytesIO(data) if data is not None else open(path, "rb")
    with f:
        size = len(data) if data is not None else os.fstat(f.fileno()).st_size
        head = f.read(33)
        if len(head) < 33 or head[12:16] != b"IHDR":
            return
        w, h, depth, colour = struct.unpack(">IIBB", head[16:26])
        channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour, 1)
        needed = h * ((w * channels * depth + 7) // 8)  # without filter bytes: a lower bound
        pos, compressed = 33, 0
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            length = int.from_bytes(chunk[:4], "big")
            if chunk[4:8] == b"IDAT":
                compressed += min(length, size - pos - 8)  # a length may lie; the file cannot
            elif chunk[4:8] == b"IEND":
                break
            pos += 12 + length
    if compressed * PNG_MAX_DEFLATE_RATIO < needed:
        raise DecodeError(
            f"PNG holds {compressed:,} bytes of image data, too few for the {w}x{h} image its "
            "header claims: truncated or corrupt"
        )


def _format_name(img, path: Path) -> str:
    fmt = (img.format or path.suffix.lstrip(".")).lower()
    return {"jpg": "jpeg", "mpo": "jpeg"}.get(fmt, fmt)


def _check_tiff_pages(src) -> None:
    if tiff_page_count(src) > MAX_TIFF_PAGES:
        raise DecodeError(f"TIFF has more than {MAX_TIFF_PAGES} pages; not a radiograph")


def tiff_page_count(src, limit: int = MAX_TIFF_PAGES) -> int:
    """Pages in a TIFF (path or binary file object), counting at most ``limit + 1`` IFDs
    (a cycle in the IFD chain ends the walk)."""
    if isinstance(src, (str, Path)):
        with open(src, "rb") as f:
            return tiff_page_count(f, limit)
    f = src
    f.seek(0)
    head = f.read(16)
    if len(head) < 8 or head[:2] not in (b"II", b"MM"):
        raise DecodeError("not a TIFF file (bad byte-order mark)")
    e = "<" if head[:2] == b"II" else ">"
    (magic,) = struct.unpack(e + "H", head[2:4])
    big = magic == 43
    if not big and magic != 42:
        raise DecodeError(f"not a TIFF file (magic {magic})")
    count_fmt, count_size, entry_size, off_fmt, off_size = ("Q", 8, 20, "Q", 8) if big else ("H", 2, 12, "I", 4)
    (offset,) = struct.unpack(e + off_fmt, head[8:16] if big else head[4:8])
    seen: set[int] = set()
    while offset and offset not in seen and len(seen) <= limit:
        seen.add(offset)
        f.seek(offset)
        raw = f.read(count_size)
        if len(raw) < count_size:
            break  # truncated chain: the pages found so far are what there is
        (n,) = struct.unpack(e + count_fmt, raw)
        f.seek(offset + count_size + n * entry_size)
        raw = f.read(off_size)
        offset = struct.unpack(e + off_fmt, raw)[0] if len(raw) == off_size else 0
    return len(seen)


# ---- raster decoding ------------------------------------------------------------------
def decode_raster(path: Path, *, max_pixels: int, reduce_spec=None) -> Decoded:
    """``reduce_spec``: a ModelSpec whose reduction rule applies (``decode.reduce``): JPEG
    DCT scaling, else a box mean of the decoded gray; the result carries its geometry."""
    decoded = _decode_raster(path, max_pixels=max_pixels, reduce_spec=reduce_spec)
    if reduce_spec is not None and decoded.geometry is None:
        from fracture_batch.decode.reduce import reduce_by_box, required_size

        pixels, geometry = reduce_by_box(decoded.pixels, required_size(decoded.width, decoded.height, reduce_spec))
        if geometry is not None:
            decoded = Decoded(pixels, decoded.format, decoded.width, decoded.height, decoded.bit_depth,
                              decoded.meta, geometry)
    return decoded


def _decode_raster(path: Path, *, max_pixels: int, reduce_spec=None) -> Decoded:
    try:
        img, fmt = _open_checked(path, None, max_pixels)
    except DecodeError:
        if not _has_tiff_magic(path):
            raise
        # TIFF layouts PIL cannot open (e.g. 16-bit gray + alpha): tifffile reads them.
        _check_tiff_pages(path)
        try:
            arr, depth = _tiff_via_tifffile(path, max_pixels)
        except DecodeError:
            raise
        except Exception as exc:
            raise DecodeError(f"corrupt or unsupported TIFF image: {exc}") from None
        return Decoded(arr, "tiff", arr.shape[1], arr.shape[0], depth)
    with img:
        w, h = img.size
        try:
            if fmt == "tiff":
                _check_tiff_pages(path)
                if _tiff_needs_tifffile(img):
                    arr, depth = _tiff_via_tifffile(path, max_pixels)
                    return Decoded(arr, fmt, arr.shape[1], arr.shape[0], depth)
            geometry = None
            if fmt == "jpeg" and reduce_spec is not None:
                geometry = _jpeg_draft(img, reduce_spec)
            img.load()
            img = _exif_transposed(img)
            arr, depth = _to_gray_float(img)
        except DecodeError:
            raise
        except MemoryError:
            raise DecodeError(f"out of memory decoding a {w}x{h} image") from None
        except Exception as exc:  # PIL raises OSError/ValueError/SyntaxError/... on bad data
            raise DecodeError(f"corrupt or truncated {fmt.upper()} image: {exc}") from None
    if geometry is not None:
        return Decoded(arr, fmt, geometry.width, geometry.height, depth, geometry=geometry)
    return Decoded(arr, fmt, arr.shape[1], arr.shape[0], depth)


def _jpeg_draft(img, spec):
    """libjpeg DCT scaling (PIL ``draft``) per the reduction rule; None when it does not
    engage. Only without an EXIF rotation (the geometry is of the stored orientation)."""
    from fracture_batch.decode.reduce import dct_geometry, dct_scale, required_size

    w, h = img.size
    s = dct_scale(w, h, required_size(w, h, spec))
    if s == 1:
        return None
    try:
        if img.getexif().get(0x0112, 1) not in (1, None):
            return None
    except Exception:
        return None
    img.draft("L" if img.mode == "L" else img.mode, (-(-w // s), -(-h // s)))
    s = round(w / img.size[0])
    return dct_geometry(w, h, s) if s > 1 and img.size == (-(-w // s), -(-h // s)) else None


def _has_tiff_magic(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")


def _exif_transposed(img):
    from PIL import ImageOps

    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block is not worth losing the image over
        return img
    return ImageOps.exif_transpose(img) if orientation in range(2, 9) else img


def _tiff_needs_tifffile(img) -> bool:
    """16-bit colour (PIL reads it as 8-bit RGB) and other layouts PIL narrows."""
    bits = img.tag_v2.get(258, (8,))
    bits = bits if isinstance(bits, tuple) else (bits,)
    return max(bits) > 8 and img.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _tiff_via_tifffile(path: Path, max_pixels: int) -> tuple[np.ndarray, int]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        h, w = page.imagelength, page.imagewidth
        check_size(w, h, max_pixels)
        arr = page.asarray()
        orientation = int(page.tags.valueof(274, 1) or 1)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and page.photometric == tifffile.PHOTOMETRIC.RGB:
        arr = _luminance(arr[..., :3].astype(np.float32))
    elif arr.ndim == 3:
        arr = arr[..., 0]  # gray + extra samples (alpha): keep gray
    info = np.iinfo(page.dtype) if np.issubdtype(page.dtype, np.integer) else None
    out = arr.astype(np.float32) / float(info.max) if info else _float_to_unit(arr)
    return _apply_orientation(out, orientation), page.bitspersample


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """EXIF/TIFF orientation 1-8 applied to an (H, W) array (same rules as exif_transpose)."""
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1, :],
           5: lambda a: a.T, 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 1)[::-1, :],
           8: lambda a: np.rot90(a, 1)}
    return np.ascontiguousarray(ops[orientation](arr)) if orientation in ops else arr


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114], np.float32)


def _float_to_unit(arr: np.ndarray) -> np.ndarray:
    """Float images: kept if already in [0, 1], else stretched over their own range."""
    arr = arr.astype(np.float32)
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if lo >= 0.0 and hi <= 1.0:
        return np.nan_to_num(arr)
    return np.nan_to_num((arr - lo) / (hi - lo)) if hi > lo else np.zeros_like(arr)


def _to_gray_float(img) -> tuple[np.ndarray, int]:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(img).astype(np.float32) / 65535.0, 16
    if mode == "I":  # 32-bit int: 16-bit PNG/TIFF data in some PIL versions
        arr = np.asarray(img)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            return _float_to_unit(arr), 32
        return arr.astype(np.float32) / 65535.0, 16
    if mode == "F":
        return _float_to_unit(np.asarray(img)), 32
    if mode == "1":
        return np.asarray(img, dtype=np.float32), 1
    if mode != "L":
        # Colour, palette, CMYK, alpha: luminance (ITU-R 601-2) as PIL computes it;
        # alpha is dropped, not composited (radiographs carry no meaningful alpha).
        if mode not in ("RGB", "RGBA", "P", "PA", "LA", "La", "RGBa", "RGBX"):
            img = img.convert("RGB")  # CMYK, YCbCr, LAB, HSV
        img = img.convert("L")
    return np.asarray(img, dtype=np.float32) / np.float32(255), 8
