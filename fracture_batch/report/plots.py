"""Matplotlib figures of evaluation and report (Agg backend: no display needed)."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

_COLOURS = {"image": "#4C72B0", "study": "#C44E52"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def write_atomic(path: Path, data: bytes) -> Path:
    """Write through a temporary name (exclusive create: a link planted there is never
    followed) and rename, so a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    with open(tmp, "xb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path


def _save(fig, target: Path | None) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    data = buf.getvalue()
    if target is not None:
        write_atomic(Path(target), data)
    return data


def _curves(levels: dict[str, dict[str, Any]], target: Path | None, *, x: str, y: str, point, label,
            **axes) -> bytes:
    """One curve per level (image, study), each with its operating point (``point(m)``)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for level, m in levels.items():
        c = m.get("curves") or {}
        if not c:
            continue
        ax.plot(c[x], c[y], color=_COLOURS.get(level), label=label(level, m))
        ax.plot(*point(m), "o", color=_COLOURS.get(level))
    ax.set(xlim=(0, 1), ylim=(0, 1.01), **axes)
    ax.legend(fontsize=8)
    return _save(fig, target)


def plot_roc(levels: dict[str, dict[str, Any]], target: Path | None = None) -> bytes:
    """ROC curves (image and study level), AUC in the legend, the operating point marked."""
    return _curves(levels, target, x="fpr", y="tpr", point=lambda m: (1 - m["specificity"], m["sensitivity"]),
                   label=lambda lv, m: f"{lv} AUC {m['roc_auc']:.3f} (n={m['n']})",
                   xlabel="1 - specificity", ylabel="sensitivity", title="ROC (dot: the spec's threshold)")


def plot_pr(levels: dict[str, dict[str, Any]], target: Path | None = None) -> bytes:
    return _curves(levels, target, x="recall", y="precision", point=lambda m: (m["sensitivity"], m["precision"]),
                   label=lambda lv, m: f"{lv} (n={m['n']})", xlabel="recall (sensitivity)", ylabel="precision",
                   title="Precision-recall (dot: the threshold)")


def plot_histogram(image_probs: np.ndarray, study_probs: np.ndarray, threshold: float,
                   target: Path | None = None) -> bytes:
    """Probability histograms of images and studies with the decision threshold."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 2.8))
    bins = np.linspace(0, 1, 41)
    if len(image_probs):
        ax.hist(image_probs, bins=bins, color=_COLOURS["image"], alpha=0.55, label=f"images (n={len(image_probs)})")
    if len(study_probs):
        ax.hist(study_probs, bins=bins, color=_COLOURS["study"], alpha=0.55, label=f"studies (n={len(study_probs)})")
    ax.axvline(threshold, color="black", ls="--", lw=1.2, label=f"threshold {threshold:.3f}")
    ax.set(xlabel="probability of fracture", ylabel="count", xlim=(0, 1))
    ax.legend(fontsize=8)
    return _save(fig, target)
