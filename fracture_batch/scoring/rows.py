"""The output row schema, shared by the local runner and the Ray Predictor.

One row per input file. Required columns (ARCHITECTURE.md "Rows"): path, relpath,
status, error, prob_fractured, pred_label, threshold, model_sha256. Then decode facts
and timings, and a fixed set of DICOM header columns so every part has one schema.
DICOM identifiers (Study/Series/SOP Instance UIDs) arrive already treated by the decoder
per ``decode.IdentifierMode`` (hashed by default, kept or dropped on request); the
columns exist either way. No file name is ever built from header values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import pyarrow as pa

from fracture_batch.decode.types import DICOM_COLUMNS, INT_DICOM_COLUMNS, dicom_columns  # noqa: F401 (re-exported)
from fracture_batch.model.spec import SPEC_METADATA_KEY, ModelSpec

STATUS_OK = "ok"
STATUS_ERROR = "error"
RUN_METADATA_KEY = "fracture_batch.run"

_FIELDS = [
    pa.field("path", pa.string(), nullable=False),
    pa.field("relpath", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("error", pa.string()),
    pa.field("prob_fractured", pa.float32()),
    pa.field("pred_label", pa.string()),
    pa.field("threshold", pa.float32()),
    pa.field("model_sha256", pa.string()),
    pa.field("format", pa.string()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("bit_depth", pa.int16()),
    pa.field("file_size", pa.int64()),
    pa.field("decode_ms", pa.float32()),
    pa.field("infer_ms", pa.float32()),  # batch inference time / batch size
    *(pa.field(c, pa.int32() if c in INT_DICOM_COLUMNS else pa.string()) for c in DICOM_COLUMNS),
]
COLUMNS = tuple(f.name for f in _FIELDS)
REQUIRED_COLUMNS = COLUMNS[:8]


@dataclass(frozen=True)
class RowContext:
    """What every row of one run shares."""

    spec: ModelSpec
    model_sha256: str


def schema(spec: ModelSpec, run_meta: str | None = None) -> pa.Schema:
    """The schema with the spec JSON (and optional run facts) in its metadata."""
    meta = {SPEC_METADATA_KEY: spec.to_json()}
    if run_meta is not None:
        meta[RUN_METADATA_KEY] = run_meta
    return pa.schema(_FIELDS, metadata=meta)


def base_row(path: str, relpath: str, ctx: RowContext, file_size: int = -1) -> dict[str, Any]:
    return {
        "path": path,
        "relpath": relpath,
        "threshold": float(ctx.spec.threshold),
        "model_sha256": ctx.model_sha256,
        "file_size": file_size if file_size >= 0 else None,
    }


def error_row(path: str, relpath: str, message: str, ctx: RowContext, **extra: Any) -> dict[str, Any]:
    row = base_row(path, relpath, ctx, extra.pop("file_size", -1))
    row.update(extra)
    row.update(status=STATUS_ERROR, error=message or "unknown error", prob_fractured=None, pred_label=None)
    return row


def ok_row(path: str, relpath: str, prob: float, label: str, ctx: RowContext, **extra: Any) -> dict[str, Any]:
    row = base_row(path, relpath, ctx, extra.pop("file_size", -1))
    row.update(extra)
    row.update(status=STATUS_OK, error=None, prob_fractured=float(prob), pred_label=label)
    return row


def as_text(value: str) -> str:
    """Any OS or header string as valid UTF-8 text. A file name that is not UTF-8 (a
    Latin-1 name from an old archive arrives as surrogate escapes) gets backslash escapes
    (``caf\\xe9.png``) instead of failing its whole Parquet part and, on every resume, the
    run. Valid text is returned unchanged; the sink's resume digests use the same form."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        pass
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # lone surrogates that are not escaped bytes
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def rows_to_table(rows: Iterable[Mapping[str, Any]], sch: pa.Schema) -> pa.Table:
    clean = [{k: as_text(v) if isinstance(v, str) else v for k, v in r.items()} for r in rows]
    return pa.Table.from_pylist(clean, schema=sch)


def rows_to_columns(rows: list[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Rows -> dict of column lists (the Predictor's columnar output), strings as_text."""
    return {c: [as_text(v) if isinstance(v, str) else v for v in (r.get(c) for r in rows)] for c in COLUMNS}
