"""Pixels -> normalised model input, the Python decoder family's only implementation.

Input is a decoded radiograph as float32 gray in [0, 1] (see ``decode``); the output
is the (3, S, S) float32 tensor the model spec describes. The DALI pipeline builds the
same operations from the same spec (``dali_pipeline``); tests compare the two.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from fracture_batch.model.spec import ModelSpec, ResizeMode


def resize_gray(gray01: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Resize per the spec with an antialiased triangle filter, in float32.

    PIL's 'F' mode keeps full float precision (16-bit data is not squeezed to 8 bits
    before resizing) and its BILINEAR filter widens with the scale factor, i.e. it
    antialiases like torchvision's ``antialias=True``.
    """
    img = Image.fromarray(np.ascontiguousarray(gray01, dtype=np.float32), mode="F")
    s = spec.input_size
    if spec.resize_mode is ResizeMode.SQUASH:
        return np.asarray(img.resize((s, s), Image.Resampling.BILINEAR), dtype=np.float32)
    box = crop_source_box(*img.size, spec)
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


def to_model_input(gray01: np.ndarray, spec: ModelSpec) -> np.ndarray:
    if gray01.ndim != 2:
        raise ValueError(f"expected a 2-D gray image, got shape {gray01.shape}")
    return normalize_gray(resize_gray(gray01, spec), spec).astype(np.float32, copy=False)
