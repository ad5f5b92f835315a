"""Metrics a clinician reads, each with a 95% bootstrap confidence interval.

Shared by training (``train.metrics`` re-exports it) and ``fracture-batch evaluate``.
Positive class = fractured. Precision, recall and F1 are binary for the positive class
(recall is therefore the sensitivity); specificity is the recall of the negative class;
Cohen's kappa is the agreement of decision and label beyond chance (MURA's metric).
CIs are percentile intervals over ``n_boot`` resamples of the cases (with replacement)
from a seeded generator, so the same predictions give the same intervals. With
``groups`` the resampling unit is the group (a cluster bootstrap): the views of one study
are correlated, so image-level intervals resample studies, not images.
"""
from __future__ import annotations

from typing import Any

import numpy as np

METRIC_NAMES = ("accuracy", "f1", "precision", "recall", "sensitivity", "specificity", "roc_auc", "kappa")


def _from_counts(tp, fp, tn, fn) -> dict[str, Any]:
    """Vectorised over resamples: each count may be an array."""
    tp, fp, tn, fn = (np.asarray(c, dtype=np.float64) for c in (tp, fp, tn, fn))
    with np.errstate(divide="ignore", invalid="ignore"):
        n = tp + fp + tn + fn
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        recall = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), np.nan)
        spec = np.where(tn + fp > 0, tn / np.maximum(tn + fp, 1), np.nan)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
        observed = (tp + tn) / n
        chance = ((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)) / (n * n)
        # kappa is undefined when chance agreement is 1 (one class and one decision only)
        kappa = np.where(chance < 1, (observed - chance) / (1 - chance), np.nan)
        return {"accuracy": observed, "f1": f1, "precision": precision, "recall": recall,
                "sensitivity": recall, "specificity": spec, "kappa": kappa}


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


def _auc_ranks(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """ROC AUC by the Mann-Whitney rank sum (ties get average ranks, as in roc_auc_score),
    vectorised over the rows of 2-D ``y``/``p``: ~100x faster than a roc_auc_score loop."""
    from scipy.stats import rankdata

    y, p = np.atleast_2d(y).astype(bool), np.atleast_2d(p)
    ranks = rankdata(p, axis=1)
    n1 = y.sum(axis=1).astype(np.float64)
    n0 = y.shape[1] - n1
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (np.where(y, ranks, 0).sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)
    return np.where((n1 > 0) & (n0 > 0), auc, np.nan)


def _counts(y: np.ndarray, pred: np.ndarray, axis=None):
    return (np.sum(pred & y, axis), np.sum(pred & ~y, axis), np.sum(~pred & ~y, axis), np.sum(~pred & y, axis))


def binary_metrics(y_pos: np.ndarray, prob: np.ndarray, threshold: float) -> dict[str, float]:
    """Point estimates; ``y_pos`` is 1 for the positive class."""
    y = np.asarray(y_pos).astype(bool)
    pred = np.asarray(prob) >= threshold
    out = {k: float(v) for k, v in _from_counts(*_counts(y, pred)).items()}
    out["roc_auc"] = _auc(y.astype(int), prob)
    return out


def _resamples(n: int, n_boot: int, rng: np.random.Generator, groups) -> list[np.ndarray] | np.ndarray:
    if groups is None:
        return rng.integers(0, n, size=(n_boot, n))
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]
    picks = rng.integers(0, len(members), size=(n_boot, len(members)))
    return [np.concatenate([members[g] for g in row]) for row in picks]


def bootstrap_ci(y_pos: np.ndarray, prob: np.ndarray, threshold: float, *, n_boot: int = 1000,
                 seed: int = 0, alpha: float = 0.05, groups=None) -> dict[str, tuple[float, float]]:
    """Percentile CIs for every metric in ``METRIC_NAMES`` (``groups``: cluster bootstrap)."""
    y = np.asarray(y_pos).astype(bool)
    prob = np.asarray(prob, dtype=np.float64)
    pred = prob >= threshold
    n = len(y)
    if n_boot <= 0 or n == 0:
        return {k: (float("nan"), float("nan")) for k in METRIC_NAMES}
    rng = np.random.default_rng(seed)
    idx = _resamples(n, n_boot, rng, groups)
    if isinstance(idx, np.ndarray):  # equal-size resamples: one vectorised pass
        yb, pb = y[idx], pred[idx]
        boots = _from_counts(*_counts(yb, pb, axis=1))
    else:
        counts = np.array([_counts(y[i], pred[i]) for i in idx], dtype=np.float64).T
        boots = _from_counts(*counts)
    if isinstance(idx, np.ndarray):
        boots["roc_auc"] = _auc_ranks(y[idx], prob[idx])
    else:
        boots["roc_auc"] = np.array([_auc_ranks(y[i], prob[i])[0] for i in idx])
    lo, hi = 100 * alpha / 2, 100 * (1 - alpha / 2)
    out = {}
    for k in METRIC_NAMES:
        v = np.asarray(boots[k], dtype=np.float64)
        v = v[~np.isnan(v)]
        out[k] = (float(np.percentile(v, lo)), float(np.percentile(v, hi))) if len(v) else (float("nan"),) * 2
    return out


def evaluate_predictions(y_pos: np.ndarray, prob: np.ndarray, threshold: float, *,
                         n_boot: int, seed: int, groups=None) -> dict[str, Any]:
    """{metric: value, ..., "ci95": {metric: [lo, hi]}, "confusion": [[tn, fp], [fn, tp]]}."""
    from sklearn.metrics import confusion_matrix

    y = np.asarray(y_pos).astype(int)
    pred = (np.asarray(prob) >= threshold).astype(int)
    out: dict[str, Any] = {"threshold": float(threshold), "n": int(len(y)), "n_positive": int(y.sum())}
    out.update(binary_metrics(y, prob, threshold))
    out["ci95"] = {k: list(v) for k, v in
                   bootstrap_ci(y, prob, threshold, n_boot=n_boot, seed=seed, groups=groups).items()}
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
