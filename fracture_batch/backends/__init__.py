"""Backends behind one interface, and the rule that picks one (``--backend/--device auto``).

``auto`` scores exactly the file the user gave; it decides the backend from the file
type and the device from what is installed and present:
- ``.plan`` / ``.engine`` -> tensorrt (needs a CUDA GPU: a fatal error otherwise);
- ``.onnx`` -> onnxruntime; on a GPU where onnxruntime can *load* its CUDA provider
  (onnxruntime-gpu, see the README's GPU install): TensorRT EP (when it loads) then CUDA
  EP, else the CPU EP; on the CPU onnxruntime or OpenVINO, whichever ``cpu_rule`` finds
  faster among those within their parity bar (``--backend openvino`` forces OpenVINO);
- ``.pt`` -> torch (CUDA if present, else CPU). A ``.pt`` is never swapped for a nearby
  ``.onnx``: export it and pass the ``.onnx`` to get onnxruntime's speed.

Device side: ``--device auto`` takes the GPU only when the chosen backend can really use
it, and otherwise falls back to the CPU with one warning saying why (a GPU is there but
the provider does not load, or the file is CPU-only); ``--device cuda`` that cannot be
honoured is a BackendError here, before any input is read. Precision: the uint8-asymmetric
int8 file (``model.int8.onnx``, variant ``int8``) is for CPU kernels only; on CUDA ``auto``
scores its GPU sibling instead (``model.int8.trt.onnx``, symmetric int8, else
``model.fp16.onnx``), and says so; ``Resolution.model_path`` is the file actually scored.
"""
from __future__ import annotations

import functools
import logging
import os
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


CPU_ONLY_VARIANT = "int8"  # export's uint8-activation Q/DQ flavour (onnxruntime CPU kernels)
# On CUDA, in this order: symmetric int8 (the Q/DQ form TensorRT takes), then fp16.
GPU_SIBLINGS = ("int8.trt", "fp16")


@dataclass(frozen=True)
class Resolution:
    backend: BackendKind
    device: DeviceKind
    reason: str
    model_path: Path | None = None  # the file to load: the one given, or its GPU sibling (see above)
    inference_precision: str = ""  # openvino: the precision auto chose ("": the option's)


@functools.lru_cache(maxsize=None)
def has_cuda(device_id: int = 0) -> tuple[bool, str]:
    """(CUDA device ``device_id`` is usable, why). Asks torch, the one CUDA runtime every install has."""
    try:
        import torch
    except Exception as exc:
        return False, f"torch not importable ({exc})"
    if not torch.cuda.is_available():
        cuda = torch.version.cuda
        return False, "no CUDA GPU visible to torch" + ("" if cuda else " (a CPU-only torch build)")
    count = torch.cuda.device_count()
    if device_id >= count:
        return False, f"--device-id {device_id} but only {count} CUDA GPU(s) here"
    return True, f"CUDA GPU {torch.cuda.get_device_name(device_id)} (cuda:{device_id})"


