"""Parity of each exported variant against the torch fp32 model, on held-out images.

All comparisons are on P(positive class) through the spec's own probability rule
(temperature included), the number the scorer writes, not on raw logits.
"""
from __future__ import annotations

import enum
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fracture_batch.model.spec import ModelSpec

from export.config import ParityBars, Variant
from export.onnx_export import INPUT_NAME

log = logging.getLogger(__name__)


class ParityError(Exception):
    """A variant missed its parity bar; the export is not usable as written."""


@dataclass(frozen=True)
class Parity:
    n: int
    max_abs_diff: float
    mean_abs_diff: float
    agreement: float  # fraction of images with the same label at spec.threshold
    flips: int  # images whose label at spec.threshold changed
    near_threshold: int  # images whose fp32 probability lies within max_abs_diff of the threshold
    auc_reference: float | None  # ROC AUC of torch fp32 (None: no labels or one class)
    auc_variant: float | None
    auc_diff: float | None  # |auc_variant - auc_reference|
    checked_with: str  # what produced the variant's numbers

    def to_dict(self) -> dict:
        return asdict(self)


def torch_logits(model, inputs: np.ndarray, batch_size: int = 16) -> np.ndarray:
    import torch

    outs = []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(inputs[start : start + batch_size]))
            outs.append(model(batch).float().numpy())
    return np.concatenate(outs)


def create_cpu_session(path: str | Path, *, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(path: str | Path, inputs: np.ndarray, batch_size: int = 16) -> np.ndarray:
    session = create_cpu_session(path)
    outs = [
        session.run(None, {INPUT_NAME: np.ascontiguousarray(inputs[start : start + batch_size])})[0]
        for start in range(0, len(inputs), batch_size)
    ]
    return np.concatenate(outs).astype(np.float32)


def _auc(labels: np.ndarray | None, scores: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if labels is None or len(np.unique(labels)) < 2:
        return None
    return float(roc_auc_score(labels, scores))


def compare(
    spec: ModelSpec,
    reference_logits: np.ndarray,
    variant_logits: np.ndarray,
    labels: np.ndarray | None,
    checked_with: str,
) -> Parity:
    ref, var = spec.probabilities(reference_logits), spec.probabilities(variant_logits)
    diff = np.abs(ref.astype(np.float64) - var.astype(np.float64))
    same = np.array(spec.labels(ref)) == np.array(spec.labels(var))
    # Only these images can change side for an error of max_abs_diff: the flips' pool.
    near = np.abs(ref.astype(np.float64) - spec.threshold) <= diff.max()
    auc_ref, auc_var = _auc(labels, ref), _auc(labels, var)
    return Parity(
        n=int(len(ref)),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        agreement=float(np.mean(same)),
        flips=int(np.sum(~same)),
        near_threshold=int(np.sum(near)),
        auc_reference=auc_ref,
        auc_variant=auc_var,
        auc_diff=None if auc_ref is None else abs(auc_var - auc_ref),
        checked_with=checked_with,
    )


class JudgedBy(str, enum.Enum):
    """Which figure decided a variant's pass or fail (all of them are reported)."""

    MAX_ABS = "max_abs"  # probabilities within the variant's tolerance of fp32
    AGREEMENT = "agreement"  # int8 beyond the tolerance: decisions and ranking judged


def judge(variant: Variant, parity: Parity, bars: ParityBars) -> tuple[list[str], JudgedBy]:
    """-> (human-readable reasons ``parity`` misses the bar for ``variant``, empty when it
    passes; the figure that decided)."""
    if variant is Variant.FP32:
        return _over(parity, bars.fp32_max_abs), JudgedBy.MAX_ABS
    if variant is Variant.FP16:
        return _over(parity, bars.fp16_max_abs), JudgedBy.MAX_ABS
    if parity.max_abs_diff <= bars.int8_max_abs:
        return [], JudgedBy.MAX_ABS  # no flip can be more than a coin toss at the threshold
    beyond = f"max |Δp| {parity.max_abs_diff:.2e} > {bars.int8_max_abs:.0e}"
    failures = []
    if parity.agreement < bars.int8_min_agreement:
        failures.append(f"agreement {parity.agreement:.2%} < {bars.int8_min_agreement:.0%} "
                        f"({parity.flips} of {parity.n} flipped, {beyond})")
    if parity.auc_diff is not None and parity.auc_diff > bars.int8_max_auc_diff:
        failures.append(f"|ΔAUC| {parity.auc_diff:.4f} > {bars.int8_max_auc_diff} ({beyond})")
    return failures, JudgedBy.AGREEMENT


def _over(parity: Parity, bar: float) -> list[str]:
    return [f"max |Δp| {parity.max_abs_diff:.2e} > {bar:.0e}"] if parity.max_abs_diff > bar else []


def bar_failures(variant: Variant, parity: Parity, bars: ParityBars) -> list[str]:
    """Human-readable reasons ``parity`` misses the bar for ``variant`` (empty: it passes)."""
    return judge(variant, parity, bars)[0]


def worst(a: Parity, b: Parity) -> Parity:
    """The stricter of two measurements of one variant (fp16 is measured two ways)."""
    return a if a.max_abs_diff >= b.max_abs_diff else b
