"""Native TensorRT backend: a thin adapter over export's engine runner.

``fracture_batch.backends.tensorrt_engine`` (owned by export) loads a ``.plan`` with its
JSON sidecar (spec + the GPU / TensorRT version it was built for), refuses an engine
built for another GPU or TensorRT, binds torch CUDA tensors as I/O buffers and runs
``execute_async_v3``. This adapter gives it the Backend interface. GPU only: on a
machine without CUDA it raises a BackendError that says so, before any input is read.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fracture_batch.backends.base import BackendError, BackendKind, BackendOptions, DeviceKind, check_input

log = logging.getLogger(__name__)

TENSORRT_INSTALL_HINT = "pip install 'fracture-batch[gpu]'  (tensorrt-cu13>=10.12; needs an NVIDIA GPU and driver)"


def has_tensorrt() -> tuple[bool, str]:
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:
        return False, f"tensorrt is not importable ({exc.__class__.__name__}: {exc}); {TENSORRT_INSTALL_HINT}"
    return True, f"tensorrt {tensorrt.__version__}"


class TensorRTBackend:
    kind = BackendKind.TENSORRT

    def __init__(self, model_path: str | Path, device: DeviceKind, options: BackendOptions):
        if device is not DeviceKind.CUDA:
            raise BackendError("a TensorRT engine runs on a CUDA GPU only; score the .onnx with --device cpu instead")
        ok, why = has_tensorrt()
        if not ok:
            raise BackendError(why)
        try:
            from fracture_batch.backends import tensorrt_engine
        except ImportError as exc:
            raise BackendError(f"TensorRT engine runner unavailable: {exc}") from None
        try:
            self.engine = tensorrt_engine.load_engine(Path(model_path), device_id=options.device_id)
        except Exception as exc:  # wrong GPU / TensorRT version, corrupt plan, missing sidecar
            raise BackendError(f"cannot load TensorRT engine {model_path}: {exc}") from None
        self.spec = self.engine.spec
        self.device = device
        self.max_batch = getattr(self.engine, "max_batch", None)
        self.stream = getattr(self.engine, "stream", None)  # the engine's own CUDA stream
        self.description = getattr(self.engine, "description", None) or f"TensorRT engine {Path(model_path).name}"

    def predict(self, x: np.ndarray) -> np.ndarray:
        check_input(x, self.spec)
        # A torch CUDA batch (DALI mixed) goes in as is; the engine binds it without a copy.
        out = self.engine.run(x if hasattr(x, "is_cuda") else np.ascontiguousarray(x, dtype=np.float32))
        if hasattr(out, "detach"):  # a torch CUDA tensor on the engine's stream
            out = self.engine.to_host(out) if hasattr(self.engine, "to_host") else out.detach().float().cpu().numpy()
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        close = getattr(self.engine, "close", None)
        if close:
            close()
        self.engine = None

