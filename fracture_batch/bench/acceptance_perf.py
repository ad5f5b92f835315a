"""The GPU acceptance's performance half: images/s and p50/p99 latency per backend, precision
and batch (1 .. 256) inside a time budget, and TensorRT int8 model-only throughput as a
fraction of MLPerf's published ResNet50 offline figure for the GPU.

Every row is a ``Measurement``: ``pass`` (ran, and its probabilities agree with torch fp32
on the CPU within the precision's bar), ``fail`` (with the error), or ``skipped`` with the
reason and the install command, or "time budget" when the budget ran out first. The budget
is shared: each backend/precision gets an equal share of what is left, split over its
batch sizes, so one slow path cannot push the run past ten minutes.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from fracture_batch.bench.records import Measurement
from fracture_batch.bench.stats import measure, summarize

log = logging.getLogger(__name__)

BATCHES = (1, 8, 32, 64, 128, 256)
# The whole acceptance run promises ten minutes on one H100/H200: 9 for the rows, the rest
# for imports, model export and the report.
TOTAL_BUDGET_S = 540.0
MODEL_ONLY_BATCH = 256  # MLPerf offline runs large batches; ours is capped by the profile


@dataclass(frozen=True)
class MlperfFigure:
    """A published MLPerf Inference datacenter ResNet50 Offline result for one system."""

    gpu: str
    samples_per_s: float  # the whole system
    gpus: int
    source: str

    @property
    def per_gpu(self) -> float:
        return self.samples_per_s / self.gpus


# Read from the submitters' mlperf_log_summary.txt ("Samples per second", closed division,
# NVIDIA, TensorRT, 8 SXM GPUs per system). ResNet50 was last submitted for Hopper in these
# rounds; MLPerf feeds pre-processed int8 tensors, so compare model-only figures only.
MLPERF_RESNET50_OFFLINE: tuple[MlperfFigure, ...] = (
    MlperfFigure("H200", 756_960, 8,
                 "MLPerf Inference v4.1 datacenter, closed, NVIDIA H200-SXM-141GBx8_TRT, resnet50 Offline "
                 "(mlcommons/inference_results_v4.1 closed/NVIDIA/results/H200-SXM-141GBx8_TRT/resnet50/"
                 "Offline/performance/run_1/mlperf_log_summary.txt)"),
    MlperfFigure("H100 SXM", 703_770, 8,
                 "MLPerf Inference v4.0 datacenter, closed, NVIDIA DGX-H100_H100-SXM-80GBx8_TRT, resnet50 "
                 "Offline (mlcommons/inference_results_v4.0 closed/NVIDIA/results/DGX-H100_H100-SXM-80GBx8_TRT/"
                 "resnet50/Offline/performance/run_1/mlperf_log_summary.txt)"),
)


def mlperf_figure(gpu_name: str) -> MlperfFigure | None:
    """The figure for this GPU, or None. Only the SXM parts the figures were measured on:
    an H100 PCIe/NVL or H200 NVL has a lower power limit, and a fraction of the SXM
    figure would understate it."""
    name = gpu_name.upper()
    if "H200" in name and "NVL" not in name:
        return MLPERF_RESNET50_OFFLINE[0]
    if "H100" in name and ("HBM3" in name or "SXM" in name) and "NVL" not in name and "PCIE" not in name:
        return MLPERF_RESNET50_OFFLINE[1]
    return None


class Budget:
    """Seconds left for the run; ``share`` splits what is left over the work still to do."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.seconds, self._clock = float(seconds), clock
        self._start = clock()

    def spent(self) -> float:
        return self._clock() - self._start

    def left(self) -> float:
        return max(0.0, self.seconds - self.spent())

    def allows(self, need_s: float) -> bool:
        return self.left() >= need_s

    def share(self, parts_left: int, cap: float) -> float:
        """An equal share of what is left for one of ``parts_left`` parts, at most ``cap``."""
        return min(cap, self.left() / max(1, parts_left))


@dataclass(frozen=True)
class PerfPath:
    """One backend at one precision: what it needs, how to load it, its parity bar."""

    backend: str  # torch | tensorrt | onnxruntime
    precision: str  # fp32 | fp16 | bf16 | int8
    bar: float
    needs: Callable[[], None]  # raises Skip (with the install command) when it cannot run here
    load: Callable[[int], object]  # max batch -> a Backend (predict(x) -> logits)
    build_estimate_s: float = 5.0  # what loading costs (a TensorRT build of ResNet50: ~1 min)

    @property
    def name(self) -> str:
        return f"{self.backend} {self.precision}"


def _row(path: PerfPath, name: str, **kw) -> Measurement:
    return Measurement(suite="acceptance", name=name, backend=path.backend, precision=path.precision,
                       device="cuda", **kw)


