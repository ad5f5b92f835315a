"""DICOM on the device: the host parses headers and extracts frame bytes, nvImageCodec
decodes, torch applies the pixel contract and the spec's resize/normalise there.

Needs only torch and nvImageCodec (``nvidia-nvimgcodec-cu13``; DALI is not used). Steps:

1. host (``prepare``): ``dicom.read_header`` / ``validate_header`` (the CPU decoder's own
   refusals), the per-file parameters of the pixel contract (``DeviceParams``: rescale,
   first window, stored range, MONOCHROME1), and frame 0 as bytes: the encapsulated code
   stream, or the raw frame viewed as uint16 (never converted to float on the host);
2. device: code streams of the syntaxes the backend decodes (nvJPEG: JPEG baseline,
   extended, lossless; nvJPEG2000: JPEG 2000, HTJ2K; on a CPU-only machine the CPU
   backends: JPEG 2000 / HTJ2K through OpenCV, 8-bit JPEG through libjpeg-turbo) go to
   ``Decoder.decode`` as one batch with ``allow_any_depth`` (native depth, no 8-bit
   scaling); results arrive zero-copy through DLPack. Raw frames are uploaded as uint16.
   Other syntaxes (RLE, JPEG-LS) are decoded to stored values on the host (pydicom) and
   uploaded as uint16 too;
3. device: float32, modality rescale, window (the closed form of ``dicom._rescale_window_unit``),
   MONOCHROME1 inversion, then the antialiased resize as two matrix products whose rows
   are PIL's BILINEAR coefficients for the spec's box (``resample_matrix``), and mean/std.

Every decoded frame is checked for the known silent failures: ``None`` in the batch, a
shape other than Rows x Columns, values above the stored bit range (DALI-style
65535/4095 rescaling), an all-zero frame (nvJPEG before 13.0.2 returned zeros for
9-15-bit lossless JPEG, nvImageCodec issue #50). Such a file, and any file the device
path cannot take (colour, LUT tables), is decoded by the CPU decoder
(``decode_for_model``), so every file still gets the reference result; ``counts`` says
how many took which path and why (the scorer writes them to ``_SUCCESS``).

The spec's reduction rule does not apply here: nvImageCodec has no reduced-resolution
decode, and on a GPU the full decode is cheap; parity is with ``decode_for_model(...,
reduce=False)`` (tests/test_gpu_dicom.py states the bound).
"""
from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fracture_batch.decode.dicom_frames import (
    JPEG2000_SYNTAXES, JPEG_BASELINE, JPEG_EXTENDED, JPEG_LOSSLESS_SYNTAXES, UNCOMPRESSED_SYNTAXES, frame0_bytes,
    is_plain_gray, transfer_syntax,
)
from fracture_batch.decode.types import DEFAULT_MAX_PIXELS, Decoded, DecodeError, IdentifierMode
from fracture_batch.model.preprocess import crop_source_box
from fracture_batch.model.spec import ModelSpec, ResizeMode

log = logging.getLogger(__name__)

NVIMGCODEC_INSTALL_HINT = "pip install nvidia-nvimgcodec-cu13  (CPU backends work without a GPU)"
GPU_SYNTAXES = JPEG2000_SYNTAXES | JPEG_LOSSLESS_SYNTAXES | {JPEG_BASELINE, JPEG_EXTENDED}
# nvImageCodec's CPU backends (OpenCV's openjpeg, libjpeg-turbo 8-bit) on a machine without CUDA.
CPU_BACKEND_SYNTAXES = JPEG2000_SYNTAXES | {JPEG_BASELINE}


@functools.lru_cache(maxsize=1)
def has_nvimgcodec() -> tuple[bool, str]:
    try:
        from nvidia import nvimgcodec
    except Exception as exc:  # ImportError, or a broken native library
        return False, f"nvImageCodec is not importable ({exc.__class__.__name__}: {exc}); {NVIMGCODEC_INSTALL_HINT}"
    return True, f"nvImageCodec {getattr(nvimgcodec, '__version__', '?')}"


@dataclass(frozen=True)
class DeviceParams:
    """The pixel contract's per-file numbers (see ``dicom.to_unit_gray``)."""

    rows: int
    cols: int
    bits_stored: int
    signed: bool
    slope: float
    intercept: float
    window: tuple[float, float, str] | None  # (centre, width, LINEAR | LINEAR_EXACT | SIGMOID)
    lo: float  # stored range after rescale (no window)
    hi: float
    mono1: bool


