"""What the triage report shows, read from a scored dataset with pyarrow, column-projected.

Large runs stay fast: probabilities are one float column, errors are filtered in the
scan, the study table is small, and only the images of the top studies are looked up
(by study key, batch by batch) and later decoded.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from fracture_batch.model.spec import ModelSpec
from fracture_batch.scoring import sink, studies
from fracture_batch.scoring.resume import existing_spec_json

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|\([^)]*\)")
_NUMBER = re.compile(r"\d+(?:[.,x]\d+)*")
_PATHLIKE = re.compile(r"(?:/[^\s:,;]+)+")


@dataclass
class StudyView:
    path: str
    relpath: str
    status: str
    prob: float | None
    error: str | None


@dataclass
class TopStudy:
    rank: int
    row: dict[str, Any]  # the study table's row
    views: list[StudyView] = field(default_factory=list)


@dataclass
class RunData:
    out: Path
    spec: ModelSpec
    success: dict[str, Any] | None
    n_rows: int
    n_ok: int
    image_probs: np.ndarray
    study_table: pa.Table
    rules: studies.StudyRules
    top: list[TopStudy]
    error_causes: list[tuple[str, int]]
    errors: list[tuple[str, str]]  # (relpath, message), first max_errors
    n_errors: int


def error_cause(message: str) -> str:
    """A message without its particulars (paths, numbers, quoted values), so errors of
    one kind count together: "cannot identify image file '/a/b.png'" -> "cannot identify image file …"."""
    text = _PATHLIKE.sub("…", _QUOTED.sub("…", message or "unknown error"))
    text = _NUMBER.sub("N", text).split(";")[0].strip()
    return re.sub(r"(…\s*)+", "… ", text).strip()[:120] or "unknown error"


def load_run(out: str | Path, *, top: int = 20, max_errors: int = 200, max_views: int = 4) -> RunData:
    out = Path(out)
    parts = sink.committed_parts(out)
    if not parts:
        raise FileNotFoundError(f"{out} holds no scored rows (part-*.parquet); run `fracture-batch score` first")
    spec = ModelSpec.from_json(existing_spec_json(parts))
    dataset = ds.dataset([str(p) for p in parts], format="parquet")
    status = dataset.to_table(columns=["status", "prob_fractured"])
    ok_mask = pc.equal(status.column("status"), "ok")
    probs = pc.filter(status.column("prob_fractured"), ok_mask).to_numpy().astype(np.float64)
    errs = dataset.to_table(columns=["relpath", "error"], filter=ds.field("status") != "ok")
    messages = errs.column("error").to_pylist()
    causes = Counter(error_cause(m) for m in messages)
    try:
        st = studies.read_studies(out)
    except FileNotFoundError:  # a run from before study tables: build it in memory, default rules
        st = studies.aggregate_rows(dataset, spec)
    rules = studies.rules_of(st)
    return RunData(
        out=out, spec=spec, success=sink.read_success(out), n_rows=status.num_rows, n_ok=len(probs),
        image_probs=probs, study_table=st, rules=rules,
        top=_top_studies(dataset, st, rules, top, max_views), error_causes=causes.most_common(),
        errors=list(zip(errs.column("relpath").to_pylist()[:max_errors], messages[:max_errors])),
        n_errors=errs.num_rows,
    )


def _top_studies(dataset: ds.Dataset, st: pa.Table, rules: studies.StudyRules, n: int,
                 max_views: int) -> list[TopStudy]:
    """The n studies of highest study probability (ties: more images first), with their
    images, most suspicious view first."""
    if n <= 0 or st.num_rows == 0:
        return []
    ranked = st.filter(pc.is_valid(st.column("prob_study"))).sort_by(
        [("prob_study", "descending"), ("n_images", "descending"), ("study_key", "ascending")]).slice(0, n)
    rows = ranked.to_pylist()
    wanted = pa.array([r["study_key"] for r in rows], pa.string())
    views: dict[str, list[StudyView]] = {r["study_key"]: [] for r in rows}
    cols = [c for c in ("path", "relpath", "status", "prob_fractured", "error", "dicom_study_instance_uid")
            if c in dataset.schema.names]
    for batch in dataset.to_batches(columns=cols):
        if "dicom_study_instance_uid" not in batch.schema.names:
            batch = batch.append_column("dicom_study_instance_uid", pa.nulls(batch.num_rows, pa.string()))
        keys = studies.study_keys(batch, rules).column("study_key")
        hit = pc.is_in(keys, value_set=wanted)
        if not pc.any(hit).as_py():
            continue
        sub = pa.Table.from_batches([batch]).filter(hit)
        for key, row in zip(pc.filter(keys, hit).to_pylist(), sub.to_pylist()):
            views[key].append(StudyView(row["path"], row["relpath"], row["status"], row["prob_fractured"],
                                        row.get("error")))
    out = []
    for rank, r in enumerate(rows, start=1):
        v = sorted(views[r["study_key"]], key=lambda x: (x.prob is None, -(x.prob or 0.0), x.relpath))
        out.append(TopStudy(rank, r, v[:max_views]))
    return out
