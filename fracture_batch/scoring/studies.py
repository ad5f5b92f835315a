"""The study table: one row per study, rebuilt from the committed image rows.

A radiologist reads studies, not files: a wrist study has two to four views, and MURA
labels and scores per study (its baseline averages the views' probabilities). Every run
ends by rebuilding ``OUT/_studies/studies.parquet`` from *all* committed parts, so a study
whose images were written by two runs (resume) or by the Ray engine is aggregated once,
from the rows that are on disk, and both engines give the same table.

Where it lives: inside --out (nothing is written outside it), under a name with a
leading underscore, which pyarrow/pandas, Spark and ``OUT/*.parquet`` globs (DuckDB,
polars) all skip when they read the image dataset; read it as its own dataset
(``OUT/_studies``). Its schema metadata holds the model spec (same key as the image
parts) and the rules used (``STUDIES_METADATA_KEY``).

Which images form a study (``StudyKey``, ``--study-key``, recorded):
- ``auto`` (default): the DICOM StudyInstanceUID when the row has one (as treated by
  ``--dicom-ids``: the hash token by default, the raw UID with ``keep``), otherwise
  (plain files, unreadable DICOM, ``--dicom-ids drop``) the study folder;
- ``folder``: the study folder, even for DICOM;
- ``parent``: each file's parent folder, even for DICOM or below a study folder.
The study folder is the nearest enclosing ``studyN...`` folder (MURA's
``patientNNNNN/studyN_<label>/``, matched case-insensitively), else the file's parent.
The key is the folder's absolute path (or the UID token); ``study_folder`` holds the
folder relative to the input root, for people.

The study probability (``StudyAggregate``, ``--study-aggregate``) is the mean of its
images' probabilities (MURA's rule, the default) or their maximum; error rows count in
``n_errors`` and take no part in it. The decision uses the spec's threshold; a study
with no readable image has a null probability and decision.
"""
from __future__ import annotations

import enum
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from fracture_batch.model.spec import SPEC_METADATA_KEY, ModelSpec
from fracture_batch.scoring import sink
from fracture_batch.scoring.config import StudyAggregate, StudyKey
from fracture_batch.scoring.resume import existing_spec_json

log = logging.getLogger(__name__)

STUDIES_DIR = "_studies"
STUDIES_FILE = "studies.parquet"
STUDIES_METADATA_KEY = "fracture_batch.studies"
# Nearest enclosing MURA-style study folder, at any depth (the greedy ".*" finds the last):
# ".../study1_positive/image1.png" and ".../study1/series2/x.dcm" -> ".../study1_positive", ".../study1".
_MURA_RE = r"(?i)^(.*(?:^|/)study[0-9]+[^/]*)/.*$"
_MURA_MATCH = r"(?i)(?:^|/)study[0-9]+[^/]*/"
_PARENT_RE = r"^(.*)/[^/]*$"


class KeySource(str, enum.Enum):
    DICOM = "dicom_study_uid"
    STUDY_FOLDER = "study_folder"
    PARENT_FOLDER = "parent_folder"


@dataclass(frozen=True)
class StudyRules:
    key: StudyKey = StudyKey.AUTO
    aggregate: StudyAggregate = StudyAggregate.MEAN

    def to_dict(self) -> dict[str, str]:
        return {"study_key": StudyKey(self.key).value, "aggregate": StudyAggregate(self.aggregate).value}


_READ_COLUMNS = ("path", "relpath", "status", "prob_fractured", "model_sha256", "dicom_study_instance_uid")

STUDY_FIELDS = [
    pa.field("study_key", pa.string(), nullable=False),
    pa.field("key_source", pa.string(), nullable=False),
    pa.field("study_folder", pa.string()),  # relative to the input root (of the study's first image)
    pa.field("n_images", pa.int64(), nullable=False),
    pa.field("n_ok", pa.int64(), nullable=False),
    pa.field("n_errors", pa.int64(), nullable=False),
    pa.field("prob_mean", pa.float64()),
    pa.field("prob_max", pa.float64()),
    pa.field("aggregate", pa.string(), nullable=False),
    pa.field("prob_study", pa.float64()),
    pa.field("threshold", pa.float64(), nullable=False),
    pa.field("pred_label", pa.string()),
    pa.field("model_sha256", pa.string()),
]
STUDY_COLUMNS = tuple(f.name for f in STUDY_FIELDS)


