"""``export_model(config) -> ExportReport``: checkpoint -> checked ONNX files (+ engine).

Order: every ONNX variant is written and measured against torch fp32 on held-out real
images; ``export_report.json`` is written whatever the outcome; then a variant that
missed its bar raises ``ParityError`` (the CLI exits non-zero); only then is a TensorRT
engine built, from a file already known to be right.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from fracture_batch.model.checkpoint import load_checkpoint
from fracture_batch.model.spec import ModelSpec

from export import parity as P
from export.config import ExportConfig, Precision, Variant, variants_for
from export.fp16 import count_float16_ops, create_fp16_module, export_fp16
from export.images import ImageSet, load_inputs, resolve_image_source, resolve_image_sets
from export.onnx_export import export_onnx, file_sha256, stamp_and_check
from export.openvino_parity import record_openvino_parity
from export.quantize import Int8Flavour, describe_qdq, pre_process, quantize_int8
from export.report import EngineReport, ExportReport, VariantReport

log = logging.getLogger(__name__)


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {"torch": str(torch.__version__), "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def _write_variant(variant: Variant, model, spec: ModelSpec, config: ExportConfig, calib: np.ndarray | None,
                   quant_source: Path) -> Path:
    path = Path(config.out_dir) / variant.filename
    if variant is Variant.FP32:
        export_onnx(model, spec, path, opset=config.opset)
    elif variant is Variant.FP16:
        export_fp16(model, spec, path, opset=config.opset)
    else:
        flavour = Int8Flavour.ORT if variant is Variant.INT8 else Int8Flavour.TENSORRT
        if not quant_source.is_file():  # both flavours quantise the same pre-processed graph
            fp32_path = Path(config.out_dir) / Variant.FP32.filename
            if config.preprocess_for_quant:
                pre_process(fp32_path, quant_source)
            else:
                shutil.copyfile(fp32_path, quant_source)
        quantize_int8(quant_source, path, calib, flavour, spec=spec, batch_size=config.batch_size)
    stamp_and_check(path, spec, variant.value)
    return path


def _measure(variant: Variant, path: Path, model, spec: ModelSpec, inputs, reference, labels, config) -> tuple[P.Parity, dict]:
    """-> (the parity the bar applies to, every measurement by method)."""
    how = "onnxruntime CPU EP"
    if variant is Variant.FP16:
        how += " (no x86 fp16 Conv kernels: it inserts casts, so fp16 weights with fp32 arithmetic)"
    checks = {"onnxruntime_cpu": P.compare(spec, reference, P.onnx_logits(path, inputs, config.batch_size), labels, how)}
    if variant is Variant.FP16:
        # The fp16 *arithmetic* is checked by running the same half-precision module in
        # torch on the CPU; the bar applies to the worse of the two measurements.
        half_logits = P.torch_logits(create_fp16_module(model), inputs, config.batch_size)
        checks["torch_cpu_fp16"] = P.compare(spec, reference, half_logits, labels, "torch CPU, fp16 compute")
    primary = checks["onnxruntime_cpu"]
    for other in checks.values():
        primary = P.worst(primary, other)
    return primary, checks


def _details(variant: Variant, path: Path) -> dict:
    if variant is Variant.FP16:
        half, total = count_float16_ops(path)
        return {"float16_conv_gemm_nodes": half, "conv_gemm_nodes": total, "io_dtype": "float32"}
    if variant in (Variant.INT8, Variant.INT8_TRT):
        return describe_qdq(path)
    return {}


def _set_info(images: ImageSet) -> dict:
    return {"source": images.source, "n": len(images), "labelled": images.labelled}


def resolve_trt_variant(config: ExportConfig, variants: tuple[Variant, ...]) -> Variant:
    """The ONNX file an engine is built from: the asked precision, else the lowest exported."""
    wanted = config.trt_precision or max(
        (v.precision for v in variants), key=[Precision.FP32, Precision.FP16, Precision.INT8].index
    )
    by_precision = {Precision.FP32: Variant.FP32, Precision.FP16: Variant.FP16, Precision.INT8: Variant.INT8_TRT}
    variant = by_precision[wanted]
    if variant not in variants:
        raise ValueError(f"--trt-precision {wanted.value} needs --precision to include {wanted.value}")
    return variant


def _check_variant(variant, path, model, spec, heldout, reference, labels, config) -> VariantReport:
    parity, checks = _measure(variant, path, model, spec, heldout, reference, labels, config)
    failures, judged_by = P.judge(variant, parity, config.bars)
    log.info("%s: max|dp| %.2e agreement %.2f%% (%d flips, %d images within max|dp| of the threshold) %s",
             variant.value, parity.max_abs_diff, 100 * parity.agreement, parity.flips, parity.near_threshold,
             f"ok (judged by {judged_by.value})" if not failures else "FAIL " + "; ".join(failures))
    return VariantReport(
        variant=variant.value,
        path=str(path),
        sha256=file_sha256(path),
        size_bytes=path.stat().st_size,
        parity=parity,
        passed=not failures,
        failures=tuple(failures),
        judged_by=judged_by.value,
        checks=checks,
        details=_details(variant, path),
    )


def export_model(config: ExportConfig) -> ExportReport:
    config = resolve_image_source(config)  # before the (slow) checkpoint load
    model, spec = load_checkpoint(config.checkpoint)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    variants = variants_for(config.precisions)
    trt_variant = resolve_trt_variant(config, variants) if config.tensorrt else None  # fail early on bad options

    calib_set, heldout_set = resolve_image_sets(config, spec)
    heldout, heldout_set = load_inputs(heldout_set, spec)
    calib = None
    if any(v in (Variant.INT8, Variant.INT8_TRT) for v in variants):
        calib, calib_set = load_inputs(calib_set, spec)
    labels = np.array(heldout_set.labels, dtype=np.int64) if heldout_set.labelled else None
    reference = P.torch_logits(model, heldout, config.batch_size)

    reports = []
    with tempfile.TemporaryDirectory(prefix=".quant-", dir=out_dir) as tmp:
        for variant in variants:
            path = _write_variant(variant, model, spec, config, calib, Path(tmp) / "pre.onnx")
            reports.append(_check_variant(variant, path, model, spec, heldout, reference, labels, config))
    # Optional: where openvino is installed, its parity per file and precision, for --backend auto.
    record_openvino_parity({Variant(r.variant): Path(r.path) for r in reports}, spec, heldout, reference, labels,
                           config)

    report = ExportReport(
        checkpoint=str(config.checkpoint),
        out_dir=str(out_dir),
        spec=spec.to_dict(),
        calibration=_set_info(calib_set),
        heldout=_set_info(heldout_set),
        bars=asdict(config.bars),
        variants=tuple(reports),
        versions=_versions(),
    )
    report.write(out_dir)
    if not report.passed:
        failed = [f"{v.variant} ({'; '.join(v.failures)})" for v in report.variants if not v.passed]
        error = P.ParityError("parity bar missed by " + ", ".join(failed) + f"; see {out_dir / 'export_report.json'}")
        error.report = report
        raise error
    if trt_variant is not None:
        report = _build_tensorrt(report, config, spec, trt_variant)
    return report


def _build_tensorrt(report: ExportReport, config: ExportConfig, spec: ModelSpec, variant: Variant) -> ExportReport:
    from dataclasses import replace

    from export.tensorrt_build import BuildSettings, TensorRTUnavailable, build_engine

    out_dir = Path(config.out_dir)
    onnx_path = out_dir / variant.filename
    engine_path = out_dir / f"model.{variant.precision.value}.plan"
    settings = BuildSettings(
        max_batch=config.max_batch,
        opt_batch=config.opt_batch,
        device_id=config.device_id,
        workspace_bytes=int(config.workspace_gb * (1 << 30)),
        timing_cache=config.timing_cache,
    )
    try:
        sidecar = build_engine(onnx_path, engine_path, spec, variant.precision.value, settings)
    except TensorRTUnavailable as exc:
        exc.report = replace(report, tensorrt_skipped=str(exc))
        exc.report.write(out_dir)
        raise
    engine = EngineReport(
        path=str(engine_path),
        sidecar=str(engine_path) + ".json",
        precision=variant.precision.value,
        onnx=str(onnx_path),
        build_seconds=sidecar.build_seconds,
    )
    report = replace(report, engine=engine, versions={**report.versions, "tensorrt": sidecar.tensorrt_version})
    report.write(out_dir)
    return report