def device_params(ds) -> DeviceParams | None:
    """None when the device path does not implement what this file needs (colour, LUT
    tables, an unknown VOI function, an invalid window): the CPU decoder takes it."""
    from fracture_batch.decode.dicom import _first, stored_range

    if not is_plain_gray(ds) or int(ds.get("BitsAllocated") or 0) not in (8, 16):
        return None
    slope = float(ds.RescaleSlope) if "RescaleSlope" in ds and "RescaleIntercept" in ds else 1.0
    intercept = float(ds.RescaleIntercept) if "RescaleSlope" in ds and "RescaleIntercept" in ds else 0.0
    window = None
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        func = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        center, width = _first(ds, "WindowCenter"), _first(ds, "WindowWidth")
        if func not in ("LINEAR", "LINEAR_EXACT", "SIGMOID") or width <= (1 if func == "LINEAR" else 0):
            return None  # width 1 threshold / invalid: the CPU decoder applies or refuses it
        window = (center, width, func)
    lo, hi = stored_range(ds)
    return DeviceParams(int(ds.Rows), int(ds.Columns), int(ds.get("BitsStored") or ds.BitsAllocated),
                        bool(int(ds.get("PixelRepresentation") or 0)), slope, intercept, window, lo, hi,
                        str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1")


@dataclass
class HostFrame:
    path: Path
    info: Decoded  # format / size / depth / DICOM columns (pixels empty)
    params: DeviceParams | None
    syntax: str
    stream: bytes | None = None  # encapsulated code stream of frame 0
    stored: np.ndarray | None = None  # (rows, cols) uint16/int16/uint8 stored values
    host_ms: float = 0.0


def prepare(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, identifiers: IdentifierMode = IdentifierMode.HASH,
            uid_salt: str = "", device_syntaxes: frozenset[str] = GPU_SYNTAXES) -> HostFrame:
    """The host's whole share of the device path for one file (raises ``DecodeError``)."""
    from fracture_batch.decode.dicom import _frame0, dicom_header_fields, read_header, validate_header

    t0 = time.perf_counter()
    ds, forced = read_header(path)
    rows, cols = validate_header(ds, path, max_pixels=max_pixels)
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
    info = Decoded(np.empty((0, 0), np.float32), "dicom", cols, rows, bits, dicom_header_fields(ds, identifiers, salt=uid_salt))
    params, ts = device_params(ds), transfer_syntax(ds)
    frame = HostFrame(path, info, params, ts)
    if params is not None:
        try:
            if ts in device_syntaxes:
                frame.stream = frame0_bytes(ds)
            elif ts in UNCOMPRESSED_SYNTAXES and int(ds.BitsAllocated) == 16 and not forced and ts != "1.2.840.10008.1.2.2":
                frame.stored = _raw_frame0(ds, rows, cols, params.signed)
            else:  # RLE, JPEG-LS, deflate, 8-bit raw: decode the stored values here
                frame.stored = _frame0(ds, path, forced)
        except DecodeError:
            raise
        except Exception as exc:  # truncated fragments, short pixel data
            raise DecodeError(f"DICOM pixel data cannot be read: {exc}") from None
    frame.host_ms = (time.perf_counter() - t0) * 1e3
    return frame


def _raw_frame0(ds, rows: int, cols: int, signed: bool) -> np.ndarray:
    """Frame 0 of little-endian 16-bit native pixel data as a view (no float conversion).
    Bits above Bits Stored are masked / sign-extended as pydicom does."""
    raw = np.frombuffer(ds.PixelData, dtype="<i2" if signed else "<u2", count=rows * cols).reshape(rows, cols)
    bits = int(ds.get("BitsStored") or 16)
    if bits < 16:
        shift = 16 - bits
        raw = (raw << shift) >> shift if signed else raw & ((1 << bits) - 1)
    return raw


# ---- resampling as matrices (PIL's BILINEAR coefficients) ----------------------------------------
def resample_matrix(in_size: int, out_size: int, box0: float, box1: float) -> np.ndarray:
    """(out_size, in_size) float32 rows = PIL's ``precompute_coeffs`` for the triangle
    filter over source box [box0, box1): the same antialiased resize as
    ``preprocess.resize_gray`` (filter widened by the scale, normalised, clipped at the
    border), as a matrix the device multiplies by."""
    scale = (box1 - box0) / out_size
    filterscale = max(scale, 1.0)
    support = filterscale  # BILINEAR support 1.0, widened
    m = np.zeros((out_size, in_size), np.float64)
    for xx in range(out_size):
        center = box0 + (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        x = np.arange(xmin, xmax)
        w = np.clip(1.0 - np.abs((x - center + 0.5) / filterscale), 0.0, None)
        total = w.sum()
        if total > 0:
            m[xx, xmin:xmax] = w / total
    return m.astype(np.float32)


def resize_boxes(width: int, height: int, spec: ModelSpec) -> tuple[float, float, float, float]:
    if spec.resize_mode is ResizeMode.SQUASH:
        return 0.0, 0.0, float(width), float(height)
    return crop_source_box(width, height, spec)


def to_unit_gray_torch(x, p: DeviceParams):
    """Stored values (torch tensor, any int dtype) -> float32 [0, 1], on x's device."""
    import torch

    v = x.to(torch.float32)
    if p.slope != 1.0 or p.intercept != 0.0:
        v = v * p.slope + p.intercept
    if p.window is None:
        return ((v - p.lo) / max(p.hi - p.lo, 1e-6)).clamp_(0.0, 1.0)
    center, width, func = p.window
    if func == "SIGMOID":
        out = torch.sigmoid(4.0 * (v - center) / width)
    else:
        if func == "LINEAR":
            center, width = center - 0.5, width - 1
        out = ((v - center) / width + 0.5).clamp_(0.0, 1.0)
    return 1.0 - out if p.mono1 else out


def unit_to_model_torch(gray, spec: ModelSpec, cache: dict | None = None):
    """(H, W) float32 [0, 1] -> (3, S, S) normalised, by two products with PIL's coefficients."""
    import torch

    h, w = gray.shape
    s = spec.input_size
    key = (h, w, str(gray.device))
    mats = cache.get(key) if cache is not None else None
    if mats is None:
        x0, y0, x1, y1 = resize_boxes(w, h, spec)
        mats = (torch.from_numpy(resample_matrix(h, s, y0, y1)).to(gray.device),
                torch.from_numpy(resample_matrix(w, s, x0, x1)).to(gray.device))
        if cache is not None:
            cache[key] = mats
    wy, wx = mats
    resized = wy @ (gray @ wx.T)  # horizontal then vertical, as PIL
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=gray.device)[:, None, None]
    std = torch.tensor(spec.std, dtype=torch.float32, device=gray.device)[:, None, None]
    return (resized[None] - mean) / std


@dataclass
class DeviceBatch:
    tensors: Any  # torch (N, 3, S, S) float32 on the device; zeros where errors[i]
    errors: list[str | None]
    infos: list[Decoded | None]
    paths: list[str]  # per file: device | host-decoded | cpu:<reason>
    host_ms: list[float] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)