def perf_rows(paths: Sequence[PerfPath], *, make_batch: Callable[[int], np.ndarray],
              check: Callable[[object, float], str], budget: Budget, skip_type: type,
              batches: Iterable[int] = BATCHES, on_loaded: Callable[[PerfPath, object], None] | None = None,
              timer: Callable[..., list[float]] = measure) -> list[Measurement]:
    """One row per (path, batch); a path that cannot load or run gives one row saying why.

    Each path gets an equal share of the budget left (at most 90 s), split over its batch
    sizes; its load (a TensorRT build) is only started when the budget still holds it."""
    batches = tuple(batches)
    rows: list[Measurement] = []
    for k, path in enumerate(paths):
        try:
            path.needs()
        except skip_type as exc:
            rows.append(_row(path, f"{path.name} throughput", status="skipped", note=str(exc)))
            continue
        if not budget.allows(path.build_estimate_s + len(batches)):
            rows.append(_row(path, f"{path.name} throughput", status="skipped",
                             note=f"time budget: {budget.left():.0f} s left of {budget.seconds:.0f}, "
                                  f"loading needs ~{path.build_estimate_s:.0f} s"))
            continue
        t0 = time.perf_counter()
        try:
            be = path.load(max(batches))
            parity = check(be, path.bar)
        except Exception as exc:  # load or parity failure: one fail row for the path
            rows.append(_row(path, f"{path.name} throughput", status="fail", note=f"{type(exc).__name__}: {exc}"[:400]))
            continue
        build_s = round(time.perf_counter() - t0, 2)
        per_batch = budget.share(len(paths) - k, cap=90.0) / len(batches)
        for b in batches:
            row = _row(path, f"{path.name} batch {b}", batch_size=b, build_s=build_s)
            if per_batch < 0.5:
                row.status, row.note = "skipped", f"time budget: {budget.left():.0f} s left"
            else:
                try:
                    x = make_batch(b)
                    s = summarize(timer(lambda: be.predict(x), warmup=3, repeats=100_000, min_repeats=3,
                                        max_seconds=per_batch))
                    row.images_per_s = b / s.p50
                    row.latency_p50_ms, row.latency_p99_ms, row.repeats = s.p50 * 1e3, s.p99 * 1e3, s.n
                    row.status, row.note = "pass", parity
                except Exception as exc:
                    row.status, row.note = "fail", f"{type(exc).__name__}: {exc}"[:400]
            rows.append(row)
        if on_loaded is not None:
            on_loaded(path, be)
        close = getattr(be, "close", None)
        if close:
            close()
    return rows


def mlperf_row(images_per_s: float | None, gpu_name: str, note: str = "") -> Measurement:
    """TensorRT int8 model-only images/s as a fraction of MLPerf's per-GPU figure."""
    fig = mlperf_figure(gpu_name)
    row = Measurement(suite="acceptance", name="TensorRT int8 model-only vs MLPerf ResNet50 offline",
                      backend="tensorrt", precision="int8", device="cuda", batch_size=MODEL_ONLY_BATCH)
    if images_per_s is None:
        row.status, row.note = "skipped", note or "no TensorRT int8 engine ran"
        return row
    row.images_per_s, row.status = images_per_s, "pass"
    if fig is None:
        row.note = f"{images_per_s:,.0f} images/s; no published MLPerf figure here for {gpu_name!r} (H100 SXM, H200 only)"
        return row
    row.fraction_of_ceiling = images_per_s / fig.per_gpu
    row.extra.update(mlperf_per_gpu=fig.per_gpu, mlperf_source=fig.source)
    row.note = (f"{images_per_s:,.0f} images/s = {row.fraction_of_ceiling:.0%} of {fig.per_gpu:,.0f} per GPU "
                f"({fig.samples_per_s:,.0f} / {fig.gpus} GPUs; {fig.source.split(' (')[0]})")
    return row


def model_only_images_per_s(engine, batch: int, seconds: float) -> float:
    """TensorRT engine alone: input already on the device, output left there; the clock
    stops when the engine's stream is done (its own stream, not the device)."""
    import torch

    x = torch.randn(batch, 3, engine.spec.input_size, engine.spec.input_size, device=engine.device)
    torch.cuda.current_stream(engine.device).synchronize()  # x is written before the engine's stream reads it
    s = summarize(measure(lambda: engine.run(x), warmup=5, repeats=100_000, min_repeats=5, max_seconds=seconds,
                          sync=engine.stream.synchronize))
    return batch / s.p50


