"""Temperature scaling and the operating threshold, both fitted on the validation split.

Both end up in the model spec (``temperature``, ``threshold``, ``threshold_method``,
``threshold_detail``), so export and every scoring backend apply the same rule via
``ModelSpec.probabilities`` / ``ModelSpec.labels``.
"""
from __future__ import annotations

import numpy as np

from fracture_batch.model.spec import ThresholdMethod

MIN_T, MAX_T = 0.05, 20.0


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 minimising validation NLL of softmax(logits / T) (Guo et al. 2017)."""
    from scipy.optimize import minimize_scalar

    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return 1.0
    res = minimize_scalar(lambda lt: nll(logits, labels, float(np.exp(lt))),
                          bounds=(np.log(MIN_T), np.log(MAX_T)), method="bounded",
                          options={"xatol": 1e-4})
    t = float(np.exp(res.x))
    # Never worse than leaving the model alone.
    return t if nll(logits, labels, t) <= nll(logits, labels, 1.0) else 1.0


def choose_threshold(y_pos: np.ndarray, prob: np.ndarray, rule: ThresholdMethod,
                     target_sensitivity: float = 0.95) -> tuple[float, str]:
    """-> (threshold on P(positive), a sentence saying how it was chosen and what it gave)."""
    from sklearn.metrics import roc_curve

    y = np.asarray(y_pos).astype(int)
    prob = np.asarray(prob, dtype=np.float64)
    if rule is ThresholdMethod.DEFAULT or not 0 < y.sum() < len(y):
        why = "" if rule is ThresholdMethod.DEFAULT else " (validation split lacks one class)"
        return 0.5, f"default 0.5 on the calibrated probability{why}"
    fpr, tpr, thr = roc_curve(y, prob, drop_intermediate=False)
    thr = np.minimum(thr, 1.0)  # roc_curve's first threshold is +inf
    if rule is ThresholdMethod.YOUDEN:
        i = int(np.argmax(tpr - fpr))
        t = float(thr[i])
        return t, (f"Youden's J on validation: J={tpr[i] - fpr[i]:.3f}, "
                   f"sensitivity {tpr[i]:.3f}, specificity {1 - fpr[i]:.3f}")
    # Highest threshold reaching the target sensitivity = best specificity at that sensitivity.
    ok = np.flatnonzero(tpr >= target_sensitivity - 1e-12)
    i = int(ok[0])
    t = float(thr[i])
    return t, (f"target sensitivity {target_sensitivity:.2f} on validation: achieved sensitivity "
               f"{tpr[i]:.3f}, specificity {1 - fpr[i]:.3f}")
