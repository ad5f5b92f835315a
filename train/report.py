"""Run outputs: metrics.json, report.md with the seed's two-column table, PNG plots.

``metrics.json`` holds only numbers that depend on the data, config and seed (no
wall-clock times), so two seeded CPU runs give identical files; times go to
``timings.json``. Plots use matplotlib's Agg backend (no display needed).
"""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PHASE_TITLES = {"frozen": "Original Model (Frozen)", "unfrozen": "Fine-Tuned Model (Unfrozen)"}
TABLE_ROWS = (("Accuracy", "accuracy"), ("F1", "f1"), ("Precision", "precision"), ("Recall", "recall"),
              ("ROC AUC", "roc_auc"))


def _fmt(v: float) -> str:
    return "n/a" if v != v else f"{v:.4f}"


def _fmt_ci(m: dict[str, Any], key: str) -> str:
    lo, hi = m["ci95"][key]
    return f"{_fmt(m[key])} ({_fmt(lo)}–{_fmt(hi)})"


def phase_table(metrics: dict[str, Any], *, ci: bool = False) -> str:
    """The seed project's results table, one column per phase, as Markdown."""
    phases = [p for p in PHASE_TITLES if p in metrics["phases"]]
    cell = _fmt_ci if ci else (lambda m, k: _fmt(m[k]))
    lines = ["| Metric | " + " | ".join(PHASE_TITLES[p] for p in phases) + " |",
             "|---|" + "---|" * len(phases)]
    for label, key in TABLE_ROWS:
        lines.append(f"| {label} | " + " | ".join(cell(metrics["phases"][p]["at_0.5"], key) for p in phases) + " |")
    op = [metrics["phases"][p]["at_threshold"] for p in phases]
    lines.append("| Threshold (operating point) | " + " | ".join(f"{m['threshold']:.4f}" for m in op) + " |")
    lines.append("| Sensitivity @ threshold | " + " | ".join(cell(m, "sensitivity") for m in op) + " |")
    lines.append("| Specificity @ threshold | " + " | ".join(cell(m, "specificity") for m in op) + " |")
    return "\n".join(lines)


def phase_caption(metrics: dict[str, Any]) -> str:
    """What the "Original Model (Frozen)" column measures, for the table's caption.

    The frozen phase trains only the head on the backbone's features: with ImageNet
    weights that is the transfer baseline; from random initialisation it is a linear
    probe of random features (~0.5 accuracy), a floor and not a baseline to beat."""
    if "frozen" not in metrics["phases"]:
        return ""
    pretrained = metrics["spec"]["pretrained"]
    if pretrained == "none":
        return ("Original Model (Frozen): the head alone, trained on the backbone's random-initialisation "
                "features (no pretrained weights were given), so it measures random features: a floor, not a "
                "baseline. With `--pretrained PATH` (a local ImageNet ResNet50 state dict) this column "
                "measures ImageNet features instead (not measured by the project: no such file was available offline).")
    return (f"Original Model (Frozen): the head alone, trained on the features of {pretrained}; the "
            "backbone is unchanged.")


def write_outputs(run_dir: Path, metrics: dict[str, Any], phase_results: dict[str, Any],
                  timings: list[dict[str, Any]]) -> Path:
    run_dir = Path(run_dir)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    (run_dir / "timings.json").write_text(json.dumps({"epochs": timings}, indent=2) + "\n")
    _write_predictions(run_dir / "test_predictions.csv", phase_results)
    plots = write_plots(run_dir, metrics, phase_results)
    report = run_dir / "report.md"
    report.write_text(render_report(metrics, plots))
    return report


def _write_predictions(path: Path, phase_results: dict[str, Any]) -> None:
    phases = [p for p in PHASE_TITLES if p in phase_results]
    first = phase_results[phases[0]]["test_predictions"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["relpath", "is_positive"] + [f"prob_{p}" for p in phases])
        for i, rel in enumerate(first["relpath"]):
            w.writerow([rel, first["label"][i]] +
                       [f"{phase_results[p]['test_predictions']['prob'][i]:.6f}" for p in phases])


