"""Backends behind one interface, and the rule that picks one (``--backend/--device auto``).

``auto`` scores exactly the file the user gave; it decides the backend from the file
type and the device from what is installed and present:
- ``.plan`` / ``.engine`` -> tensorrt (needs a CUDA GPU: a fatal error otherwise);
- ``.onnx`` -> onnxruntime; on a GPU with onnxruntime-gpu: TensorRT EP (engine cache) then
  CUDA EP; on the CPU onnxruntime or OpenVINO, whichever ``cpu_rule`` finds faster among
  those within their parity bar (``--backend openvino`` forces OpenVINO);
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
# Backends that read a file type other than their suffix's default.
ALSO_READS = {BackendKind.OPENVINO: BackendKind.ONNXRUNTIME}


@dataclass(frozen=True)
class Resolution:
    backend: BackendKind
    device: DeviceKind
    reason: str
    inference_precision: str = ""  # openvino: the precision auto chose ("": the option's)


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
    model_path: str | Path, backend: BackendKind | str = "auto", device: DeviceKind | str = "auto",
    threads: int = 0,
) -> Resolution:
    """``threads``: the inference threads the run will use (the CPU probe times with them)."""
    path = Path(model_path)
    backend, device = BackendKind(backend), DeviceKind(device)
    was_auto = backend is BackendKind.AUTO
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
    elif ALSO_READS.get(backend, backend) is not by_suffix:
        raise BackendError(
            f"--backend {backend.value} cannot run a {path.suffix} file; it needs "
            + {BackendKind.ONNXRUNTIME: ".onnx", BackendKind.TENSORRT: ".plan", BackendKind.TORCH: ".pt",
               BackendKind.OPENVINO: ".onnx"}[backend]
            + " (or use --backend auto)"
        )
    else:
        why = f"--backend {backend.value}"
    device, dev_why = _resolve_device(backend, device)
    if was_auto and backend is BackendKind.ONNXRUNTIME and device is DeviceKind.CPU:  # the CPU branch: onnxruntime or OpenVINO
        from fracture_batch.backends.cpu_rule import resolve_cpu_backend

        choice = resolve_cpu_backend(path, threads=threads)
        return Resolution(choice.backend, device, f"{path.suffix} file -> {choice.reason}; {dev_why}",
                          choice.inference_precision)
    return Resolution(backend, device, f"{why}; {dev_why}")


def _resolve_device(backend: BackendKind, device: DeviceKind) -> tuple[DeviceKind, str]:
    if backend is BackendKind.TENSORRT:
        if device is DeviceKind.CPU:
            raise BackendError("a TensorRT engine cannot run on --device cpu; score the .onnx instead")
        ok, why = has_cuda()
        if not ok:
            raise BackendError(f"a TensorRT engine needs a CUDA GPU ({why}); score the .onnx on CPU instead")
        return DeviceKind.CUDA, why
    if backend is BackendKind.OPENVINO:
        if device is DeviceKind.CUDA:
            raise BackendError("the OpenVINO backend runs on the CPU here; use --device cpu or --backend auto")
        return DeviceKind.CPU, "openvino runs on the CPU"
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
    elif kind is BackendKind.OPENVINO:
        from dataclasses import replace

        from fracture_batch.backends.openvino_backend import OpenVinoBackend as cls

        if resolution.inference_precision and options.inference_precision == "auto":
            options = replace(options, inference_precision=resolution.inference_precision)
    else:
        raise BackendError(f"backend {kind} is not concrete; call resolve_backend first")
    return cls(model_path, resolution.device, options)
