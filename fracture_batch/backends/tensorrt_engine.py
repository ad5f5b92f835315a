"""Run a serialized TensorRT engine with torch CUDA tensors as its I/O buffers.

The sidecar is checked *before* deserialising (wrong GPU model or TensorRT version ->
``EngineIncompatibleError`` saying to rebuild), so a scoring run stops before it reads
any input. Input may be a numpy batch (copied to the GPU once) or a torch CUDA tensor
(e.g. DALI's output): the latter is bound directly, with no host round trip. Output is a
torch CUDA tensor; the caller decides when to copy to the host. Modeled on NVIDIA's
TensorRT 10 samples (name-based tensor API, ``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``). GPU only: imports tensorrt and torch lazily.
"""
from __future__ import annotations

import logging
from pathlib import Path

from fracture_batch.backends.base import file_sha256
from fracture_batch.model.sidecar import (
    EngineIncompatibleError,
    GpuInfo,
    check_engine_compatible,
    check_engine_file,
    read_sidecar,
)

log = logging.getLogger(__name__)


def _torch_dtype(trt, dtype):
    import torch

    table = {
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
        trt.DataType.BF16: torch.bfloat16,
        trt.DataType.INT8: torch.int8,
        trt.DataType.INT32: torch.int32,
        trt.DataType.INT64: torch.int64,
        trt.DataType.BOOL: torch.bool,
    }
    return table[dtype]


class TensorRTEngine:
    """Load once, ``run(batch)`` many times. Not thread-safe (one execution context)."""

    def __init__(self, path: str | Path, device_id: int = 0):
        import tensorrt as trt
        import torch

        self.path = Path(path)
        sidecar = read_sidecar(self.path)
        if not torch.cuda.is_available():
            raise EngineIncompatibleError("no CUDA GPU is available to run a TensorRT engine")
        major, minor = torch.cuda.get_device_capability(device_id)
        gpu = GpuInfo(torch.cuda.get_device_name(device_id), f"{major}.{minor}")
        check_engine_compatible(sidecar, trt.__version__, gpu)
        check_engine_file(self.path, sidecar, file_sha256(self.path))

        self._trt, self._torch = trt, torch
        self.device = torch.device("cuda", device_id)
        self.sidecar = sidecar
        self.spec = sidecar.model_spec
        self.max_batch = sidecar.max_batch
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with torch.cuda.device(self.device):
            self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise EngineIncompatibleError(f"TensorRT could not deserialise {self.path}; rebuild it with fracture-batch export --tensorrt")
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise EngineIncompatibleError(f"{self.path}: expected one input and one output, got {inputs} -> {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self._in_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(self.input_name))
        self._out_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(self.output_name))
        self.description = (
            f"TensorRT {trt.__version__} engine {self.path.name} ({sidecar.precision}, batch 1..{self.max_batch}) on {gpu.name}"
        )

    def run(self, batch):
        """(N, 3, S, S) numpy array or torch tensor -> (N, num_classes) float32 torch CUDA tensor."""
        torch = self._torch
        x = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(batch)
        x = x.to(self.device, dtype=self._in_dtype, non_blocking=True).contiguous()
        stream = torch.cuda.current_stream(self.device)
        outs = []
        for start in range(0, x.shape[0], self.max_batch):
            chunk = x[start : start + self.max_batch]
            if not self.context.set_input_shape(self.input_name, tuple(chunk.shape)):
                raise ValueError(f"input shape {tuple(chunk.shape)} is outside the engine's profile")
            out = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=self._out_dtype, device=self.device)
            self.context.set_tensor_address(self.input_name, chunk.data_ptr())
            self.context.set_tensor_address(self.output_name, out.data_ptr())
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            outs.append(out)
        return torch.cat(outs).float()

    def close(self) -> None:
        self.context = None
        self.engine = None


def load_engine(path: str | Path, device_id: int = 0) -> TensorRTEngine:
    return TensorRTEngine(path, device_id=device_id)
