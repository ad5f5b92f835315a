"""Pixels -> normalised model input, the Python decoder family's only implementation.

Input is a decoded radiograph as float32 gray in [0, 1] (see ``decode``); the output
is the (3, S, S) float32 tensor the model spec describes. The DALI pipeline builds the
same operations from the same spec (``dali_pipeline``); tests compare the two.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from fracture_batch.model.spec import ModelSpec, ResizeMode


@dataclass(frozen=True)
class SourceGeometry:
    """Where the pixels of a reduced decode sit on the full image (``decode.reduce``).

    Reduced pixel centre ``c`` (continuous coordinates, pixel ``j`` centred at ``j + 0.5``)
    lies at full-image coordinate ``s = scale * c + shift`` per axis: ``shift`` 0 for box
    means and JPEG DCT scaling (block ``j`` covers ``[scale j, scale (j + 1))``), and
    ``-(scale - 1) / 2`` for a JPEG 2000 LL band (its sample ``j`` is centred on full
    pixel ``scale * j``). The resize reads the full image's box through this map, so a
    reduced decode keeps the full decode's geometry to a fraction of a full pixel.
    """

    width: int  # full image
    height: int
    scale_x: float = 1.0
    scale_y: float = 1.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    method: str = "full"  # full | j2k-levels | jpeg-dct | box-mean (for rows and reports)

    @property
    def factor(self) -> int:
        return int(round(max(self.scale_x, self.scale_y)))


def resize_target(width: int, height: int, spec: ModelSpec) -> tuple[float, float]:
    """Size (w, h) the full image is resampled to before any crop: the S x S squash, or
    the shorter-side resize of the centre-crop rule. The reduction rule keeps
    ``spec.reduce_min_ratio`` decoded pixels per pixel of this, per side."""
    if spec.resize_mode is ResizeMode.SQUASH:
        return float(spec.input_size), float(spec.input_size)
    nw, nh, _, _ = crop_geometry(width, height, spec)
    return float(nw), float(nh)


def resize_gray(gray01: np.ndarray, spec: ModelSpec, geometry: SourceGeometry | None = None) -> np.ndarray:
    """Resize per the spec with an antialiased triangle filter, in float32.

    PIL's 'F' mode keeps full float precision (16-bit data is not squeezed to 8 bits
    before resizing) and its BILINEAR filter widens with the scale factor, i.e. it
    antialiases like torchvision's ``antialias=True``. ``geometry``: ``gray01`` is a
    reduced decode of a larger image; the box resampled is the full image's, mapped.
    """
    h, w = gray01.shape
    full_w, full_h = (geometry.width, geometry.height) if geometry is not None else (w, h)
    s = spec.input_size
    if spec.resize_mode is ResizeMode.SQUASH:
        box = (0.0, 0.0, float(full_w), float(full_h))
    else:
        box = crop_source_box(full_w, full_h, spec)
    if geometry is not None:
        box = (
            (box[0] - geometry.shift_x) / geometry.scale_x, (box[1] - geometry.shift_y) / geometry.scale_y,
            (box[2] - geometry.shift_x) / geometry.scale_x, (box[3] - geometry.shift_y) / geometry.scale_y,
        )
        # A JPEG 2000 band's box ends up to half a pixel past its last sample: repeat the
        # edge (what the filter's border handling does anyway) rather than clip the box.
        pad_x, pad_y = max(0, math.ceil(box[2] - w)), max(0, math.ceil(box[3] - h))
        if pad_x or pad_y:
            gray01 = np.pad(gray01, ((0, pad_y), (0, pad_x)), mode="edge")
    img = Image.fromarray(np.ascontiguousarray(gray01, dtype=np.float32), mode="F")
    if geometry is None and spec.resize_mode is ResizeMode.SQUASH:
        return np.asarray(img.resize((s, s), Image.Resampling.BILINEAR), dtype=np.float32)
    box = tuple(min(max(v, 0.0), lim) for v, lim in zip(box, (img.size[0], img.size[1]) * 2))
    return np.asarray(img.resize((s, s), Image.Resampling.BILINEAR, box=box), dtype=np.float32)


def crop_geometry(width: int, height: int, spec: ModelSpec) -> tuple[int, int, int, int]:
    """SHORTER_SIDE_CENTER_CROP: (resized width, resized height, crop left, crop top).

    The DALI pipeline feeds these same numbers to its resize and slice operators.
    """
    s = spec.input_size
    scale = spec.resize_size / min(width, height)
    nw, nh = max(s, round(width * scale)), max(s, round(height * scale))
    return nw, nh, (nw - s) // 2, (nh - s) // 2


def crop_source_box(width: int, height: int, spec: ModelSpec) -> tuple[float, float, float, float]:
    """SHORTER_SIDE_CENTER_CROP: the crop as a (left, top, right, bottom) box in source pixels.

    Resampling only this box to S x S gives the pixels of resize-then-crop (the filter
    still reads outside the box; max difference ~1e-5) without the full-size
    intermediate, which for a 16 x 1,000,000 strip would be 256 x 16,000,000 float32
    (16 GB). Both decoder families resample this box (DALI as its resize ROI).
    """
    nw, nh, left, top = crop_geometry(width, height, spec)
    s = spec.input_size
    return left * width / nw, top * height / nh, (left + s) * width / nw, (top + s) * height / nh


def normalize_gray(resized01: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """(S, S) gray in [0, 1] -> (3, S, S) normalised with the spec's mean/std."""
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(spec.std, dtype=np.float32)[:, None, None]
    return (resized01[None, :, :] - mean) / std


def to_model_input(gray01: np.ndarray, spec: ModelSpec, geometry: SourceGeometry | None = None) -> np.ndarray:
    if gray01.ndim != 2:
        raise ValueError(f"expected a 2-D gray image, got shape {gray01.shape}")
    return normalize_gray(resize_gray(gray01, spec, geometry), spec).astype(np.float32, copy=False)
