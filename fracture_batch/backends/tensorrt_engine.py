"""Run a serialized TensorRT engine with torch CUDA tensors as its I/O buffers.

The sidecar is checked *before* deserialising (wrong GPU model or TensorRT version ->
``EngineIncompatibleError`` saying to rebuild), so a scoring run stops before it reads
any input. Input may be a numpy batch (copied to the GPU once) or a torch CUDA tensor
(e.g. DALI's output): the latter is bound directly, with no host round trip. Modeled on
NVIDIA's TensorRT samples (name-based tensor API, ``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``). GPU only: imports tensorrt and torch lazily.

Streams (see ``fracture_batch.backends.cuda_streams`` for the whole design): each engine
owns a ``torch.cuda.Stream`` (one engine per inference worker), never the legacy default
stream, on which TensorRT adds ``cudaDeviceSynchronize()`` calls (NvInferRuntime.h,
``enqueueV3``). The host-to-device copy, the bindings' alignment copies, the inference and
the device-to-host copy are all enqueued on it; ``run`` returns once *this* stream's
output is on the host (an event, not a device-wide synchronize).

Bindings: ``set_tensor_address`` returns False for a name the engine does not have, and
every device pointer must be 256-byte aligned (NvInferRuntime.h, ``setTensorAddress``): a
chunk of a larger batch starts at ``start * C*H*W*itemsize`` bytes, not always a multiple
of 256, so such a chunk is copied into an aligned buffer first.
"""
from __future__ import annotations

import logging
from pathlib import Path

from fracture_batch.backends.base import file_sha256
from fracture_batch.backends.cuda_streams import adopt
from fracture_batch.model.sidecar import (
    EngineIncompatibleError,
    GpuInfo,
    check_engine_compatible,
    check_engine_file,
    read_sidecar,
)

log = logging.getLogger(__name__)

TRT_ALIGNMENT = 256  # bytes, NvInferRuntime.h setTensorAddress: "at least 256-byte alignment"


class EngineRunError(RuntimeError):
    """TensorRT refused a binding, a shape or an enqueue; the message says which."""


def chunk_bounds(n: int, max_batch: int) -> list[tuple[int, int]]:
    """[start, stop) of each engine call for a batch of ``n`` (the profile's max at most)."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    return [(s, min(n, s + max_batch)) for s in range(0, n, max_batch)]


def is_aligned(ptr: int, alignment: int = TRT_ALIGNMENT) -> bool:
    return ptr % alignment == 0


def aligned_empty(torch, shape, dtype, device, alignment: int = TRT_ALIGNMENT):
    """An uninitialised tensor whose data pointer is ``alignment``-aligned, whatever the
    allocator's own alignment (torch's CUDA caching allocator gives 512 bytes; the CPU one
    used by the tests, 64): over-allocate by one alignment and start at the aligned byte."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    numel = 1
    for d in shape:
        numel *= int(d)
    raw = torch.empty(numel * itemsize + alignment, dtype=torch.uint8, device=device)
    offset = (-raw.data_ptr()) % alignment
    return raw[offset : offset + numel * itemsize].view(dtype).view(tuple(shape))


def as_aligned(torch, t):
    """``t`` if TensorRT may bind it as is, else an aligned contiguous copy (same stream)."""
    if t.is_contiguous() and is_aligned(t.data_ptr()):
        return t
    out = aligned_empty(torch, t.shape, t.dtype, t.device)
    out.copy_(t)
    return out


def bind(context, name: str, ptr: int) -> None:
    if not is_aligned(ptr):
        raise EngineRunError(f"TensorRT binding {name!r} at {ptr:#x} is not {TRT_ALIGNMENT}-byte aligned")
    if not context.set_tensor_address(name, ptr):
        raise EngineRunError(f"TensorRT refused the address for {name!r} (set_tensor_address returned False)")


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
    """Load once, ``run(batch)`` many times. One per inference worker: one execution
    context and one CUDA stream, not thread-safe."""

    def __init__(self, path: str | Path, device_id: int = 0):
        import tensorrt as trt
        import torch

        self.path = Path(path)
        sidecar = read_sidecar(self.path)
        if not torch.cuda.is_available():
            raise EngineIncompatibleError("no CUDA GPU is available to run a TensorRT engine")
        if not 0 <= device_id < torch.cuda.device_count():
            raise EngineIncompatibleError(f"--device-id {device_id}: only {torch.cuda.device_count()} CUDA GPU(s) here")
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
        # TensorRT allocates on the CUDA device current when the runtime/engine/context are
        # made: make it the one asked for (``device_id``), not device 0.
        with torch.cuda.device(self.device):
            self._runtime = trt.Runtime(self._logger)
            self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise EngineIncompatibleError(f"TensorRT could not deserialise {self.path}; rebuild it with fracture-batch export --tensorrt")
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(device=self.device)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise EngineIncompatibleError(f"{self.path}: expected one input and one output, got {inputs} -> {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self._in_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(self.input_name))
        self._out_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(self.output_name))
        self.description = (
            f"TensorRT {trt.__version__} engine {self.path.name} ({sidecar.precision}, batch 1..{self.max_batch}, "
            f"opt {sidecar.opt_batch}) on {gpu.name} (cuda:{device_id}, own stream)"
        )

    def _on_stream(self):
        from fracture_batch.backends.cuda_streams import on_stream

        return on_stream(self.stream)

    def run(self, batch, ready=()):
        """(N, 3, S, S) numpy array or torch CUDA tensor -> (N, classes) float32 torch CUDA
        tensor, computed on this engine's stream (callers read it on that stream, or after
        ``to_host``). ``ready``: events the input's producer recorded (cuda_streams)."""
        torch = self._torch
        with self._on_stream():
            if isinstance(batch, torch.Tensor) and batch.device.type == "cuda":
                # Made on another stream (DALI's): wait for it on the device, keep its memory.
                adopt(self.stream, [batch], ready)
                x = batch
            else:
                host = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(batch)
                if self.device.type == "cuda":
                    host = host.pin_memory()  # an async copy needs page-locked memory
                x = host.to(self.device, non_blocking=True)
            x = x.to(dtype=self._in_dtype)
            outs = [self._enqueue(x[a:b]) for a, b in chunk_bounds(int(x.shape[0]), self.max_batch)]
            out = outs[0] if len(outs) == 1 else torch.cat(outs)
            return out.float()

    def _enqueue(self, chunk):
        torch, ctx = self._torch, self.context
        chunk = as_aligned(torch, chunk)
        if not ctx.set_input_shape(self.input_name, tuple(chunk.shape)):
            raise EngineRunError(f"input shape {tuple(chunk.shape)} is outside the engine's profile (batch 1..{self.max_batch})")
        out = aligned_empty(torch, tuple(ctx.get_tensor_shape(self.output_name)), self._out_dtype, chunk.device)
        bind(ctx, self.input_name, chunk.data_ptr())
        bind(ctx, self.output_name, out.data_ptr())
        if not ctx.execute_async_v3(self.stream.cuda_stream):
            raise EngineRunError("TensorRT execute_async_v3 failed (see TensorRT's log above)")
        return out

    def to_host(self, out):
        """A result of ``run`` as numpy: copied on this engine's stream, waiting for its event only."""
        from fracture_batch.backends.cuda_streams import to_host

        return to_host(self.stream, out)

    def close(self) -> None:
        self.context = None
        self.engine = None


def load_engine(path: str | Path, device_id: int = 0) -> TensorRTEngine:
    return TensorRTEngine(path, device_id=device_id)
