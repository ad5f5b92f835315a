"""Metrics a clinician reads, each with a 95% bootstrap confidence interval.

Positive class = fractured. Precision, recall and F1 are binary for the positive class
(recall is therefore the sensitivity); specificity is the recall of the negative class.
CIs are percentile intervals over ``n_boot`` resamples of the test cases (with
replacement) from a seeded generator, so the same predictions give the same intervals.
"""
from __future__ import annotations

from typing import Any

import numpy as np

METRIC_NAMES = ("accuracy", "f1", "precision", "recall", "sensitivity", "specificity", "roc_auc")


def _from_counts(tp, fp, tn, fn) -> dict[str, Any]:
    """Vectorised over resamples: each count may be an array."""
    with np.errstate(divide="ignore", invalid="ignore"):
        n = tp + fp + tn + fn
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        recall = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), np.nan)
        spec = np.where(tn + fp > 0, tn / np.maximum(tn + fp, 1), np.nan)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
        return {"accuracy": (tp + tn) / n, "f1": f1, "precision": precision, "recall": recall,
                "sensitivity": recall, "specificity": spec}


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


def binary_metrics(y_pos: np.ndarray, prob: np.ndarray, threshold: float) -> dict[str, float]:
    """Point estimates; ``y_pos`` is 1 for the positive class."""
    y = np.asarray(y_pos).astype(bool)
    pred = np.asarray(prob) >= threshold
    counts = [np.sum(pred & y), np.sum(pred & ~y), np.sum(~pred & ~y), np.sum(~pred & y)]
    out = {k: float(v) for k, v in _from_counts(*counts).items()}
    out["roc_auc"] = _auc(y.astype(int), prob)
    return out


def bootstrap_ci(y_pos: np.ndarray, prob: np.ndarray, threshold: float, *, n_boot: int = 1000,
                 seed: int = 0, alpha: float = 0.05) -> dict[str, tuple[float, float]]:
    """Percentile CIs for every metric in ``METRIC_NAMES``."""
    y = np.asarray(y_pos).astype(bool)
    prob = np.asarray(prob, dtype=np.float64)
    pred = prob >= threshold
    n = len(y)
    if n_boot <= 0 or n == 0:
        return {k: (float("nan"), float("nan")) for k in METRIC_NAMES}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    yb, pb = y[idx], pred[idx]
    counts = [np.sum(pb & yb, 1), np.sum(pb & ~yb, 1), np.sum(~pb & ~yb, 1), np.sum(~pb & yb, 1)]
    boots = _from_counts(*counts)
    boots["roc_auc"] = np.array([_auc(yb[i].astype(int), prob[idx[i]]) for i in range(n_boot)])
    lo, hi = 100 * alpha / 2, 100 * (1 - alpha / 2)
    out = {}
    for k in METRIC_NAMES:
        v = np.asarray(boots[k], dtype=np.float64)
        v = v[~np.isnan(v)]
        out[k] = (float(np.percentile(v, lo)), float(np.percentile(v, hi))) if len(v) else (float("nan"),) * 2
    return out


def evaluate_predictions(y_pos: np.ndarray, prob: np.ndarray, threshold: float, *,
                         n_boot: int, seed: int) -> dict[str, Any]:
    """{metric: value, ..., "ci95": {metric: [lo, hi]}, "confusion": [[tn, fp], [fn, tp]]}."""
    from sklearn.metrics import confusion_matrix

    y = np.asarray(y_pos).astype(int)
    pred = (np.asarray(prob) >= threshold).astype(int)
    out: dict[str, Any] = {"threshold": float(threshold), "n": int(len(y))}
    out.update(binary_metrics(y, prob, threshold))
    out["ci95"] = {k: list(v) for k, v in bootstrap_ci(y, prob, threshold, n_boot=n_boot, seed=seed).items()}
    out["confusion"] = confusion_matrix(y, pred, labels=[0, 1]).tolist()
    return out


def curves(y_pos: np.ndarray, prob: np.ndarray) -> dict[str, list[float]]:
    """ROC and precision-recall curve points for the report's plots."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    y = np.asarray(y_pos).astype(int)
    if not 0 < y.sum() < len(y):
        return {}
    fpr, tpr, _ = roc_curve(y, prob)
    prec, rec, _ = precision_recall_curve(y, prob)
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "precision": prec.tolist(), "recall": rec.tolist()}
