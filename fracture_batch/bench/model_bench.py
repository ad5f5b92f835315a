"""Model-only benchmark: backend x precision x device x batch size, through the real
backends (``fracture_batch.backends``) on random inputs (dense convolutions cost the
same whatever the pixel values).

One child process per backend x precision x device: the session/engine is built once
(its build time reported as ``build_s``, never inside a latency), then each batch size
is warmed up and timed. Every ``predict`` returns host arrays, so GPU work is complete
when the clock is read (synchronised timing). Achieved GFLOP/s uses torch's FLOP count
of the same architecture; the parent adds the fraction of the same-dtype GEMM ceiling.
"""
from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from fracture_batch import backends
from fracture_batch.backends.base import BackendKind, DeviceKind, Precision
from fracture_batch.bench.artifacts import ModelArtifacts
from fracture_batch.bench.records import Measurement
from fracture_batch.bench.stats import measure, summarize, throughput

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZES = (1, 8, 32, 128)
DEFAULT_CONFIGS = {  # device -> backend -> precisions measured when none are asked for
    "cpu": {"onnxruntime": ("fp32", "int8"), "openvino": ("fp32", "bf16", "int8"), "torch": ("fp32", "bf16")},
    "cuda": {"tensorrt": ("fp32", "fp16", "int8"), "onnxruntime": ("fp32", "fp16", "int8"),
             "torch": ("fp32", "fp16")},
}


@dataclass(frozen=True)
class ModelConfig:
    backend: BackendKind
    precision: Precision
    device: DeviceKind
    model_path: str | None  # None with skip_reason set
    skip_reason: str = ""

    def __post_init__(self) -> None:
        for name, kind in (("backend", BackendKind), ("precision", Precision), ("device", DeviceKind)):
            object.__setattr__(self, name, kind(getattr(self, name)))

    @property
    def name(self) -> str:
        return f"{self.backend.value}/{self.precision.value}/{self.device.value}"


def resolve_model_configs(art: ModelArtifacts, *, backends: tuple[str, ...] | None,
                          precisions: tuple[str, ...] | None, devices: tuple[str, ...]) -> list[ModelConfig]:
    """Every requested combination, each runnable or carrying the reason it is skipped."""
    out = []
    for device in devices:
        table = DEFAULT_CONFIGS[device]
        for backend in backends or tuple(table):
            for precision in precisions or table.get(backend, ()):
                out.append(_resolve_one(art, backend, precision, device))
    return out


def _resolve_one(art: ModelArtifacts, backend: str, precision: str, device: str) -> ModelConfig:
    def skip(reason: str) -> ModelConfig:
        return ModelConfig(backend, precision, device, None, reason)

    if device == "cuda" and not backends.has_cuda()[0]:
        return skip("no CUDA device visible to torch")
    if backend == "torch":
        if precision == "int8":
            return skip("the torch backend has no int8 path (int8 runs in onnxruntime/TensorRT)")
        if (precision, device) in (("fp16", "cpu"), ("bf16", "cuda")):
            return skip(f"torch autocast is bf16 on CPU and fp16 on CUDA, not {precision} on {device}")
        if art.checkpoint is None:
            return skip("no checkpoint (model.pt in the model directory or named by export_report.json); "
                        "the torch backend needs it")
        return ModelConfig(backend, precision, device, str(art.checkpoint))
    if backend == "onnxruntime":
        if precision == "bf16":
            return skip("no bf16 ONNX variant is exported (bf16 is a torch autocast precision)")
        variant = "int8.trt" if (precision == "int8" and device == "cuda" and "int8.trt" in art.onnx) else precision
        if variant not in art.onnx:
            return skip(f"no {variant} ONNX file (fracture-batch export --precisions {precision})")
        if device == "cuda":
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                return skip("onnxruntime has no CUDA provider: pip install 'fracture-batch[gpu]'")
        return ModelConfig(backend, precision, device, str(art.onnx[variant]))
    if backend == "openvino":
        from fracture_batch.backends.openvino_backend import cpu_has_bf16, has_openvino

        ok, why = has_openvino()
        if device != "cpu" or not ok:
            return skip(why if ok is False else "the OpenVINO backend runs on the CPU")
        if precision == "bf16" and not cpu_has_bf16():
            return skip("bf16 inference precision needs AMX or AVX512-BF16")
        # bf16 is an inference precision of the fp32 file, int8 the Q/DQ file (f32 hint)
        variant = "fp32" if precision in ("fp32", "bf16") else precision
        if variant not in art.onnx:
            return skip(f"no {variant} ONNX file (fracture-batch export --precisions {variant})")
        return ModelConfig(backend, precision, device, str(art.onnx[variant]))
    if backend == "tensorrt":
        if device != "cuda":
            return skip("TensorRT runs on CUDA GPUs only")
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            return skip("tensorrt not installed: pip install 'fracture-batch[gpu]'")
        variant = "int8.trt" if precision == "int8" else precision
        if variant not in art.onnx:
            return skip(f"no {variant} ONNX file to build the engine from")
        return ModelConfig(backend, precision, device, str(art.onnx[variant]))
    return skip(f"unknown backend {backend!r}")


