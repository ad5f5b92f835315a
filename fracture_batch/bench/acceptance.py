"""GPU acceptance: every GPU path whose packages are installed, one pass/fail table, <= 10 min.

``fracture-batch bench --acceptance`` / ``benchmarks/gpu_acceptance.py``. Two halves:
- checks (this module): CUDA AMP training over several steps (fp16 + GradScaler, bf16),
  DALI ``mixed`` preprocessing, ONNX -> TensorRT builds for fp32/fp16/int8, TensorRT and
  onnxruntime CUDA/TensorRT-EP scoring with parity against torch fp32 on the CPU, plus
  their CPU counterparts (which must pass on any machine);
- performance (``acceptance_perf``): images/s and p50/p99 latency per backend, precision
  and batch 1 .. 256 on ResNet50 at 224 px, and TensorRT int8 model-only images/s as a
  fraction of MLPerf's ResNet50 offline per-GPU figure for the GPU.
A row that cannot run here is *skipped* with the reason and the command that installs what
it needs; nothing is faked. A machine with only torch + CUDA still runs the torch rows,
the AMP rows and DALI ``mixed`` (DALI is a core dependency). Everything shares one time
budget (``acceptance_perf.TOTAL_BUDGET_S``); rows the budget cannot fit say so.
"""
from __future__ import annotations

import logging
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from fracture_batch.bench.acceptance_perf import TOTAL_BUDGET_S, Budget
from fracture_batch.bench.records import Measurement

log = logging.getLogger(__name__)

from fracture_batch.bench.acceptance_common import (  # noqa: F401  (re-exported for callers)
    BF16_BAR, DALI_BAR, FP16_BAR, FP32_CPU_BAR, FP32_GPU_BAR, INT8_BAR, Skip, check_parity, need_cuda,
    need_dali, need_ort_provider, need_tensorrt,
)


@dataclass
class Context:
    work: Path
    art: object  # artifacts.ModelArtifacts
    images: list[Path]
    x: np.ndarray  # Python-decoded, preprocessed batch
    reference: np.ndarray  # torch fp32 CPU P(fractured)
    engines: dict[str, Path] = field(default_factory=dict)
    budget: Budget = field(default_factory=lambda: Budget(TOTAL_BUDGET_S))


def create_context(work: Path, model: Path | None, arch: str, input_size: int, budget: Budget) -> Context:
    import torch

    from fracture_batch.bench.artifacts import resolve_artifacts
    from fracture_batch.decode import decode_file, decode_for_model
    from fracture_batch.model.checkpoint import load_checkpoint
    from fracture_batch.model.preprocess import to_model_input
    from fracture_batch.synth.corpus import make_regime_corpus

    art = resolve_artifacts(model, work / "model", arch=arch, input_size=input_size)
    if art.checkpoint is None:
        raise RuntimeError("the acceptance run needs the checkpoint (model.pt) for its fp32 reference")
    images = make_regime_corpus(work / "images", "small", 8)
    spec = art.spec
    x = np.stack([decode_for_model(p, spec)[0] for p in images])  # the scorer's preprocessing
    net, _ = load_checkpoint(art.checkpoint)
    with torch.no_grad():
        ref = spec.probabilities(net(torch.from_numpy(x)).numpy())
    return Context(work, art, images, x, ref, {}, budget)


# ---- CPU rows -------------------------------------------------------------------------
def _ort_probs(ctx: Context, path: Path, device: str = "cpu") -> np.ndarray:
    from fracture_batch.backends.base import BackendOptions, DeviceKind
    from fracture_batch.backends.onnxruntime_backend import OnnxRuntimeBackend

    be = OnnxRuntimeBackend(path, DeviceKind(device), BackendOptions(batch_size=len(ctx.x)))
    return ctx.art.spec.probabilities(be.predict(ctx.x))


def ort_fp32_cpu(ctx: Context) -> str:
    return check_parity(_ort_probs(ctx, ctx.art.onnx["fp32"]), ctx.reference, FP32_CPU_BAR)


def ort_int8_cpu(ctx: Context) -> str:
    if "int8" not in ctx.art.onnx:
        raise AssertionError("no model.int8.onnx to score")
    return check_parity(_ort_probs(ctx, ctx.art.onnx["int8"]), ctx.reference, INT8_BAR)