def render_report(metrics: dict[str, Any], plots: dict[str, str]) -> str:
    spec, cfg = metrics["spec"], metrics["config"]
    counts = metrics["class_counts"]
    last = [p for p in PHASE_TITLES if p in metrics["phases"]][-1]
    op = metrics["phases"][last]["at_threshold"]
    out = [
        "# Training report", "",
        f"{cfg['arch']} at {cfg['image_size']} px, initialised from "
        f"{'random weights' if spec['pretrained'] == 'none' else spec['pretrained']}, "
        f"{metrics['device']} / {metrics['precision_mode']}. Positive class: **{spec['positive_class']}**.",
        "", "## Test results", "",
        "Point estimate (95% bootstrap CI, "
        f"{cfg['bootstrap']} resamples) at the argmax rule (calibrated P ≥ 0.5); precision, recall and F1 "
        "for the positive class. The last rows use the operating threshold chosen on validation.", "",
        phase_table(metrics, ci=True), "", phase_caption(metrics), "",
        "## Operating point (model.pt)", "",
        f"- Temperature (fitted on validation): {spec['temperature']:.4f}",
        f"- Threshold {spec['threshold']:.4f}: {spec['threshold_detail']}",
        f"- On test at that threshold: sensitivity {_fmt_ci(op, 'sensitivity')}, "
        f"specificity {_fmt_ci(op, 'specificity')}",
        "", "## Data", "",
        "| Split | " + " | ".join(spec["class_names"]) + " |", "|---|" + "---|" * len(spec["class_names"]),
    ]
    for split, c in counts.items():
        out.append(f"| {split} | " + " | ".join(str(c[k]) for k in spec["class_names"]) + " |")
    out += ["", f"Imbalance handling: {metrics['imbalance']}"
            + (" (class weights " + ", ".join(f"{w:.3f}" for w in metrics["class_weights"]) + ")"
               if metrics["class_weights"] else ""),
            f"Data fingerprint: `{spec['data_fingerprint'][:16]}…`"]
    if metrics["skipped_files"]:
        out += ["", f"Skipped {len(metrics['skipped_files'])} unreadable files:", ""]
        out += [f"- {m}" for m in metrics["skipped_files"]]
    out += ["", "## Plots", ""] + [f"![{k}]({v})" for k, v in plots.items()]
    return "\n".join(out) + "\n"


def write_plots(run_dir: Path, metrics: dict[str, Any], phase_results: dict[str, Any]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    phases = [p for p in PHASE_TITLES if p in phase_results]
    names = metrics["spec"]["class_names"]
    pos = metrics["spec"]["positive_class"]
    neg = next(c for c in names if c != pos)
    files: dict[str, str] = {}

    fig, axes = plt.subplots(1, len(phases), figsize=(4.5 * len(phases), 4), squeeze=False)
    for ax, p in zip(axes[0], phases):
        cm = metrics["phases"][p]["at_threshold"]["confusion"]  # [[tn, fp], [fn, tp]]
        ax.imshow(cm, cmap="Blues")
        for i in range(2):
            for j in range(2):
                ax.text(j, i, str(cm[i][j]), ha="center", va="center", fontsize=12)
        ax.set_xticks([0, 1], [neg, pos])
        ax.set_yticks([0, 1], [neg, pos])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{PHASE_TITLES[p]}\nthreshold {metrics['phases'][p]['at_threshold']['threshold']:.3f}",
                     fontsize=9)
    files["confusion matrix"] = _save(fig, run_dir, "confusion_matrix.png")

    if all(phase_results[p]["curves"] for p in phases):
        fig, (roc, pr) = plt.subplots(1, 2, figsize=(10, 4))
        for p in phases:
            c, m = phase_results[p]["curves"], metrics["phases"][p]["at_0.5"]
            roc.plot(c["fpr"], c["tpr"], label=f"{PHASE_TITLES[p]} (AUC {m['roc_auc']:.3f})")
            pr.plot(c["recall"], c["precision"], label=PHASE_TITLES[p])
        roc.plot([0, 1], [0, 1], "k:", lw=0.8)
        roc.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC (test)")
        pr.set(xlabel="recall (sensitivity)", ylabel="precision", title="Precision-recall (test)")
        for ax in (roc, pr):
            ax.legend(fontsize=8)
        files["ROC and PR curves"] = _save(fig, run_dir, "roc_pr.png")

    hist = metrics["history"]
    if hist:
        fig, (lo, ac) = plt.subplots(1, 2, figsize=(10, 4))
        x = list(range(1, len(hist) + 1))
        lo.plot(x, [h["train_loss"] for h in hist], label="train")
        lo.plot(x, [h["val_loss"] for h in hist], label="val")
        ac.plot(x, [h["train_accuracy"] for h in hist], label="train")
        ac.plot(x, [h["val_accuracy"] for h in hist], label="val")
        n_frozen = sum(1 for h in hist if h["phase"] == "frozen")
        for ax, name in ((lo, "loss"), (ac, "accuracy")):
            if 0 < n_frozen < len(hist):
                ax.axvline(n_frozen + 0.5, color="grey", ls="--", lw=0.8)
            ax.set(xlabel="epoch (frozen, then unfrozen)", ylabel=name, title=f"{name} per epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend(fontsize=8)
        files["loss and accuracy per epoch"] = _save(fig, run_dir, "history.png")
    return files


def _save(fig, run_dir: Path, name: str) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(run_dir / name, dpi=110)
    plt.close(fig)
    return name
