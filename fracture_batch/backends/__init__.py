"""Backends behind one interface, and the rule that picks one (``--backend/--device auto``).

``auto`` scores exactly the file the user gave; it decides the backend from the file
type and the device from what is installed and present:
- ``.plan`` / ``.engine`` -> tensorrt (needs a CUDA GPU: a fatal error otherwise);
- ``.onnx`` -> onnxruntime; on a GPU with onnxruntime-gpu: TensorRT EP (engine cache) then
  CUDA EP, else the CPU EP;
- ``.pt`` -> torch (CUDA if present, else CPU). A ``.pt`` is never swapped for a nearby
  ``.onnx``: export it and pass the ``.onnx`` to get onnxruntime's speed.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

from fracture_batch.backends.base import (
    Backend,
    BackendError,
    BackendKind,
    BackendOptions,
    DeviceKind,
    file_sha256,
)

log = logging.getLogger(__name__)

__all__ = [
    "Backend", "BackendError", "BackendKind", "BackendOptions", "DeviceKind", "Resolution",
    "create_backend", "file_sha256", "has_cuda", "resolve_backend",
]

SUFFIX_BACKEND = {
    ".onnx": BackendKind.ONNXRUNTIME,
    ".plan": BackendKind.TENSORRT,
    ".engine": BackendKind.TENSORRT,
    ".pt": BackendKind.TORCH,
    ".pth": BackendKind.TORCH,
}


@dataclass(frozen=True)
class Resolution:
    backend: BackendKind
    device: DeviceKind
    reason: str


@functools.lru_cache(maxsize=1)
def has_cuda() -> tuple[bool, str]:
    """(a CUDA GPU is usable, why). Asks torch, the one CUDA runtime every install has."""
    try:
        import torch
    except Exception as exc:
        return False, f"torch not importable ({exc})"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU visible to torch"
    return True, f"CUDA GPU {torch.cuda.get_device_name(0)}"


def resolve_backend(
    model_path: str | Path, backend: BackendKind | str = "auto", device: DeviceKind | str = "auto"
) -> Resolution:
    path = Path(model_path)
    backend, device = BackendKind(backend), DeviceKind(device)
    if not path.is_file():
        raise BackendError(f"model file not found: {path}")
    by_suffix = SUFFIX_BACKEND.get(path.suffix.lower())
    if by_suffix is None:
        raise BackendError(
            f"unknown model file type {path.suffix!r} for {path.name}: expected .onnx, .plan/.engine or .pt"
        )
    if backend is BackendKind.AUTO:
        backend = by_suffix
        why = f"{path.suffix} file -> {backend.value}"
    elif backend is not by_suffix:
        raise BackendError(
            f"--backend {backend.value} cannot run a {path.suffix} file; it needs "
            + {BackendKind.ONNXRUNTIME: ".onnx", BackendKind.TENSORRT: ".plan", BackendKind.TORCH: ".pt"}[backend]
            + " (or use --backend auto)"
        )
    else:
        why = f"--backend {backend.value}"
    device, dev_why = _resolve_device(backend, device)
    return Resolution(backend, device, f"{why}; {dev_why}")


def _resolve_device(backend: BackendKind, device: DeviceKind) -> tuple[DeviceKind, str]:
    if backend is BackendKind.TENSORRT:
        if device is DeviceKind.CPU:
            raise BackendError("a TensorRT engine cannot run on --device cpu; score the .onnx instead")
        ok, why = has_cuda()
        if not ok:
            raise BackendError(f"a TensorRT engine needs a CUDA GPU ({why}); score the .onnx on CPU instead")
        return DeviceKind.CUDA, why
    if device is not DeviceKind.AUTO:
        return device, f"--device {device.value}"
    if backend is BackendKind.ONNXRUNTIME:
        from fracture_batch.backends.onnxruntime_backend import has_cuda_provider

        if not has_cuda_provider():
            return DeviceKind.CPU, "onnxruntime has no CUDA provider (onnxruntime-gpu not installed) -> cpu"
    ok, why = has_cuda()
    return (DeviceKind.CUDA, why) if ok else (DeviceKind.CPU, f"{why} -> cpu")


def create_backend(
    model_path: str | Path, resolution: Resolution, options: BackendOptions = BackendOptions()
) -> Backend:
    """Load the model once; raises BackendError with a message for the user."""
    kind = resolution.backend
    if kind is BackendKind.ONNXRUNTIME:
        from fracture_batch.backends.onnxruntime_backend import OnnxRuntimeBackend as cls
    elif kind is BackendKind.TORCH:
        from fracture_batch.backends.torch_backend import TorchBackend as cls
    elif kind is BackendKind.TENSORRT:
        from fracture_batch.backends.tensorrt_backend import TensorRTBackend as cls
    else:
        raise BackendError(f"backend {kind} is not concrete; call resolve_backend first")
    return cls(model_path, resolution.device, options)