def score_cpu(ctx: Context) -> str:
    import pyarrow.dataset as ds

    from fracture_batch.scoring.local import ScoreConfig, score

    out = ctx.work / "score_out"
    summary = score(ScoreConfig(inputs=(str(ctx.work / "images"),), model=str(ctx.art.onnx["fp32"]),
                                out=str(out), device="cpu", overwrite=True))
    table = ds.dataset(out, format="parquet").to_table(columns=["path", "status", "prob_fractured"]).to_pylist()
    by_path = {Path(r["path"]).name: r for r in table}
    if summary.errors or len(by_path) != len(ctx.images):
        raise AssertionError(f"{summary.errors} error row(s), {len(by_path)} rows for {len(ctx.images)} files")
    p = np.array([by_path[f.name]["prob_fractured"] for f in ctx.images], np.float32)
    return f"{len(p)} rows, decoder {summary.decoder}; " + check_parity(p, ctx.reference, FP32_CPU_BAR)


def _dali_probs(ctx: Context, device: str) -> tuple[np.ndarray, float]:
    import torch

    from fracture_batch.decode.dali import DaliPreprocessor
    from fracture_batch.model.checkpoint import load_checkpoint

    pre = DaliPreprocessor(ctx.art.spec, batch_size=len(ctx.images), device=device)
    items = [(p, p.read_bytes()) for p in ctx.images]
    pre.run(items)  # warm-up: pipeline build, nvJPEG handles
    t0 = time.perf_counter()
    batch = pre.run(items)
    tensors = batch.tensors
    if isinstance(tensors, torch.Tensor):  # the producer's event, then a host copy for torch fp32 CPU
        if batch.ready is not None:
            batch.ready.synchronize()
        tensors = tensors.cpu().numpy()
    rate = len(items) / (time.perf_counter() - t0)
    if any(batch.errors):
        raise AssertionError(f"DALI errors: {[e for e in batch.errors if e][:2]}")
    net, spec = load_checkpoint(ctx.art.checkpoint)
    with torch.no_grad():
        return spec.probabilities(net(torch.from_numpy(np.ascontiguousarray(tensors))).numpy()), rate


def dali_cpu(ctx: Context) -> str:
    need_dali()
    p, rate = _dali_probs(ctx, "cpu")
    return f"DALI CPU batch ({rate:.0f} images/s) scored by torch fp32; " + check_parity(p, ctx.reference, DALI_BAR)


def train_bf16_cpu(ctx: Context) -> str:
    from fracture_batch.bench.acceptance_train import amp_check

    return amp_check("cpu", "bf16")


def _device_dicom(ctx: Context, device: str) -> str:
    """DICOM archive (every lossless syntax) through decode.gpu_dicom vs the pydicom path."""
    from fracture_batch.decode import decode_for_model
    from fracture_batch.decode.gpu_dicom import DeviceDicomPreprocessor, has_nvimgcodec
    from fracture_batch.synth.dicom_archive import generate_dicom_archive

    ok, why = has_nvimgcodec()
    if not ok:
        raise Skip(why)
    # Full size on the GPU (what nvJPEG2000 / nvJPEG lossless must get right); small on
    # the CPU backends, whose JPEG 2000 decoder (OpenCV) takes ~1 s per 5 MP frame.
    shape = (2500, 2000) if device == "cuda" else (300, 240)
    files = generate_dicom_archive(ctx.work / f"dicom-{device}", 2, shape=shape)
    spec = ctx.art.spec
    batch = DeviceDicomPreprocessor(spec, device=device).run([f.path for f in files])
    if any(batch.errors):
        raise AssertionError(f"device DICOM errors: {[e for e in batch.errors if e][:2]}")
    got = batch.tensors.cpu().numpy()
    want = np.stack([decode_for_model(f.path, spec, reduce=False)[0] for f in files])
    diff = float(np.abs(got - want).max())
    counts = dict(batch.counts)
    fallbacks = {k: v for k, v in counts.items() if k.startswith("cpu:")}
    host_ms = float(np.median(batch.host_ms))
    if diff > 1e-3:  # PIL coefficients as matrices: 1e-5 measured on CPU; TF32 would show here
        raise AssertionError(f"max |tensor diff| {diff:.2e} vs pydicom; paths {counts}")
    if device == "cuda" and fallbacks:
        raise AssertionError(f"silent-failure fallbacks on the GPU: {fallbacks} (paths {counts})")
    return f"{len(files)} files, max |diff| {diff:.1e}, paths {counts}, host part {host_ms:.1f} ms/file (median)"


