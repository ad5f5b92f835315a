"""``fracture-batch evaluate``: how well a scored run agrees with known labels.

Labels come from the inputs' own layout or a CSV (``report.labels``, ``--label-source``).
An image without a label of its own takes its study's; a study without one is positive
when any of its labelled images is. Error rows and unlabelled rows take no part (they
are counted in the JSON). Image-level intervals resample studies (cluster bootstrap:
the views of a study are not independent); study-level ones resample studies.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from fracture_batch.model.spec import ModelSpec
from fracture_batch.report.labels import CsvLabels, LabelError, LabelSource, folder_label, is_mura_folder
from fracture_batch.model.metrics import curves, evaluate_predictions
from fracture_batch.report.plots import write_atomic
from fracture_batch.scoring import sink, studies
from fracture_batch.scoring.resume import existing_spec_json

log = logging.getLogger(__name__)

EVALUATION_DIR = "_evaluation"


@dataclass(frozen=True)
class EvaluateConfig:
    out: str  # the scored dataset (score --out)
    labels_csv: str | None = None
    source: LabelSource = LabelSource.AUTO
    n_boot: int = 1000
    seed: int = 0
    results_dir: str | None = None  # default OUT/_evaluation
    plots: bool = True


@dataclass
class Evaluation:
    image: dict[str, Any]
    study: dict[str, Any]
    source: str
    threshold: float
    counts: dict[str, int] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"label_source": self.source, "threshold": self.threshold, "counts": self.counts,
                "image": self.image, "study": self.study, "files": self.files}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Evaluation":
        """An ``evaluation.json`` read back (curves are not saved)."""
        return cls(image=d["image"], study=d["study"], source=d["label_source"], threshold=d["threshold"],
                   counts=d.get("counts", {}), files=d.get("files", {}))


def _read_images(out: Path, rules: studies.StudyRules) -> dict[str, np.ndarray]:
    parts = sink.committed_parts(out)
    if not parts:
        raise LabelError(f"{out} holds no scored rows (part-*.parquet); run `fracture-batch score` first")
    dataset = ds.dataset([str(p) for p in parts], format="parquet")
    cols = [c for c in ("path", "relpath", "status", "prob_fractured", "dicom_study_instance_uid")
            if c in dataset.schema.names]
    t = dataset.to_table(columns=cols)
    if "dicom_study_instance_uid" not in t.column_names:
        t = t.append_column("dicom_study_instance_uid", pa.nulls(t.num_rows, pa.string()))
    keys = studies.study_keys(t, rules)
    return {"path": np.array(t.column("path").to_pylist(), dtype=object),
            "relpath": np.array(t.column("relpath").to_pylist(), dtype=object),
            "ok": np.array([s == "ok" for s in t.column("status").to_pylist()]),
            "prob": t.column("prob_fractured").to_numpy(zero_copy_only=False).astype(np.float64),
            "study": np.array(keys["study_key"].to_pylist(), dtype=object),
            "study_folder": np.array(keys["study_folder"].to_pylist(), dtype=object)}


def resolve_source(cfg: EvaluateConfig, relpaths) -> LabelSource:
    source = LabelSource(cfg.source)
    if source is LabelSource.CSV and not cfg.labels_csv:
        raise LabelError("--label-source csv needs --labels FILE")
    if source is not LabelSource.AUTO:
        return source
    if cfg.labels_csv:
        return LabelSource.CSV
    mura = any(is_mura_folder(r) for r in relpaths[:10000])
    return LabelSource.MURA if mura else LabelSource.CLASS_FOLDERS


def image_and_study_labels(img: dict[str, np.ndarray], source: LabelSource, spec: ModelSpec,
                           labels_csv: str | None) -> tuple[np.ndarray, dict[str, int]]:
    """(label per image row, -1 = none; label per study key)."""
    if source is LabelSource.CSV:
        table = CsvLabels(labels_csv, spec)
        own = [table.lookup(p) for p in img["path"]]
        study_own: dict[str, int | None] = {}
        for k, folder in zip(img["study"], img["study_folder"]):  # by key (folder or UID), else folder
            if k not in study_own:
                hit = table.lookup(k)
                study_own[k] = hit if hit is not None else table.lookup(folder)
    else:
        own = [folder_label(r, source, spec) for r in img["relpath"]]
        study_own = {}
    labels = np.array([-1 if v is None else v for v in own])
    study_labels: dict[str, int] = {k: v for k, v in study_own.items() if v is not None}
    for k, lab in zip(img["study"], labels):  # a study without a label: positive if any image is
        if study_own.get(k) is None and lab >= 0:
            study_labels[k] = max(study_labels.get(k, 0), int(lab))
    inherit = np.array([study_labels.get(k, -1) for k in img["study"]])
    return np.where(labels >= 0, labels, inherit), study_labels


def evaluate_run(cfg: EvaluateConfig) -> Evaluation:
    out = Path(cfg.out)
    parts = sink.committed_parts(out)
    spec_json = existing_spec_json(parts) if parts else None
    if not spec_json:
        raise LabelError(f"{out} is not a scored dataset (no part-*.parquet with a model spec)")
    spec = ModelSpec.from_json(spec_json)
    st_table = studies.read_studies(out)
    rules = studies.rules_of(st_table)
    img = _read_images(out, rules)
    source = resolve_source(cfg, img["relpath"])
    y_img, study_labels = image_and_study_labels(img, source, spec, cfg.labels_csv)
    if not study_labels:
        raise LabelError(f"no image of {out} has a label from {source.value}: pass --labels FILE, or "
                         "--label-source to say where the labels are")
    use = img["ok"] & (y_img >= 0)
    image = evaluate_predictions(y_img[use], img["prob"][use], spec.threshold, n_boot=cfg.n_boot, seed=cfg.seed,
                                 groups=img["study"][use])
    keys = st_table.column("study_key").to_pylist()
    probs = st_table.column("prob_study").to_pylist()
    pick = [(study_labels[k], p) for k, p in zip(keys, probs) if k in study_labels and p is not None]
    ys, ps = (np.array([a for a, _ in pick]), np.array([b for _, b in pick], dtype=np.float64))
    study = evaluate_predictions(ys, ps, spec.threshold, n_boot=cfg.n_boot, seed=cfg.seed)
    study["aggregate"] = rules.to_dict()
    counts = {"image_rows": int(len(use)), "image_errors": int((~img["ok"]).sum()),
              "images_unlabelled": int((img["ok"] & (y_img < 0)).sum()), "studies": len(keys),
              "studies_unlabelled": int(sum(k not in study_labels for k in keys)),
              "studies_without_readable_image": int(sum(p is None for p in probs))}
    result = Evaluation(image=image, study=study, source=source.value, threshold=float(spec.threshold),
                        counts=counts)
    result.image["curves"] = curves(y_img[use], img["prob"][use])
    result.study["curves"] = curves(ys, ps)
    write_results(result, Path(cfg.results_dir) if cfg.results_dir else out / EVALUATION_DIR, plots=cfg.plots)
    return result


def write_results(result: Evaluation, directory: Path, *, plots: bool = True) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if plots:
        from fracture_batch.report.plots import plot_pr, plot_roc  # matplotlib only when plotting

        for name, fn in (("roc.png", plot_roc), ("pr.png", plot_pr)):
            write_atomic(directory / name, fn({"image": result.image, "study": result.study}))
            result.files[name[:-4]] = str(directory / name)
    path = directory / "evaluation.json"
    result.files["json"] = str(path)
    payload = result.to_dict()
    for level in ("image", "study"):
        payload[level] = {k: v for k, v in payload[level].items() if k != "curves"}
    write_atomic(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def _ci(m: dict[str, Any], key: str) -> str:
    lo, hi = m["ci95"].get(key, [float("nan")] * 2)
    return f"{m[key]:.3f} ({lo:.3f}-{hi:.3f})"


def format_table(result: Evaluation) -> str:
    """The printed summary: one line per level, each metric with its 95% CI."""
    head = ["level", "n", "positive", "ROC AUC", "sensitivity", "specificity", "Cohen's kappa"]
    body = [[level, str(m["n"]), str(m["n_positive"]), _ci(m, "roc_auc"), _ci(m, "sensitivity"),
             _ci(m, "specificity"), _ci(m, "kappa")] for level, m in (("image", result.image), ("study", result.study))]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *body]]
    agg = result.study.get("aggregate", {})
    lines.append(f"threshold {result.threshold:.4f} (the model spec's); labels: {result.source}; studies by "
                 f"{agg.get('study_key', '?')}, probability = {agg.get('aggregate', '?')} of the views; "
                 "95% bootstrap CIs")
    return "\n".join(lines)