def resolve_backend(
    model_path: str | Path, backend: BackendKind | str = "auto", device: DeviceKind | str = "auto",
    threads: int = 0,
    device_id: int = 0,
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
    device, dev_why, path = _resolve_device(backend, device, path, device_id)
    if was_auto and backend is BackendKind.ONNXRUNTIME and device is DeviceKind.CPU:  # the CPU branch: onnxruntime or OpenVINO
        from fracture_batch.backends.cpu_rule import resolve_cpu_backend

        choice = resolve_cpu_backend(path, threads=threads)
        return Resolution(choice.backend, device, f"{path.suffix} file -> {choice.reason}; {dev_why}", path,
                          inference_precision=choice.inference_precision)
    return Resolution(backend, device, f"{why}; {dev_why}", path)


def _fallback(why: str) -> tuple[DeviceKind, str]:
    log.warning("--device auto: scoring on the CPU: %s", why)
    return DeviceKind.CPU, f"{why} -> cpu"


def _resolve_device(backend: BackendKind, device: DeviceKind, path: Path,
                    device_id: int) -> tuple[DeviceKind, str, Path]:
    if backend is BackendKind.TENSORRT:
        if device is DeviceKind.CPU:
            raise BackendError("a TensorRT engine cannot run on --device cpu; score the .onnx instead")
        ok, why = has_cuda(device_id)
        if not ok:
            raise BackendError(f"a TensorRT engine needs a CUDA GPU ({why}); score the .onnx on CPU instead")
        return DeviceKind.CUDA, why, path
    if backend is BackendKind.OPENVINO:
        if device is DeviceKind.CUDA:
            raise BackendError("the OpenVINO backend runs on the CPU here; use --device cpu or --backend auto")
        return DeviceKind.CPU, "openvino runs on the CPU", path
    if device is DeviceKind.CPU:
        return device, "--device cpu", path
    if backend is BackendKind.ONNXRUNTIME:
        return _resolve_onnx_device(device, path, device_id)
    ok, cuda_why = has_cuda(device_id)
    if not ok:
        if device is DeviceKind.CUDA:
            raise BackendError(f"--device cuda: {cuda_why}; use --device cpu or --device auto")
        return DeviceKind.CPU, f"{cuda_why} -> cpu", path  # a CPU machine: nothing to warn about
    return DeviceKind.CUDA, cuda_why if device is DeviceKind.AUTO else f"--device cuda, {cuda_why}", path


def gpu_present() -> bool:
    """An NVIDIA GPU and driver on this machine, asked without importing torch (a CPU
    onnxruntime run should not pay torch's import and memory to learn it has no GPU)."""
    try:
        return bool(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return os.path.exists("/dev/nvidia0")


def _resolve_onnx_device(device: DeviceKind, path: Path, device_id: int) -> tuple[DeviceKind, str, Path]:
    """onnxruntime uses the GPU if its CUDA provider loads there, with a GPU file."""
    from fracture_batch.backends.onnxruntime_backend import ORT_GPU_HINT, provider_status

    ok, why = provider_status("CUDAExecutionProvider", device_id)  # cheap when not compiled in
    if not ok:
        if device is DeviceKind.CUDA:
            raise BackendError(f"--device cuda: {why}; {ORT_GPU_HINT}")
        if gpu_present():
            return (*_fallback(f"a GPU is present but {why}; {ORT_GPU_HINT}"), path)
        return DeviceKind.CPU, f"no GPU here ({why}) -> cpu", path  # a CPU machine: nothing to warn about
    if onnx_variant(path) != CPU_ONLY_VARIANT:
        return DeviceKind.CUDA, why, path
    sibling = gpu_sibling(path)
    if sibling is None:
        msg = (f"{path.name} is the CPU int8 flavour (uint8-asymmetric Q/DQ, which TensorRT and the CUDA "
               f"provider reject or run on the CPU) and no {' or '.join(f'model.{v}.onnx' for v in GPU_SIBLINGS)} "
               "is beside it; export with --precision int8 (both flavours) or fp16")
        if device is DeviceKind.CUDA:
            raise BackendError(f"--device cuda: {msg}")
        return (*_fallback(msg), path)
    if device is DeviceKind.CUDA:
        raise BackendError(f"--device cuda: {path.name} is the CPU int8 flavour (uint8-asymmetric Q/DQ); "
                           f"score {sibling} on the GPU, or use --device auto to have it chosen")
    log.warning("--device auto: %s is the CPU int8 flavour; scoring its GPU sibling %s on CUDA", path.name, sibling.name)
    return DeviceKind.CUDA, f"{why}; {path.name} is CPU-only int8 -> {sibling.name}", sibling


def onnx_variant(path: Path) -> str | None:
    """Export's variant tag (fp32 | fp16 | int8 | int8.trt) from the file's metadata, else from
    its name (model.<variant>.onnx)."""
    from fracture_batch.model.onnx_meta import VARIANT_METADATA_KEY, OnnxModelError, read_metadata

    try:
        tag = read_metadata(path).get(VARIANT_METADATA_KEY)
    except OnnxModelError:
        tag = None
    if tag:
        return tag
    name = path.name.lower()
    if name.endswith(".int8.trt.onnx"):
        return "int8.trt"
    for v in ("int8", "fp16"):
        if name.endswith(f".{v}.onnx"):
            return v
    return None


def gpu_sibling(path: Path) -> Path | None:
    """The GPU-ready file export writes beside a CPU int8 ``model.int8.onnx``, if any."""
    stem = path.name[: -len(".int8.onnx")] if path.name.lower().endswith(".int8.onnx") else "model"
    for v in GPU_SIBLINGS:
        cand = path.with_name(f"{stem}.{v}.onnx")
        if cand.is_file() and onnx_variant(cand) == v:
            return cand
    return None


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
    return cls(resolution.model_path or model_path, resolution.device, options)