def device_dicom_cpu(ctx: Context) -> str:
    return _device_dicom(ctx, "cpu")


def device_dicom_cuda(ctx: Context) -> str:
    need_cuda()
    return _device_dicom(ctx, "cuda")


# ---- GPU rows -------------------------------------------------------------------------
def train_amp_cuda(amp_dtype: str) -> Callable[[Context], str]:
    def run(ctx: Context) -> str:
        need_cuda()
        from fracture_batch.bench.acceptance_train import amp_check

        return amp_check("cuda", amp_dtype)
    return run


def dali_mixed(ctx: Context) -> str:
    need_dali()
    need_cuda()
    p, rate = _dali_probs(ctx, "cuda")
    return f"DALI mixed (nvJPEG) batch ({rate:.0f} images/s) scored by torch fp32; " + check_parity(p, ctx.reference, DALI_BAR)


def torch_cuda(precision: str) -> Callable[[Context], str]:
    bar = {"fp32": FP32_GPU_BAR, "fp16": FP16_BAR, "bf16": BF16_BAR}[precision]

    def run(ctx: Context) -> str:
        need_cuda()
        from fracture_batch.backends import BackendKind, DeviceKind, Resolution, create_backend
        from fracture_batch.backends.base import BackendOptions

        opts = BackendOptions(amp=precision != "fp32", amp_dtype=precision if precision != "fp32" else "fp16")
        res = Resolution(BackendKind.TORCH, DeviceKind.CUDA, "acceptance", ctx.art.checkpoint)
        be = create_backend(ctx.art.checkpoint, res, opts)
        return f"{be.description}; " + check_parity(ctx.art.spec.probabilities(be.predict(ctx.x)), ctx.reference, bar)
    return run


def _onnx_variant(ctx: Context, variant: str) -> Path:
    if variant not in ctx.art.onnx:  # fp16 / int8.trt: made by the project's exporter
        from fracture_batch.bench.artifacts import ModelArtifacts, export_with_project_exporter

        files = export_with_project_exporter(ctx.art.checkpoint, ctx.work / "export", ctx.work / "images")
        ctx.art = ModelArtifacts(ctx.art.spec, ctx.art.checkpoint, {**ctx.art.onnx, **files}, ctx.art.source)
    return ctx.art.onnx[variant]


def trt_build(precision: str) -> Callable[[Context], str]:
    def run(ctx: Context) -> str:
        need_tensorrt()
        from export.tensorrt_build import BuildSettings, build_engine

        onnx_path = _onnx_variant(ctx, "int8.trt" if precision == "int8" else precision)
        engine = ctx.work / f"model.{precision}.plan"
        n = len(ctx.images)
        side = build_engine(onnx_path, engine, ctx.art.spec, precision, BuildSettings(max_batch=n, opt_batch=n))
        ctx.engines[precision] = engine
        return f"{onnx_path.name} -> {engine.name} in {side.build_seconds:.1f} s (TensorRT {side.tensorrt_version})"
    return run


def trt_score(precision: str) -> Callable[[Context], str]:
    bar = {"fp32": FP32_GPU_BAR, "fp16": FP16_BAR, "int8": INT8_BAR}[precision]

    def run(ctx: Context) -> str:
        need_tensorrt()
        if precision not in ctx.engines:
            raise AssertionError(f"no {precision} engine (its build row failed)")
        from fracture_batch.backends import BackendKind, DeviceKind, Resolution, create_backend

        path = ctx.engines[precision]
        be = create_backend(path, Resolution(BackendKind.TENSORRT, DeviceKind.CUDA, "acceptance", path))
        return check_parity(ctx.art.spec.probabilities(be.predict(ctx.x)), ctx.reference, bar)
    return run


def ort_ep(provider: str) -> Callable[[Context], str]:
    def run(ctx: Context) -> str:
        need_ort_provider(provider)
        import onnxruntime as ort

        sess = ort.InferenceSession(str(ctx.art.onnx["fp32"]), providers=[provider, "CPUExecutionProvider"])
        if sess.get_providers()[0] != provider:
            raise AssertionError(f"{provider} did not start (providers: {sess.get_providers()})")
        (logits,) = sess.run(None, {sess.get_inputs()[0].name: ctx.x})
        return f"{provider}; " + check_parity(ctx.art.spec.probabilities(logits), ctx.reference, FP32_GPU_BAR)
    return run


