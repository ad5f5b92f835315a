"""OpenVINO parity of the exported files, measured like every variant (``parity.compare``
against torch fp32 on the same held-out images) and written to ``openvino_parity.json``
next to them, which ``--backend auto`` reads: a precision that misses its bar is not used.

Bars (``ParityBars``, the ones export applies): fp32 file at f32 -> the fp32 bar (only
summation order differs); fp32 file at bf16 -> the int8 bars on decisions and ranking
(bf16 keeps 8 mantissa bits, coarser than fp16's 11, so single probabilities move like
int8's do); the int8 file at either precision -> the int8 bars. Skipped, with a log line,
where openvino is not installed: OpenVINO is an optional extra and export never needs it.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np

from fracture_batch.model.spec import ModelSpec

from export import parity as P
from export.config import ExportConfig, Variant

log = logging.getLogger(__name__)

# The variants OpenVINO is meant to run (int8.trt is TensorRT's Q/DQ form).
OPENVINO_VARIANTS = (Variant.FP32, Variant.INT8)


def bar_variant(variant: Variant, precision: str) -> Variant:
    """Which of export's bars applies to ``variant`` run by OpenVINO at ``precision``."""
    if variant is Variant.FP32 and precision == "f32":
        return Variant.FP32
    return Variant.INT8


def openvino_logits(path: Path, inputs: np.ndarray, precision: str, batch_size: int = 16) -> np.ndarray:
    from fracture_batch.backends.base import BackendOptions, DeviceKind
    from fracture_batch.backends.openvino_backend import OpenVinoBackend

    be = OpenVinoBackend(path, DeviceKind.CPU, BackendOptions(inference_precision=precision))
    try:
        return np.concatenate([be.predict(inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)])
    finally:
        be.close()


def record_openvino_parity(files: dict[Variant, Path], spec: ModelSpec, inputs: np.ndarray,
                           reference: np.ndarray, labels: np.ndarray | None, config: ExportConfig) -> Path | None:
    """Measure each file x precision and write ``openvino_parity.json``; None when skipped."""
    from fracture_batch.backends.base import file_sha256
    from fracture_batch.backends.cpu_rule import PARITY_FILE
    from fracture_batch.backends.openvino_backend import cpu_has_bf16, has_openvino
    from fracture_batch.machine import cpu_info

    ok, why = has_openvino()
    if not ok:
        log.info("OpenVINO parity not recorded: %s", why)
        return None
    precisions = ["f32", "bf16"] if cpu_has_bf16() else ["f32"]
    entries = {}
    for variant, path in files.items():
        if variant not in OPENVINO_VARIANTS:
            continue
        checks = {}
        for precision in precisions:
            logits = openvino_logits(path, inputs, precision, config.batch_size)
            parity = P.compare(spec, reference, logits, labels, f"openvino CPU, {precision} inference precision")
            failures = P.bar_failures(bar_variant(variant, precision), parity, config.bars)
            checks[precision] = {"passed": not failures, "failures": failures, "parity": parity.to_dict()}
            log.info("openvino %s %s: max|dp| %.2e agreement %.2f%% %s", variant.value, precision,
                     parity.max_abs_diff, 100 * parity.agreement, "ok" if not failures else "FAIL " + "; ".join(failures))
        entries[path.name] = {"variant": variant.value, "sha256": file_sha256(path), "precisions": checks}
    out = Path(config.out_dir) / PARITY_FILE
    doc = {"openvino": why.split()[-1], "cpu_model": cpu_info()["cpu_model"], "bars": asdict(config.bars),
           "files": entries}
    out.write_text(json.dumps(doc, indent=2) + "\n")
    return out
