"""GPU acceptance: run every GPU path once on generated data and say pass/fail/skipped.

``benchmarks/gpu_acceptance.py`` / ``fracture-batch bench --acceptance``. On a CUDA
machine each row really runs (CUDA AMP training step, DALI ``mixed`` decoding, ONNX ->
TensorRT builds for fp32/fp16/int8, TensorRT and onnxruntime CUDA/TensorRT-EP scoring
with parity against the CPU fp32 result). Without a GPU every GPU row is *skipped* with
the precise reason, never faked; the CPU rows (onnxruntime fp32/int8 parity, the real
``score`` on CPU, DALI CPU decoding, bf16 autocast training step) run and must pass.
"""
from __future__ import annotations

import logging
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from fracture_batch.bench.records import Measurement

log = logging.getLogger(__name__)

# Parity bars on P(fractured) against torch fp32 on CPU, each with its reason:
FP32_CPU_BAR = 1e-4  # same math, kernel summation order only (export's fp32 bar)
DALI_BAR = 0.05  # DALI and PIL differ at the outermost pixel rows/columns (dali_pipeline docstring)
FP32_GPU_BAR = 1e-2  # TensorRT/cuDNN may use TF32 tensor cores for fp32 by default
FP16_BAR = 2e-2  # 11-bit mantissas through ~50 layers
INT8_BAR = 0.1  # Q/DQ rounding moves probabilities by hundredths; 0.1 flags a broken calibration/kernel


class Skip(Exception):
    """The row cannot run here; the message says why (and how to make it run)."""


@dataclass
class Context:
    work: Path
    art: object  # artifacts.ModelArtifacts
    images: list[Path]
    x: np.ndarray  # Python-decoded, preprocessed batch
    reference: np.ndarray  # torch fp32 CPU P(fractured)
    engines: dict[str, Path]


def create_context(work: Path, model: Path | None, arch: str, input_size: int) -> Context:
    import torch

    from fracture_batch.bench.artifacts import resolve_artifacts
    from fracture_batch.synth.corpus import make_regime_corpus
    from fracture_batch.decode import decode_for_model
    from fracture_batch.model.checkpoint import load_checkpoint

    art = resolve_artifacts(model, work / "model", arch=arch, input_size=input_size)
    if art.checkpoint is None:
        raise RuntimeError("the acceptance run needs the checkpoint (model.pt) for its fp32 reference")
    images = make_regime_corpus(work / "images", "small", 8)
    spec = art.spec
    x = np.stack([decode_for_model(p, spec)[0] for p in images])  # the scorer's preprocessing
    net, _ = load_checkpoint(art.checkpoint)
    with torch.no_grad():
        ref = spec.probabilities(net(torch.from_numpy(x)).numpy())
    return Context(work, art, images, x, ref, {})


