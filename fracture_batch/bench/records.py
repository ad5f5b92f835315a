"""Result records: one schema for every measurement, written as JSON, Parquet, markdown.

Every benchmark (ceiling, model-only, decode-only, end-to-end, acceptance) emits
``Measurement`` rows; a run is the rows plus the machine description. JSON keeps the
machine description as an object; Parquet keeps it in the schema metadata (key
``fracture_batch.machine``) and the headline fields as columns, so a DataFrame of
many runs from many machines stays self-describing.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

SCHEMA_VERSION = 1
MACHINE_METADATA_KEY = "fracture_batch.machine"
RUN_METADATA_KEY = "fracture_batch.run"


@dataclass
class Measurement:
    suite: str  # ceiling | model | decode | e2e | acceptance
    name: str  # a readable label unique within the run
    backend: str = ""  # onnxruntime | torch | tensorrt | naive | python | dali-cpu | numpy ...
    precision: str = ""  # fp32 | fp16 | bf16 | int8
    device: str = "cpu"
    batch_size: int | None = None
    format: str = ""  # decode/e2e: jpeg8 | png8 | png16 | dicom | dicom-j2k | mixed
    regime: str = ""  # e2e: small | archive
    n_images: int | None = None
    repeats: int | None = None
    warmup: int | None = None
    images_per_s: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_mean_ms: float | None = None
    latency_std_ms: float | None = None
    latency_min_ms: float | None = None
    ms_per_megapixel: float | None = None
    gflops: float | None = None  # achieved, model-only and ceilings
    ceiling_gflops: float | None = None
    fraction_of_ceiling: float | None = None
    build_s: float | None = None  # session / engine build, excluded from latency
    ratio_vs_naive: float | None = None
    fraction_of_model_only: float | None = None
    bound_by: str = ""
    threads: int | None = None
    status: str = "ok"  # ok | error | skipped | pass | fail
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: _clean(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Measurement":
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if isinstance(kw.get("extra"), str):
            kw["extra"] = json.loads(kw["extra"] or "{}")
        return cls(**kw)


COLUMNS = tuple(f.name for f in dataclasses.fields(Measurement))


def _clean(v: Any) -> Any:
    """NaN/inf are not JSON: store None so every reader sees a missing value."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


@dataclass
class BenchRun:
    machine: dict[str, Any]
    measurements: list[Measurement]
    run: dict[str, Any] = field(default_factory=dict)  # options, started/finished, command

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "run": _clean(self.run),
            "machine": _clean(self.machine),
            "measurements": [m.to_dict() for m in self.measurements],
        }

    def extend(self, rows: Iterable[Measurement]) -> None:
        self.measurements.extend(rows)


def write_json(run: BenchRun, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(run.to_dict(), indent=1, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def read_json(path: str | Path) -> BenchRun:
    d = json.loads(Path(path).read_text())
    return BenchRun(
        machine=d.get("machine", {}), run=d.get("run", {}),
        measurements=[Measurement.from_dict(m) for m in d.get("measurements", [])],
    )


def to_table(run: BenchRun):
    """A pyarrow Table: one row per measurement, machine headline fields as columns."""
    import pyarrow as pa

    m = run.machine
    rows = []
    for meas in run.measurements:
        r = meas.to_dict()
        r["extra"] = json.dumps(r["extra"], sort_keys=True)
        r["machine_cpu"] = m.get("cpu_model", "")
        r["machine_gpu"] = m.get("gpu", {}).get("name", "") if isinstance(m.get("gpu"), dict) else ""
        r["run_id"] = run.run.get("run_id", "")
        rows.append(r)
    schema = pa.schema(
        [(c, _arrow_type(c)) for c in COLUMNS]
        + [("machine_cpu", pa.string()), ("machine_gpu", pa.string()), ("run_id", pa.string())]
    ).with_metadata({
        MACHINE_METADATA_KEY: json.dumps(_clean(m), sort_keys=True),
        RUN_METADATA_KEY: json.dumps(_clean(run.run), sort_keys=True),
    })
    return pa.Table.from_pylist(rows, schema=schema)


def _arrow_type(col: str):
    import pyarrow as pa

    f = {f.name: f for f in dataclasses.fields(Measurement)}[col]
    t = str(f.type)
    if t.startswith("int"):
        return pa.int64()
    if t.startswith("float"):
        return pa.float64()
    return pa.string()


def write_parquet(run: BenchRun, path: str | Path) -> Path:
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(to_table(run), tmp)
    tmp.replace(path)
    return path


def read_parquet_machine(path: str | Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta.get(MACHINE_METADATA_KEY.encode(), b"{}"))