CHECKS: tuple[tuple[str, str, Callable[[Context], str]], ...] = (
    ("onnxruntime fp32 vs torch fp32 (ONNX export parity)", "cpu", ort_fp32_cpu),
    ("onnxruntime int8 scoring vs CPU fp32", "cpu", ort_int8_cpu),
    ("score (runner) onnxruntime fp32 vs CPU fp32", "cpu", score_cpu),
    ("DALI CPU decoding vs Python decoders", "cpu", dali_cpu),
    ("bf16 autocast training, 8 steps", "cpu", train_bf16_cpu),
    ("DICOM device path (nvImageCodec CPU backends + torch) vs pydicom", "cpu", device_dicom_cpu),
    ("CUDA AMP training fp16 + GradScaler, 8 steps", "cuda", train_amp_cuda("fp16")),
    ("CUDA AMP training bf16, 8 steps", "cuda", train_amp_cuda("bf16")),
    ("DALI mixed (nvJPEG) decoding vs Python decoders", "cuda", dali_mixed),
    ("DICOM on the GPU (nvJPEG2000/nvJPEG + torch) vs pydicom, no fallbacks", "cuda", device_dicom_cuda),
    ("torch CUDA fp32 scoring vs CPU fp32", "cuda", torch_cuda("fp32")),
    ("torch CUDA fp16 autocast scoring vs CPU fp32", "cuda", torch_cuda("fp16")),
    ("torch CUDA bf16 autocast scoring vs CPU fp32", "cuda", torch_cuda("bf16")),
    ("TensorRT engine build fp32", "cuda", trt_build("fp32")),
    ("TensorRT engine build fp16", "cuda", trt_build("fp16")),
    ("TensorRT engine build int8 (Q/DQ)", "cuda", trt_build("int8")),
    ("TensorRT scoring fp32 vs CPU fp32", "cuda", trt_score("fp32")),
    ("TensorRT scoring fp16 vs CPU fp32", "cuda", trt_score("fp16")),
    ("TensorRT scoring int8 vs CPU fp32", "cuda", trt_score("int8")),
    ("onnxruntime CUDA EP scoring vs CPU fp32", "cuda", ort_ep("CUDAExecutionProvider")),
    ("onnxruntime TensorRT EP scoring vs CPU fp32", "cuda", ort_ep("TensorrtExecutionProvider")),
)
CHECK_RESERVE_S = 20.0  # a check is not started with less left: builds/exports take that


def run_checks(ctx: Context, checks=CHECKS) -> list[Measurement]:
    """Every check in order; exceptions become ``fail`` rows with the message."""
    rows = []
    for name, device, fn in checks:
        t0 = time.perf_counter()
        row = Measurement(suite="acceptance", name=name, device=device)
        try:
            if not ctx.budget.allows(CHECK_RESERVE_S):
                raise Skip(f"time budget: {ctx.budget.left():.0f} s left of {ctx.budget.seconds:.0f}")
            row.status, row.note = "pass", fn(ctx)
        except Skip as exc:
            row.status, row.note = "skipped", str(exc)
        except Exception as exc:  # a failing path is a row, the others still run
            log.debug("acceptance row %s failed:\n%s", name, traceback.format_exc())
            row.status, row.note = "fail", f"{type(exc).__name__}: {exc}"[:400]
        row.extra["seconds"] = round(time.perf_counter() - t0, 2)
        rows.append(row)
        log.info("%-55s %s", name, row.status)
    return rows


def run_acceptance(*, model: Path | None = None, arch: str = "resnet18", input_size: int = 64,
                   workdir: Path | None = None, budget_s: float = TOTAL_BUDGET_S, perf: bool = True) -> list[Measurement]:
    """The checks on a small model, then the performance rows on ResNet50 at 224 px."""
    budget = Budget(budget_s)
    with tempfile.TemporaryDirectory(prefix="fb-accept-") as tmp:
        work = Path(workdir or tmp)
        ctx = create_context(work, model, arch, input_size, budget)
        rows = run_checks(ctx)
        if perf:
            from fracture_batch.bench.acceptance_perf import run_perf

            rows += run_perf(work / "perf", model, budget)
    return rows


def format_table(rows: list[Measurement]) -> str:
    from fracture_batch.bench.acceptance_report import format_table as fmt

    return fmt(rows)