def create_backend(backend: str, precision: str, device: str, model_path: str, threads: int,
                   max_batch: int = 128):
    """The scorer's own backend objects (``backends.create_backend``), so the bench measures
    what ``score`` runs. TensorRT first builds the engine from the ONNX file with export's
    builder; build + load time is the row's build_s."""
    from fracture_batch.backends.base import BackendOptions

    kind, prec = BackendKind(backend), Precision(precision)
    opts = BackendOptions(intra_op_threads=threads, amp=prec in (Precision.BF16, Precision.FP16),
                          inference_precision="bf16" if prec is Precision.BF16 else "f32")
    if kind is BackendKind.TENSORRT:
        from pathlib import Path

        from export.tensorrt_build import BuildSettings, build_engine
        from fracture_batch.model.onnx_meta import read_spec_from_onnx

        engine = Path(tempfile.mkdtemp(prefix="fb-bench-trt-")) / f"model.{prec.value}.plan"
        build_engine(model_path, engine, read_spec_from_onnx(model_path), prec.value,
                     BuildSettings(max_batch=max_batch))
        model_path = str(engine)
    resolution = backends.Resolution(kind, DeviceKind(device), "bench configuration")
    return backends.create_backend(model_path, resolution, opts)


def run_model_config(*, backend: str, precision: str, device: str, model_path: str, input_size: int,
                     batch_sizes: list[int], warmup: int, repeats: int, max_seconds: float,
                     threads: int, flops_per_image: float) -> list[Measurement]:
    """Child-process body: build once, then time each batch size."""
    t0 = time.perf_counter()
    be = create_backend(backend, precision, device, model_path, threads, max_batch=max(batch_sizes))
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    rows = []
    for bs in batch_sizes:
        base = Measurement(suite="model", name=f"{backend}/{precision}/{device}/bs{bs}", backend=backend,
                           precision=precision, device=device, batch_size=bs, threads=threads,
                           warmup=warmup, build_s=build_s, extra={"description": be.description})
        if be.max_batch is not None and bs > be.max_batch:
            base.status, base.note = "skipped", f"engine built for batch <= {be.max_batch}"
            rows.append(base)
            continue
        x = rng.standard_normal((bs, 3, input_size, input_size), dtype=np.float32)
        try:
            times = measure(_timed_call(be, x, base), warmup=warmup, repeats=repeats, max_seconds=max_seconds)
        except MemoryError as exc:
            base.status, base.note = "skipped", f"does not fit: {exc}"
            rows.append(base)
            continue
        except RuntimeError as exc:  # CUDA OOM surfaces as RuntimeError/torch.OutOfMemoryError
            if "out of memory" not in str(exc).lower():
                raise
            base.status, base.note = "skipped", "does not fit in device memory"
            rows.append(base)
            continue
        s = summarize(times)
        base.repeats, base.n_images = s.n, s.n * bs
        base.images_per_s = throughput(bs, s)
        base.gflops = flops_per_image * bs / s.p50 / 1e9
        base.extra["images_per_s_mean"] = bs / s.mean
        for k, v in s.ms().items():
            setattr(base, k, v)
        rows.append(base)
        log.info("%s bs%d: %.1f img/s", base.name, bs, base.images_per_s)
    be.close()
    return rows


def _timed_call(be, x: np.ndarray, row: Measurement):
    """What one timed call does. A backend that runs batches in the background (``submit``:
    OpenVINO) is timed as the local runner drives it, the next batch submitted before the
    previous is collected: one call = one batch in steady state, the rate it sustains (waiting
    on each batch in turn leaves its streams idle between batches, a rate below what the
    runner gets, so no bound). Latency percentiles of such a row are per batch interval."""
    submit = getattr(be, "submit", None)
    if submit is None:
        return lambda: be.predict(x)
    row.note = "two batches in flight (submit before collect, as the runner does): per-call times are intervals"
    state = {"job": submit(x)}  # one ahead from the start, so even the first call is an interval

    def step() -> None:
        job, state["job"] = state["job"], submit(x)
        job.result()

    return step


def add_ceiling_fractions(rows: list[Measurement], ceilings: list[Measurement]) -> None:
    from fracture_batch.bench.ceilings import resolve_ceiling

    for r in rows:
        if r.suite != "model" or r.status != "ok" or not r.gflops:
            continue
        c, which = resolve_ceiling(ceilings, r.device, r.precision)
        if c:
            r.ceiling_gflops, r.fraction_of_ceiling = c, r.gflops / c
            r.extra["ceiling"] = which


def bench_models(art: ModelArtifacts, configs: list[ModelConfig], *, batch_sizes: tuple[int, ...],
                 warmup: int, repeats: int, max_seconds: float, threads: int,
                 in_process: bool = False) -> list[Measurement]:
    from fracture_batch.bench.artifacts import flops_per_image
    from fracture_batch.bench.isolate import run_isolated

    flops = flops_per_image(art.spec.arch, art.spec.input_size, art.spec.num_classes)
    rows: list[Measurement] = []
    for cfg in configs:
        label = Measurement(suite="model", name=cfg.name, backend=cfg.backend, precision=cfg.precision,
                            device=cfg.device, threads=threads)
        if cfg.skip_reason:
            label.status, label.note = "skipped", cfg.skip_reason
            rows.append(label)
            continue
        kwargs: dict[str, Any] = dict(
            backend=cfg.backend, precision=cfg.precision, device=cfg.device, model_path=cfg.model_path,
            input_size=art.spec.input_size, batch_sizes=list(batch_sizes), warmup=warmup, repeats=repeats,
            max_seconds=max_seconds, threads=threads, flops_per_image=flops)
        t0 = time.perf_counter()
        rows += run_isolated("fracture_batch.bench.model_bench:run_model_config", kwargs,
                             label=label, in_process=in_process)
        log.info("model-only %s: %.1f s", cfg.name, time.perf_counter() - t0)
    for r in rows:
        r.extra.setdefault("arch", art.spec.arch)
        r.extra.setdefault("input_size", art.spec.input_size)
        r.extra.setdefault("gflop_per_image", flops / 1e9)
    return rows
