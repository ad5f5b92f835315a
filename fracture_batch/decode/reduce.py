"""Decode only what the model sees: the reduction rule and the reduced decoders.

The rule (``ModelSpec.decode_reduce`` / ``reduce_min_ratio``, so training, export parity,
benchmarks and scoring all preprocess alike): with the final resize target (w_t, h_t)
(``model.preprocess.resize_target``), a W x H image is decoded at the largest reduction
that keeps at least ``ratio`` decoded pixels per target pixel on both sides:

- JPEG 2000 / HTJ2K: reduce ``r`` resolution levels (factor 2^r), r <= the code stream's
  decomposition levels (COD marker), while ceil(W / 2^r) >= ratio * w_t and likewise H.
  The LL band is centred on full pixel 2^r * j, not on its block centre: the resize maps
  it with ``SourceGeometry(shift=-(2^r - 1) / 2)`` (without that shift a 2^3 reduction
  moved the 224 px tensor by up to 0.8 normalised units at edges; with it 0.2).
- JPEG baseline (8-bit, gray): libjpeg's DCT scaling by s in {1, 2, 4, 8} (Pillow
  ``draft``), same bound.
- everything else (uncompressed, RLE, JPEG-LS, JPEG lossless, deflate, PNG, TIFF, BMP):
  decode in full, then the integer k x k box mean with the largest k meeting the bound,
  before any LUT (DICOM stored values) so the window runs on 1/k^2 of the pixels. The
  last row / column of blocks averages what is there, so the geometry stays exact.

Pillow's JPEG 2000 plugin sizes a reduced image as round(W / 2^r) where openjpeg
produces ceil(W / 2^r) (``Jpeg2KImageFile.load``): where the two differ Pillow raises
"broken data stream" (the failure in shared/notes/archive-decode.md: 1851 px at r=3,
231 vs 232 rows; glymur and ``opj_decompress -r 3`` decode that stream fine). So a level
is only used where both roundings agree on both sides; otherwise one level less.
"""
from __future__ import annotations

import io
import logging
import math
import struct
from dataclasses import dataclass

import numpy as np

from fracture_batch.model.preprocess import SourceGeometry, resize_target
from fracture_batch.model.spec import DecodeReduce, ModelSpec

log = logging.getLogger(__name__)

J2K_SOC_SIZ = b"\xff\x4f\xff\x51"
MAX_BOX = 64  # a larger box would mean a target under 1/64 of the image: not a radiograph case


def required_size(width: int, height: int, spec: ModelSpec | None) -> tuple[float, float] | None:
    """Decoded size (w, h) the rule must keep, or None when the spec turns reduction off."""
    if spec is None or spec.decode_reduce is DecodeReduce.OFF:
        return None
    tw, th = resize_target(width, height, spec)
    return tw * spec.reduce_min_ratio, th * spec.reduce_min_ratio