class DeviceDicomPreprocessor:
    """Batches of DICOM paths -> model inputs on ``device`` ("cuda[:n]" or "cpu")."""

    def __init__(self, spec: ModelSpec, *, device: str = "cuda", max_pixels: int = DEFAULT_MAX_PIXELS,
                 identifiers: IdentifierMode = IdentifierMode.HASH, uid_salt: str = ""):
        ok, reason = has_nvimgcodec()
        if not ok:
            raise RuntimeError(reason)
        from nvidia import nvimgcodec

        self.spec, self.device = spec, device
        self.max_pixels, self.identifiers, self.uid_salt = max_pixels, IdentifierMode(identifiers), uid_salt
        self.gpu = device.startswith("cuda")
        if self.gpu:
            device_id = int(device.split(":")[1]) if ":" in device else 0
            self._decoder = nvimgcodec.Decoder(device_id=device_id)
            self.syntaxes = GPU_SYNTAXES
        else:
            self._decoder = nvimgcodec.Decoder(device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY,
                                               backends=[nvimgcodec.Backend(nvimgcodec.BackendKind.CPU_ONLY)])
            self.syntaxes = CPU_BACKEND_SYNTAXES
        self._params = nvimgcodec.DecodeParams(allow_any_depth=True, color_spec=nvimgcodec.ColorSpec.UNCHANGED,
                                               apply_exif_orientation=False)
        self._mats: dict = {}

    def run(self, paths: Sequence[str | Path]) -> DeviceBatch:
        import torch

        n, s = len(paths), self.spec.input_size
        out = torch.zeros((n, 3, s, s), dtype=torch.float32, device=self.device)
        batch = DeviceBatch(out, [None] * n, [None] * n, [""] * n, [0.0] * n)
        frames: list[HostFrame | None] = [None] * n
        for i, p in enumerate(paths):
            try:
                frames[i] = prepare(Path(p), max_pixels=self.max_pixels, identifiers=self.identifiers,
                                    uid_salt=self.uid_salt, device_syntaxes=self.syntaxes)
                batch.infos[i], batch.host_ms[i] = frames[i].info, frames[i].host_ms
            except DecodeError as exc:
                batch.errors[i] = str(exc)
        coded = [i for i, f in enumerate(frames) if f is not None and f.params is not None and f.stream is not None]
        decoded = self._decode_streams([frames[i].stream for i in coded])
        for i, img in zip(coded, decoded):
            self._finish(batch, i, frames[i], img, "device")
        for i, f in enumerate(frames):
            if f is None or i in coded:
                continue
            if f.params is None:
                self._cpu(batch, i, f.path, "cpu:not-device-able (colour or LUT tables)")
            else:
                self._finish(batch, i, f, torch.from_numpy(np.ascontiguousarray(f.stored)).to(self.device),
                             "host-decoded" if f.syntax not in UNCOMPRESSED_SYNTAXES else "raw-upload")
        batch.counts.update(p for p in batch.paths if p)
        batch.counts["errors"] = sum(e is not None for e in batch.errors)
        return batch

    def _decode_streams(self, streams: list[bytes]) -> list[Any]:
        if not streams:
            return []
        from nvidia import nvimgcodec

        try:
            images = self._decoder.decode([nvimgcodec.CodeStream(b) for b in streams], params=self._params)
        except Exception as exc:  # a stream whose header nvImageCodec cannot parse fails the call
            log.info("nvImageCodec batch failed (%s); decoding one by one", exc)
            images = []
            for b in streams:
                try:
                    images.append(self._decoder.decode(nvimgcodec.CodeStream(b), params=self._params))
                except Exception:
                    images.append(None)
        return [self._as_tensor(img) for img in images]

    def _as_tensor(self, img):
        import torch

        if img is None:
            return None
        if self.gpu:
            t = torch.from_dlpack(img)  # zero-copy: nvImageCodec's device buffer
        else:
            t = torch.from_numpy(np.asarray(img))
        return t[..., 0] if t.ndim == 3 else t

    def _finish(self, batch: DeviceBatch, i: int, f: HostFrame, stored, path: str) -> None:
        reason = _silent_failure(stored, f.params)
        if reason:
            self._cpu(batch, i, f.path, f"cpu:{reason}")
            return
        gray = to_unit_gray_torch(stored, f.params)
        batch.tensors[i] = unit_to_model_torch(gray, self.spec, self._mats)
        batch.paths[i] = path

    def _cpu(self, batch: DeviceBatch, i: int, path: Path, why: str) -> None:
        import torch

        from fracture_batch.decode import decode_for_model

        try:
            t, info = decode_for_model(path, self.spec, max_pixels=self.max_pixels, identifiers=self.identifiers,
                                       uid_salt=self.uid_salt, reduce=False)
        except DecodeError as exc:
            batch.errors[i], batch.paths[i] = str(exc), why
            return
        batch.tensors[i] = torch.from_numpy(t).to(self.device)
        batch.infos[i], batch.paths[i] = info, why


def _silent_failure(stored, p: DeviceParams) -> str | None:
    """Why a decoded frame must not be trusted, or None."""
    if stored is None:
        return "decoder-returned-none"
    if tuple(stored.shape) != (p.rows, p.cols):
        return f"decoded-shape-{tuple(stored.shape)}"
    import torch

    wide = stored.to(torch.int32)  # torch has no max/min for uint16
    top = int(wide.max())
    if top == 0 and int(wide.min()) == 0:
        return "all-zero"  # nvJPEG < 13.0.2 on 9-15-bit lossless; a truly black frame costs one CPU decode
    if not p.signed and top > (1 << p.bits_stored) - 1:
        return "values-above-bits-stored"  # rescaled to the type's range (DALI-style), not stored values
    return None