# ---- the paths, on ResNet50 at 224 px -------------------------------------------------------
def _perf_paths(art, work: Path, skip_type: type) -> list[PerfPath]:
    from fracture_batch.backends import BackendKind, DeviceKind, Resolution, create_backend
    from fracture_batch.backends.base import BackendOptions
    from fracture_batch.bench import acceptance_common as acc

    def torch_path(precision: str, bar: float) -> PerfPath:
        def load(max_batch: int):
            amp = precision != "fp32"
            opts = BackendOptions(amp=amp, amp_dtype=precision if amp else None)
            return create_backend(art.checkpoint, Resolution(BackendKind.TORCH, DeviceKind.CUDA, "acceptance"), opts)
        return PerfPath("torch", precision, bar, acc.need_cuda, load)

    def trt_path(precision: str, bar: float) -> PerfPath:
        variant = "int8.trt" if precision == "int8" else precision

        def needs():
            acc.need_tensorrt()
            if variant not in art.onnx:
                raise skip_type(f"no model.{variant}.onnx was exported (see the export log)")

        def load(max_batch: int):
            from export.tensorrt_build import BuildSettings, build_engine

            engine = work / f"resnet50.{precision}.plan"
            build_engine(art.onnx[variant], engine, art.spec, precision,
                         BuildSettings(max_batch=max_batch, opt_batch=max_batch))
            return create_backend(engine, Resolution(BackendKind.TENSORRT, DeviceKind.CUDA, "acceptance", engine))
        return PerfPath("tensorrt", precision, bar, needs, load, build_estimate_s=120.0)

    def ort_path(precision: str, bar: float) -> PerfPath:
        def needs():
            acc.need_ort_provider("CUDAExecutionProvider")
            if precision not in art.onnx:
                raise skip_type(f"no model.{precision}.onnx was exported")

        def load(max_batch: int):
            from fracture_batch.backends.onnxruntime_backend import OnnxRuntimeBackend

            return OnnxRuntimeBackend(art.onnx[precision], DeviceKind.CUDA, BackendOptions(batch_size=max_batch))
        return PerfPath("onnxruntime", precision, bar, needs, load, build_estimate_s=30.0)

    # Most telling first: the budget runs out at the end of this list, not the start.
    return [trt_path("int8", acc.INT8_BAR), torch_path("fp16", acc.FP16_BAR), torch_path("bf16", acc.BF16_BAR),
            trt_path("fp16", acc.FP16_BAR), torch_path("fp32", acc.FP32_GPU_BAR),
            ort_path("fp32", acc.FP32_GPU_BAR), ort_path("fp16", acc.FP16_BAR), trt_path("fp32", acc.FP32_GPU_BAR)]


def run_perf(work: Path, model: Path | None, budget: Budget) -> list[Measurement]:
    """The performance rows (see the module docstring); skipped as a whole without CUDA."""
    from fracture_batch.bench import acceptance_common as acc

    try:
        acc.need_cuda()
    except acc.Skip as exc:
        return [Measurement(suite="acceptance", name="GPU throughput (ResNet50, batch 1..256)", device="cuda",
                            status="skipped", note=str(exc))]
    import torch

    from fracture_batch.bench.artifacts import resolve_artifacts

    art = resolve_artifacts(model, work / "model", arch="resnet50", input_size=224, via_export=True)
    rng = np.random.default_rng(0)
    size = art.spec.input_size  # 224 unless --model gave other files
    ref_x = rng.standard_normal((8, 3, size, size), dtype=np.float32)
    from fracture_batch.model.checkpoint import load_checkpoint

    net, _ = load_checkpoint(art.checkpoint)
    with torch.no_grad():
        reference = art.spec.probabilities(net(torch.from_numpy(ref_x)).numpy())
    batches_cache: dict[int, np.ndarray] = {}

    def make_batch(b: int) -> np.ndarray:
        if b not in batches_cache:
            batches_cache[b] = rng.standard_normal((b, 3, size, size), dtype=np.float32)
        return batches_cache[b]

    def check(be, bar: float) -> str:
        return acc.check_parity(art.spec.probabilities(be.predict(ref_x)), reference, bar)

    model_only: dict[str, float] = {}

    def on_loaded(path: PerfPath, be) -> None:
        if path.backend == "tensorrt" and path.precision == "int8" and budget.allows(10.0):
            model_only["int8"] = model_only_images_per_s(be.engine, MODEL_ONLY_BATCH, min(20.0, budget.left() / 4))

    rows = perf_rows(_perf_paths(art, work, acc.Skip), make_batch=make_batch, check=check, budget=budget,
                     skip_type=acc.Skip, on_loaded=on_loaded)
    int8_rows = [r for r in rows if r.backend == "tensorrt" and r.precision == "int8"]
    why = int8_rows[0].note if int8_rows and int8_rows[0].status != "pass" else ""
    rows.append(mlperf_row(model_only.get("int8"), torch.cuda.get_device_name(0), why))
    return rows