def studies_path(out: str | Path) -> Path:
    return Path(out) / STUDIES_DIR / STUDIES_FILE


def _folder(col: pa.ChunkedArray | pa.Array, *, root_name: str, mura_rule: bool = True) -> tuple[pa.Array, pa.Array]:
    """(study folder, is a MURA study folder) of each path."""
    mura = pc.match_substring_regex(col, _MURA_MATCH)
    if not mura_rule:
        mura = pc.and_(mura, pa.scalar(False))
    parent = pc.if_else(pc.match_substring(col, "/"), pc.replace_substring_regex(col, _PARENT_RE, r"\1"),
                        pa.scalar(root_name))
    study = pc.replace_substring_regex(col, _MURA_RE, r"\1")
    return pc.if_else(mura, study, parent), mura


def study_keys(rows: pa.Table | pa.RecordBatch, rules: StudyRules) -> pa.Table:
    """Per image row: its study key, key source and relative study folder (plus the
    columns the aggregation needs); ``rows`` needs path, relpath, status, prob_fractured,
    model_sha256 (optional) and dicom_study_instance_uid."""
    return _keys(rows, rules)


def rules_of(table: pa.Table) -> StudyRules:
    """The rules a study table was built with (its schema metadata)."""
    meta = json.loads((table.schema.metadata or {}).get(STUDIES_METADATA_KEY.encode(), b"{}"))
    return StudyRules(StudyKey(meta.get("study_key", "auto")), StudyAggregate(meta.get("aggregate", "mean")))


def _keys(batch: pa.Table | pa.RecordBatch, rules: StudyRules) -> pa.Table:
    path, rel = batch.column("path"), batch.column("relpath")
    uid = batch.column("dicom_study_instance_uid")
    key = StudyKey(rules.key)
    folder, mura = _folder(path, root_name="/", mura_rule=key is not StudyKey.PARENT)
    rel_folder, _ = _folder(rel, root_name=".", mura_rule=key is not StudyKey.PARENT)
    folder_source = pc.if_else(mura, pa.scalar(KeySource.STUDY_FOLDER.value), pa.scalar(KeySource.PARENT_FOLDER.value))
    if key is not StudyKey.AUTO:
        use_uid = pa.array([False] * batch.num_rows)
    else:
        use_uid = pc.fill_null(pc.and_(pc.is_valid(uid), pc.not_equal(uid, "")), False)
    ok = pc.equal(batch.column("status"), "ok")
    return pa.table({
        "study_key": pc.if_else(use_uid, uid, folder),
        "key_source": pc.if_else(use_uid, pa.scalar(KeySource.DICOM.value), folder_source),
        "study_folder": rel_folder,
        "is_error": pc.cast(pc.invert(ok), pa.int64()),
        "prob": pc.cast(pc.if_else(ok, batch.column("prob_fractured"), pa.scalar(None, pa.float32())), pa.float64()),
        "model_sha256": batch.column("model_sha256") if "model_sha256" in batch.schema.names
        else pa.nulls(batch.num_rows, pa.string()),
    })


_PARTIAL = [("is_error", "count"), ("is_error", "sum"), ("prob", "sum"), ("prob", "count"), ("prob", "max"),
            ("study_folder", "min"), ("key_source", "min"), ("model_sha256", "max")]
# Combining partials: counts and sums add up, max/min stay max/min.
_COMBINE = [(f"{c}_{a}", "sum" if a in ("count", "sum") else a) for c, a in _PARTIAL]


def aggregate_rows(dataset: ds.Dataset, spec: ModelSpec, rules: StudyRules = StudyRules(),
                   batch_rows: int = 65536) -> pa.Table:
    """Image rows (a pyarrow dataset) -> the study table, batch by batch: per-batch sums
    per study, then the sums of those, so memory grows with studies, not images."""
    columns = [c for c in _READ_COLUMNS if c in dataset.schema.names]
    partials = []
    for batch in dataset.to_batches(columns=columns, batch_size=batch_rows):
        if not batch.num_rows:
            continue
        if "dicom_study_instance_uid" not in batch.schema.names:
            batch = batch.append_column("dicom_study_instance_uid", pa.nulls(batch.num_rows, pa.string()))
        partials.append(_keys(batch, rules).group_by("study_key").aggregate(_PARTIAL))
    if not partials:
        return pa.schema(STUDY_FIELDS).empty_table()
    whole = pa.concat_tables(partials).group_by("study_key").aggregate(_COMBINE)
    whole = whole.rename_columns([c.rsplit("_", 1)[0] if c != "study_key" else c for c in whole.column_names])
    return _finish(whole, spec, rules)


