"""Build a TensorRT engine from an ONNX file that already carries its precision.

TensorRT 11 removed the precision builder flags (FP16/INT8) and INT8 calibrators; since
10.12 the recommended path is a *strongly typed* network: every tensor keeps the type
the ONNX graph gives it (fp16 weights -> fp16 kernels; Q/DQ -> int8 kernels). So this
step only builds: one optimisation profile for batch 1..max_batch, a workspace limit,
and a timing cache reused across builds (the second build of a model takes seconds).
Follows NVIDIA's samples (samples/python/strongly_type_autocast, common_runtime).
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from fracture_batch.backends.base import file_sha256
from fracture_batch.model.sidecar import EngineSidecar, GpuInfo, write_sidecar
from fracture_batch.model.spec import ModelSpec

from export.onnx_export import INPUT_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)

MIN_TENSORRT = (10, 12)
INSTALL_HINT = "install the GPU extra on a CUDA machine: pip install 'fracture-batch[gpu]' (tensorrt>=10.12)"


class TensorRTUnavailable(Exception):
    """TensorRT or CUDA is missing here; the message is one line saying which."""


@dataclass(frozen=True)
class BuildSettings:
    max_batch: int = 32
    # The batch TensorRT tunes its kernels for: the one the scorer feeds (--batch-size, 32
    # by default), so full batches get the tuned tactics; None: max_batch.
    opt_batch: int | None = None
    workspace_bytes: int = 4 << 30
    timing_cache: Path | None = None  # None: default_timing_cache()
    device_id: int = 0  # the CUDA device to build on (the engine runs on that GPU model)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:2] if p.isdigit())


def resolve_tensorrt(device_id: int = 0):
    """-> (tensorrt module, GpuInfo); raises TensorRTUnavailable with the reason."""
    try:
        import tensorrt as trt
    except Exception as exc:
        raise TensorRTUnavailable(f"TensorRT is not installed ({exc.__class__.__name__}); {INSTALL_HINT}") from None
    if _version_tuple(trt.__version__) < MIN_TENSORRT:
        raise TensorRTUnavailable(f"TensorRT {trt.__version__} is too old (need >= 10.12 for strongly typed Q/DQ builds)")
    return trt, current_gpu(device_id)


def current_gpu(device_id: int = 0) -> GpuInfo:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        raise TensorRTUnavailable("torch is needed to query the CUDA device") from None
    if not torch.cuda.is_available():
        raise TensorRTUnavailable("no CUDA GPU is available (torch.cuda.is_available() is False)")
    major, minor = torch.cuda.get_device_capability(device_id)
    return GpuInfo(torch.cuda.get_device_name(device_id), f"{major}.{minor}")


def default_timing_cache(gpu: GpuInfo, tensorrt_version: str) -> Path:
    """One cache per GPU model and TensorRT version in the user's cache folder, so every
    build on this machine (any model, any --out) reuses the tactic timings of the last."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fracture-batch"
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{gpu.name}-sm{gpu.compute_capability}-trt{tensorrt_version}")
    return base / f"tensorrt-timing-{slug}.cache"


def optimisation_batches(max_batch: int, opt_batch: int | None = None) -> tuple[int, int, int]:
    """(min, opt, max). TensorRT tunes kernels for opt; the runner feeds full batches of its
    batch size (only the last one is partial), so opt is that batch, not mid-range."""
    if max_batch < 1:
        raise ValueError(f"max batch must be >= 1, got {max_batch}")
    opt = max_batch if opt_batch is None else opt_batch
    if not 1 <= opt <= max_batch:
        raise ValueError(f"opt batch {opt} must be within 1..{max_batch}")
    return 1, opt, max_batch


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    spec: ModelSpec,
    precision: str,
    settings: BuildSettings,
) -> EngineSidecar:
    """Parse ``onnx_path`` into a strongly typed network, build, write the engine and sidecar."""
    trt, gpu = resolve_tensorrt(settings.device_id)
    import torch

    # TensorRT builds (and times tactics) on the current CUDA device: make it the one asked for.
    with torch.cuda.device(settings.device_id):
        return _build(trt, gpu, Path(onnx_path), Path(engine_path), spec, precision, settings)


def _build(trt, gpu: GpuInfo, onnx_path: Path, engine_path: Path, spec: ModelSpec, precision: str,
           settings: BuildSettings) -> EngineSidecar:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    cache_path = settings.timing_cache or default_timing_cache(gpu, trt.__version__)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache_bytes = cache_path.read_bytes() if cache_path.is_file() else b""
    try:
        cache = config.create_timing_cache(cache_bytes)
        cache_ok = config.set_timing_cache(cache, ignore_mismatch=False)
    except Exception:  # a cache file from another TensorRT version may not even parse
        cache_ok = False
    if not cache_ok:
        # A cache from another GPU/TensorRT is rejected: start an empty one instead.
        log.warning("timing cache %s does not match this GPU/TensorRT; starting a new one", cache_path)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)

    lo, opt, hi = optimisation_batches(settings.max_batch, settings.opt_batch)
    s = spec.input_size
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (lo, 3, s, s), (opt, 3, s, s), (hi, 3, s, s))
    config.add_optimization_profile(profile)

    log.info("building TensorRT %s engine from %s (batch %d..%d, opt %d)", precision, onnx_path.name, lo, hi, opt)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    tmp = engine_path.with_name(engine_path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(serialized)
    tmp.replace(engine_path)
    # The build added its new tactic timings to the attached cache: keep them.
    cache_path.write_bytes(memoryview(cache.serialize()))

    sidecar = EngineSidecar(
        tensorrt_version=trt.__version__,
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        onnx_file=onnx_path.name,
        onnx_sha256=file_sha256(onnx_path),
        engine_sha256=file_sha256(engine_path),
        precision=precision,
        min_batch=lo,
        opt_batch=opt,
        max_batch=hi,
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        spec=spec.to_dict(),
        built_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        build_seconds=round(seconds, 2),
        extra={"workspace_bytes": settings.workspace_bytes, "strongly_typed": True, "timing_cache": str(cache_path)},
    )
    write_sidecar(engine_path, sidecar)
    log.info("wrote %s in %.1fs", engine_path, seconds)
    return sidecar