def box_factor(width: int, height: int, need: tuple[float, float] | None) -> int:
    """Largest integer k with ceil(W / k) >= need_w and ceil(H / k) >= need_h (1 = none)."""
    if need is None:
        return 1
    k = 1
    while k < MAX_BOX and -(-width // (k + 1)) >= need[0] and -(-height // (k + 1)) >= need[1]:
        k += 1
    return k


def _pillow_rounding_agrees(size: int, r: int) -> bool:
    power = 1 << r
    return int((size + (power >> 1)) / power) == -(-size // power)


def j2k_levels(width: int, height: int, levels: int, need: tuple[float, float] | None) -> int:
    """Resolution levels to discard (0 = full decode) for a W x H stream of ``levels``."""
    if need is None:
        return 0
    r = 0
    while (r < levels and -(-width // (2 << r)) >= need[0] and -(-height // (2 << r)) >= need[1]):
        r += 1
    while r and not (_pillow_rounding_agrees(width, r) and _pillow_rounding_agrees(height, r)):
        r -= 1
    return r


def dct_scale(width: int, height: int, need: tuple[float, float] | None) -> int:
    """JPEG DCT scale denominator in {1, 2, 4, 8} meeting the bound."""
    if need is None:
        return 1
    s = 1
    while s < 8 and -(-width // (2 * s)) >= need[0] and -(-height // (2 * s)) >= need[1]:
        s *= 2
    return s


# ---- box mean ------------------------------------------------------------------------------
def box_mean(arr: np.ndarray, k: int) -> np.ndarray:
    """k x k block means of a 2-D array as float32, shape (ceil(H/k), ceil(W/k)); the last
    row/column of blocks is the mean of the pixels it has. Strided adds: ~4 ms for a
    2500 x 2048 uint16 image at k=4 (a reshape + sum(axis=(1, 3)) took 26 ms)."""
    if k <= 1:
        return arr.astype(np.float32, copy=False)
    h, w = arr.shape
    acc = np.float32 if arr.dtype.kind == "f" else (np.int64 if arr.dtype.kind == "i" else np.uint32)
    hb, wb = -(-h // k), -(-w // k)
    out = np.empty((hb, wb), np.float32)
    hf, wf = h // k * k, w // k * k
    for rows, r0, r1 in ((slice(0, hf // k), 0, hf), (slice(hf // k, hb), hf, h)):
        if r1 <= r0:
            continue
        band = _sum_rows(arr[r0:r1], k if r1 - r0 >= k else r1 - r0, acc)  # (n_rows, w)
        counts_r = float(min(k, r1 - r0))
        if wf:
            out[rows, : wf // k] = _sum_cols(band[:, :wf], k) / np.float32(counts_r * k)
        if wf < w:
            out[rows, wf // k] = band[:, wf:].sum(axis=1) / np.float32(counts_r * (w - wf))
    return out


def _sum_rows(a: np.ndarray, k: int, acc) -> np.ndarray:
    n = a.shape[0] // k
    v = a[: n * k].reshape(n, k, a.shape[1])
    s = v[:, 0, :].astype(acc)
    for i in range(1, k):
        s += v[:, i, :]
    return s


def _sum_cols(a: np.ndarray, k: int) -> np.ndarray:
    n = a.shape[1] // k
    v = a.reshape(a.shape[0], n, k)
    s = v[:, :, 0].astype(np.float32 if a.dtype.kind == "f" else a.dtype)
    for i in range(1, k):
        s += v[:, :, i]
    return s.astype(np.float32)


def box_geometry(width: int, height: int, k: int) -> SourceGeometry | None:
    return None if k <= 1 else SourceGeometry(width, height, float(k), float(k), 0.0, 0.0, "box-mean")


def reduce_by_box(arr: np.ndarray, need: tuple[float, float] | None) -> tuple[np.ndarray, SourceGeometry | None]:
    """(box-mean image, geometry) for a decoded 2-D array; unchanged when no box fits."""
    h, w = arr.shape[:2]
    k = box_factor(w, h, need) if arr.ndim == 2 else 1
    return (box_mean(arr, k), box_geometry(w, h, k)) if k > 1 else (arr, None)


# ---- JPEG 2000 / HTJ2K -----------------------------------------------------------------------
@dataclass(frozen=True)
class J2KHeader:
    width: int
    height: int
    components: int
    precision: int  # of component 0
    signed: bool
    levels: int  # decomposition levels, main-header COD (tile-parts may have fewer: then it fails over)
    mct: int
    htj2k: bool  # Rsiz bit 14: Part 15 capabilities


def parse_j2k_header(frame: bytes) -> J2KHeader | None:
    """SIZ and COD of a raw JPEG 2000 code stream (DICOM stores the stream, not JP2);
    None when they cannot be read (the frame goes to the full decoder, which reports)."""
    if frame[:4] != J2K_SOC_SIZ:
        return None
    try:
        pos, siz, cod = 2, None, None
        while pos + 4 <= len(frame) and pos < 65536:
            marker, length = struct.unpack(">HH", frame[pos : pos + 4])
            seg = frame[pos + 4 : pos + 2 + length]
            if length < 2 or len(seg) < length - 2:
                return None
            if marker == 0xFF51 and len(seg) >= 39:
                rsiz, x1, y1, x0, y0 = struct.unpack(">HIIII", seg[:18])
                ncomp = struct.unpack(">H", seg[34:36])[0]
                siz = (rsiz, x1 - x0, y1 - y0, ncomp, seg[36])
                if x0 or y0:
                    return None  # an image offset changes the band phases: not worth the case
            elif marker == 0xFF52 and len(seg) >= 10:
                cod = (seg[5], seg[4])
            elif marker in (0xFF90, 0xFF93):  # first tile-part: main header ends
                break
            pos += 2 + length
        if siz is None or cod is None:
            return None
        rsiz, w, h, ncomp, ssiz = siz
        return J2KHeader(w, h, ncomp, (ssiz & 0x7F) + 1, bool(ssiz & 0x80), cod[0], cod[1], bool(rsiz & 0x4000))
    except struct.error:
        return None


def has_htj2k_skipres() -> bool:
    try:
        import imagecodecs

        return bool(imagecodecs.HTJ2K.available)
    except Exception:  # not installed, or a broken native library
        return False


def decode_j2k_reduced(frame: bytes, header: J2KHeader, r: int, bits_stored: int = 16) -> np.ndarray:
    """Stored values of a single-component stream with ``r`` levels discarded.

    HTJ2K through OpenJPH (imagecodecs ``skipres``, ~4x faster than openjpeg on HT
    blocks) when installed, else Pillow's openjpeg; JPEG 2000 Part 1 through Pillow
    (``reduce``). Pillow returns 9-16 bit data shifted up to 16 bits: shifted back.
    """
    if header.htj2k and has_htj2k_skipres():
        import imagecodecs

        arr = np.asarray(imagecodecs.htj2k_decode(frame, skipres=r) if r else imagecodecs.htj2k_decode(frame))
        return _clip_band(arr, bits_stored, header)
    from PIL import Jpeg2KImagePlugin

    img = Jpeg2KImagePlugin.Jpeg2KImageFile(io.BytesIO(frame))  # direct: no global bomb check
    try:
        img.reduce = r
        img.load()
        arr = np.asarray(img)
    finally:
        img.close()
    if arr.dtype == np.uint16 and header.precision < 16:
        arr = arr >> (16 - header.precision)
    expect = (-(-header.height // (1 << r)), -(-header.width // (1 << r)))
    if arr.shape != expect:
        raise ValueError(f"reduced JPEG 2000 decode gave {arr.shape}, expected {expect}")
    return _clip_band(arr, bits_stored, header)


def _clip_band(arr: np.ndarray, bits_stored: int, header: J2KHeader) -> np.ndarray:
    """The LL band's low-pass overshoots the stored range by a few values at sharp edges:
    openjpeg (Pillow) clamps to the code stream's precision, OpenJPH wraps below zero
    (-1 read as 65535 in a 16-bit stream). Both are clamped to the DICOM stored range so
    every binding gives the same pixels (wrapped values are the ones past half the type)."""
    top = (1 << min(bits_stored, header.precision)) - 1
    if arr.dtype == np.uint16 and top < 0xFFFF:
        arr = np.where(arr >= 0x8000, 0, np.minimum(arr, top)).astype(np.uint16)
    elif arr.dtype == np.uint8 and top < 0xFF:
        arr = np.minimum(arr, top)
    return arr


def j2k_geometry(width: int, height: int, r: int) -> SourceGeometry:
    f = float(1 << r)
    return SourceGeometry(width, height, f, f, -(f - 1) / 2, -(f - 1) / 2, "j2k-levels")


def dct_geometry(width: int, height: int, s: int) -> SourceGeometry | None:
    return None if s <= 1 else SourceGeometry(width, height, float(s), float(s), 0.0, 0.0, "jpeg-dct")


def decode_jpeg_scaled(frame: bytes, need: tuple[float, float]) -> tuple[np.ndarray, int]:
    """(8-bit stored values, DCT scale) of a gray baseline JPEG frame, libjpeg-scaled."""
    from PIL import JpegImagePlugin

    img = JpegImagePlugin.JpegImageFile(io.BytesIO(frame))
    try:
        w, h = img.size
        s = dct_scale(w, h, need)
        if s > 1:
            img.draft("L", (math.ceil(w / s), math.ceil(h / s)))
            s = max(1, round(w / img.size[0]))  # what libjpeg will produce
        img.load()
        arr = np.asarray(img)
    finally:
        img.close()
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise ValueError(f"JPEG frame decoded to {arr.dtype} {arr.shape}, expected 8-bit gray")
    return arr, s
