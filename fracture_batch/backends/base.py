"""The one small interface every inference backend implements."""
from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from fracture_batch.model.spec import ModelSpec


class BackendKind(str, enum.Enum):
    AUTO = "auto"
    ONNXRUNTIME = "onnxruntime"
    TENSORRT = "tensorrt"
    TORCH = "torch"
    OPENVINO = "openvino"


class DeviceKind(str, enum.Enum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class Precision(str, enum.Enum):
    """The arithmetic a backend runs in: the ONNX file's (fp32/fp16/int8 Q/DQ graphs from
    export), or torch's autocast dtype (bf16/fp16), or a runtime's inference hint."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"


class BackendError(Exception):
    """A fatal backend problem (model unreadable, backend missing, wrong GPU); say what to do."""


@dataclass(frozen=True)
class BackendOptions:
    intra_op_threads: int = 0  # 0: the library default (all cores)
    amp: bool = False  # torch: bf16 autocast on CPU, fp16 on CUDA (or amp_dtype)
    amp_dtype: str | None = None  # torch autocast dtype "fp16" | "bf16"; None: the device's default above
    engine_cache_dir: str | None = None  # onnxruntime TensorRT EP engine cache
    device_id: int = 0  # the CUDA device every GPU backend loads, builds and runs on
    batch_size: int = 32  # the batch the runner feeds: the TensorRT EP's profile (opt = max = this)
    # openvino: arithmetic of non-quantised ops (an InferencePrecision value) and where
    # compiled models are cached (None: ~/.cache/fracture-batch/openvino)
    inference_precision: str = "auto"
    openvino_cache_dir: str | None = None


class Backend(Protocol):
    kind: BackendKind
    device: DeviceKind
    spec: ModelSpec
    description: str  # one line for the summary: library, version, provider, threads
    max_batch: int | None  # None: any batch size
    # GPU backends also have ``stream``: the torch.cuda.Stream all their work runs on
    # (backends/cuda_streams.py); callers hand device tensors over onto it.

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 normalised input -> (N, num_classes) float32 logits."""
        ...

    def close(self) -> None: ...


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_input(x: np.ndarray, spec: ModelSpec) -> None:
    s = spec.input_size
    if x.ndim != 4 or x.shape[1:] != (3, s, s):
        raise ValueError(f"expected a batch of shape (N, 3, {s}, {s}), got {x.shape}")


def to_numpy(x) -> np.ndarray:
    """A batch as a host float32 array (a torch CUDA batch from DALI is copied here)."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)