def _finish(g: pa.Table, spec: ModelSpec, rules: StudyRules) -> pa.Table:
    n_ok = pc.fill_null(g.column("prob_count"), 0)
    has = pc.greater(n_ok, 0)
    mean = pc.if_else(has, pc.divide(pc.cast(g.column("prob_sum"), pa.float64()), pc.cast(n_ok, pa.float64())),
                      pa.scalar(None, pa.float64()))
    mx = pc.if_else(has, g.column("prob_max"), pa.scalar(None, pa.float64()))
    agg = StudyAggregate(rules.aggregate)
    prob = mean if agg is StudyAggregate.MEAN else mx
    negative = next(c for c in spec.class_names if c != spec.positive_class)
    label = pc.if_else(pc.greater_equal(prob, spec.threshold), pa.scalar(spec.positive_class), pa.scalar(negative))
    n = len(g)
    table = pa.table({
        "study_key": g.column("study_key"), "key_source": g.column("key_source_min"),
        "study_folder": g.column("study_folder_min"), "n_images": g.column("is_error_count"), "n_ok": n_ok,
        "n_errors": g.column("is_error_sum"), "prob_mean": mean, "prob_max": mx,
        "aggregate": pa.array([agg.value] * n), "prob_study": prob,
        "threshold": pa.array([float(spec.threshold)] * n, pa.float64()), "pred_label": label,
        "model_sha256": g.column("model_sha256_max"),
    })
    table = table.cast(pa.schema(STUDY_FIELDS))
    return table.sort_by([("study_key", "ascending")])


def study_schema_metadata(spec: ModelSpec, rules: StudyRules, source_rows: int) -> dict[str, str]:
    return {SPEC_METADATA_KEY: spec.to_json(),
            STUDIES_METADATA_KEY: json.dumps(rules.to_dict() | {"source_rows": source_rows})}


def build_studies(out: str | Path, rules: StudyRules = StudyRules(), spec: ModelSpec | None = None) -> pa.Table | None:
    """Rebuild ``OUT/_studies/studies.parquet`` from every committed part (atomically:
    temporary name, fsync, rename) and return it; None when --out holds no parts."""
    out = Path(out)
    parts = sink.committed_parts(out)
    target = studies_path(out)
    if not parts:
        target.unlink(missing_ok=True)
        return None
    if spec is None:
        spec = ModelSpec.from_json(existing_spec_json(parts))
    dataset = ds.dataset([str(p) for p in parts], format="parquet")
    n_rows = dataset.count_rows()
    table = aggregate_rows(dataset, spec, rules)
    table = table.replace_schema_metadata(study_schema_metadata(spec, rules, n_rows))
    if target.parent.is_symlink():  # our own name: never written through (nothing outside --out)
        target.parent.unlink()
    target.parent.mkdir(exist_ok=True)
    tmp = target.parent / f".tmp-{STUDIES_FILE}"
    tmp.unlink(missing_ok=True)
    with open(tmp, "xb") as f:  # exclusive create: a link planted at the temporary name is not followed
        pq.write_table(table, f, compression="zstd")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    sink.fsync_dir(target.parent)
    log.info("study table: %d studies from %d image rows (%s, %s) -> %s", table.num_rows, n_rows,
             StudyKey(rules.key).value, StudyAggregate(rules.aggregate).value, target)
    return table


def read_studies(out: str | Path) -> pa.Table:
    path = studies_path(out)
    if not path.is_file():
        raise FileNotFoundError(f"no study table in {out} ({STUDIES_DIR}/{STUDIES_FILE}); score it first "
                                "(every run writes it), or run `fracture-batch score` again to rebuild it")
    return pq.read_table(path)


def remove_studies(out: str | Path) -> None:
    """--overwrite: the study table goes with the parts it was built from."""
    studies_path(out).unlink(missing_ok=True)
