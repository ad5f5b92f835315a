"""The JSON sidecar next to a TensorRT engine, and the check run before loading one.

A serialized engine has no metadata and is only valid for the TensorRT version and the
GPU model it was built with: loaded elsewhere it fails deep inside TensorRT or, worse,
runs tactics tuned for another chip. So ``export`` writes ``model.<precision>.plan.json``
(spec, TensorRT version, GPU name, compute capability, the ONNX file's SHA-256, the
engine's SHA-256) and the runtime refuses a mismatch before reading any input, with a
message that says to rebuild. This module is pure Python: testable without a GPU.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fracture_batch.model.spec import ModelSpec

SIDECAR_FORMAT = 1


class EngineIncompatibleError(Exception):
    """The engine cannot be used on this machine; the message says how to rebuild it."""


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "8.9"


@dataclass(frozen=True)
class EngineSidecar:
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    onnx_file: str
    onnx_sha256: str
    engine_sha256: str
    precision: str
    min_batch: int
    opt_batch: int
    max_batch: int
    input_name: str
    output_name: str
    spec: dict[str, Any]
    built_at: str = ""
    build_seconds: float = 0.0
    format: int = SIDECAR_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def model_spec(self) -> ModelSpec:
        return ModelSpec.from_dict(self.spec)

    @property
    def gpu(self) -> GpuInfo:
        return GpuInfo(self.gpu_name, self.compute_capability)


def sidecar_path(engine_path: str | Path) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def write_sidecar(engine_path: str | Path, sidecar: EngineSidecar) -> Path:
    path = sidecar_path(engine_path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(sidecar), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def read_sidecar(engine_path: str | Path) -> EngineSidecar:
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise EngineIncompatibleError(
            f"{engine_path} has no sidecar {path.name}: without it the engine's GPU, TensorRT "
            f"version and model spec are unknown. {_rebuild_hint(None)}"
        )
    try:
        data = json.loads(path.read_text())
        known = EngineSidecar.__dataclass_fields__
        return EngineSidecar(**{k: v for k, v in data.items() if k in known})
    except (ValueError, TypeError) as exc:
        raise EngineIncompatibleError(f"unreadable engine sidecar {path}: {exc}. {_rebuild_hint(None)}") from None


def _rebuild_hint(sidecar: EngineSidecar | None) -> str:
    precision = sidecar.precision if sidecar else "<precision>"
    return (
        "Rebuild the engine on this machine: "
        f"fracture-batch export model.pt --out DIR --tensorrt --precision {precision}"
    )


def check_engine_compatible(sidecar: EngineSidecar, current_trt_version: str, current_gpu: GpuInfo) -> None:
    """Raise ``EngineIncompatibleError`` unless this engine was built with this exact
    TensorRT version for this GPU model (name and compute capability)."""
    problems = []
    if sidecar.tensorrt_version != current_trt_version:
        problems.append(f"TensorRT {sidecar.tensorrt_version} (this machine has {current_trt_version})")
    if sidecar.compute_capability != current_gpu.compute_capability or sidecar.gpu_name != current_gpu.name:
        problems.append(
            f"GPU {sidecar.gpu_name} (sm {sidecar.compute_capability}); this machine has "
            f"{current_gpu.name} (sm {current_gpu.compute_capability})"
        )
    if problems:
        raise EngineIncompatibleError(
            f"this TensorRT engine ({sidecar.precision}, from {sidecar.onnx_file}) was built for "
            + " and ".join(problems)
            + ". Engines only run on the GPU model and TensorRT version that built them. "
            + _rebuild_hint(sidecar)
        )


def check_engine_file(engine_path: str | Path, sidecar: EngineSidecar, sha256: str) -> None:
    """The sidecar must describe this very engine file (not a neighbour's)."""
    if sidecar.engine_sha256 and sidecar.engine_sha256 != sha256:
        raise EngineIncompatibleError(
            f"{engine_path} does not match its sidecar (SHA-256 differs): the engine was rebuilt "
            f"or replaced without its {sidecar_path(engine_path).name}. {_rebuild_hint(sidecar)}"
        )