def _diff(p: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max |dP|, decision agreement) against the reference."""
    return float(np.max(np.abs(p - ref))), float(np.mean((p >= 0.5) == (ref >= 0.5)))


def _check(p: np.ndarray, ref: np.ndarray, bar: float) -> str:
    d, agree = _diff(p, ref)
    msg = f"max |dP| {d:.2e} (bar {bar:g}), agreement {agree:.0%}"
    if not d <= bar:
        raise AssertionError(msg)
    return msg


# ---- guards: every missing piece is named, so one run tells the user all they need ----
def _cuda_missing() -> list[str]:
    from fracture_batch.backends import has_cuda

    ok, why = has_cuda()
    return [] if ok else [why]


def need_cuda() -> None:
    if missing := _cuda_missing():
        raise Skip("; ".join(missing))


def need_tensorrt() -> None:
    missing = _cuda_missing()
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        missing.append("tensorrt not installed: pip install 'fracture-batch[gpu]'")
    if missing:
        raise Skip("; ".join(missing))
    from export.tensorrt_build import TensorRTUnavailable, resolve_tensorrt

    try:
        resolve_tensorrt()
    except TensorRTUnavailable as exc:
        raise Skip(str(exc)) from None


def need_ort_provider(name: str) -> None:
    import onnxruntime as ort

    missing = _cuda_missing()
    if name not in ort.get_available_providers():
        missing.append(f"onnxruntime has no {name}: pip install 'fracture-batch[gpu]' (onnxruntime-gpu)")
    if missing:
        raise Skip("; ".join(missing))


def need_dali() -> None:
    from fracture_batch.decode.select import has_dali

    ok, why = has_dali()
    if not ok:
        raise Skip(why)


# ---- CPU rows -------------------------------------------------------------------------
def _ort_probs(ctx: Context, path: Path, device: str = "cpu") -> np.ndarray:
    from fracture_batch.backends.base import BackendOptions, DeviceKind
    from fracture_batch.backends.onnxruntime_backend import OnnxRuntimeBackend

    be = OnnxRuntimeBackend(path, DeviceKind(device), BackendOptions())
    return ctx.art.spec.probabilities(be.predict(ctx.x))


def ort_fp32_cpu(ctx: Context) -> str:
    return _check(_ort_probs(ctx, ctx.art.onnx["fp32"]), ctx.reference, FP32_CPU_BAR)


def ort_int8_cpu(ctx: Context) -> str:
    if "int8" not in ctx.art.onnx:
        raise AssertionError("no model.int8.onnx to score")
    return _check(_ort_probs(ctx, ctx.art.onnx["int8"]), ctx.reference, INT8_BAR)


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
    return f"{len(p)} rows, decoder {summary.decoder}; " + _check(p, ctx.reference, FP32_CPU_BAR)


def _dali_probs(ctx: Context, device: str) -> np.ndarray:
    import torch

    from fracture_batch.decode.dali import DaliPreprocessor

    batch = DaliPreprocessor(ctx.art.spec, batch_size=len(ctx.images), device=device).run(
        [(p, None) for p in ctx.images])
    if any(batch.errors):
        raise AssertionError(f"DALI errors: {[e for e in batch.errors if e][:2]}")
    t = batch.tensors.cpu().numpy() if isinstance(batch.tensors, torch.Tensor) else batch.tensors
    from fracture_batch.model.checkpoint import load_checkpoint

    net, spec = load_checkpoint(ctx.art.checkpoint)
    with torch.no_grad():
        return spec.probabilities(net(torch.from_numpy(np.ascontiguousarray(t))).numpy())


def dali_cpu(ctx: Context) -> str:
    need_dali()
    return "DALI CPU batch scored by torch fp32; " + _check(_dali_probs(ctx, "cpu"), ctx.reference, DALI_BAR)


def _train_step(device: str, amp_dtype: str) -> str:
    import torch

    from fracture_batch.model.checkpoint import create_model
    from train.config import AmpDtype, DeviceKind
    from train.loops import resolve_precision, train_one_epoch

    prec = resolve_precision(DeviceKind(device), True, AmpDtype(amp_dtype), channels_last=True)
    torch.manual_seed(0)
    model = create_model("resnet18", 2).to(prec.device).to(memory_format=torch.channels_last)
    before = model.fc.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cuda") if prec.needs_scaler else None
    batch = {"x": torch.randn(4, 3, 64, 64), "y": torch.tensor([0, 1, 0, 1]), "bad": []}
    m = train_one_epoch(model, [batch], torch.nn.CrossEntropyLoss(), opt, prec, scaler=scaler, progress=False)
    changed = float((model.fc.weight.detach() - before).abs().max())
    if not (np.isfinite(m["loss"]) and changed > 0):
        raise AssertionError(f"loss {m['loss']}, max weight change {changed}")
    return f"{prec.describe()}: loss {m['loss']:.3f}, weights moved (max {changed:.2e})" + (
        f", GradScaler scale {scaler.get_scale():g}" if scaler else "")


def train_bf16_cpu(ctx: Context) -> str:
    return _train_step("cpu", "bf16")


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
def train_amp_cuda(ctx: Context) -> str:
    need_cuda()
    return _train_step("cuda", "fp16")


def dali_mixed(ctx: Context) -> str:
    need_dali()
    need_cuda()
    return "DALI mixed batch scored by torch fp32; " + _check(_dali_probs(ctx, "cuda"), ctx.reference, DALI_BAR)


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
        side = build_engine(onnx_path, engine, ctx.art.spec, precision, BuildSettings(max_batch=len(ctx.images)))
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

        be = create_backend(ctx.engines[precision], Resolution(BackendKind.TENSORRT, DeviceKind.CUDA, "acceptance"))
        return _check(ctx.art.spec.probabilities(be.predict(ctx.x)), ctx.reference, bar)
    return run


def ort_ep(provider: str) -> Callable[[Context], str]:
    def run(ctx: Context) -> str:
        need_ort_provider(provider)
        import onnxruntime as ort

        sess = ort.InferenceSession(str(ctx.art.onnx["fp32"]), providers=[provider, "CPUExecutionProvider"])
        if sess.get_providers()[0] != provider:
            raise AssertionError(f"{provider} did not start (providers: {sess.get_providers()})")
        (logits,) = sess.run(None, {sess.get_inputs()[0].name: ctx.x})
        return f"{provider}; " + _check(ctx.art.spec.probabilities(logits), ctx.reference, FP32_GPU_BAR)
    return run


CHECKS: tuple[tuple[str, str, Callable[[Context], str]], ...] = (
    ("onnxruntime fp32 vs torch fp32 (ONNX export parity)", "cpu", ort_fp32_cpu),
    ("onnxruntime int8 scoring vs CPU fp32", "cpu", ort_int8_cpu),
    ("score (runner) onnxruntime fp32 vs CPU fp32", "cpu", score_cpu),
    ("DALI CPU decoding vs Python decoders", "cpu", dali_cpu),
    ("bf16 autocast training step", "cpu", train_bf16_cpu),
    ("DICOM device path (nvImageCodec CPU backends + torch) vs pydicom", "cpu", device_dicom_cpu),
    ("CUDA AMP training step (fp16 + GradScaler)", "cuda", train_amp_cuda),
    ("DALI mixed (nvJPEG) decoding vs Python decoders", "cuda", dali_mixed),
    ("DICOM on the GPU (nvJPEG2000/nvJPEG + torch) vs pydicom, no fallbacks", "cuda", device_dicom_cuda),
    ("TensorRT engine build fp32", "cuda", trt_build("fp32")),
    ("TensorRT engine build fp16", "cuda", trt_build("fp16")),
    ("TensorRT engine build int8 (Q/DQ)", "cuda", trt_build("int8")),
    ("TensorRT scoring fp32 vs CPU fp32", "cuda", trt_score("fp32")),
    ("TensorRT scoring fp16 vs CPU fp32", "cuda", trt_score("fp16")),
    ("TensorRT scoring int8 vs CPU fp32", "cuda", trt_score("int8")),
    ("onnxruntime CUDA EP scoring vs CPU fp32", "cuda", ort_ep("CUDAExecutionProvider")),
    ("onnxruntime TensorRT EP scoring vs CPU fp32", "cuda", ort_ep("TensorrtExecutionProvider")),
)


def run_acceptance(*, model: Path | None = None, arch: str = "resnet18", input_size: int = 64,
                   workdir: Path | None = None) -> list[Measurement]:
    """Every row of ``CHECKS``, in order; exceptions become ``fail`` rows with the message."""
    with tempfile.TemporaryDirectory(prefix="fb-accept-") as tmp:
        ctx = create_context(Path(workdir or tmp), model, arch, input_size)
        rows = []
        for name, device, fn in CHECKS:
            t0 = time.perf_counter()
            row = Measurement(suite="acceptance", name=name, device=device)
            try:
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


def format_table(rows: list[Measurement]) -> str:
    w = max(len(r.name) for r in rows)
    lines = [f"{'check':<{w}}  {'device':<6}  {'result':<7}  detail", "-" * (w + 40)]
    lines += [f"{r.name:<{w}}  {r.device:<6}  {r.status.upper():<7}  {r.note}" for r in rows]
    counts = {s: sum(r.status == s for r in rows) for s in ("pass", "fail", "skipped")}
    lines.append(f"{counts['pass']} passed, {counts['fail']} failed, {counts['skipped']} skipped")
    return "\n".join(lines)
