"""Ray's ``write_parquet`` output made into the sink's contract.

Ray write tasks name their own files and write them in place (no temporary name, no
fsync), so they write into a staging directory inside --out (same filesystem, so a
rename is atomic) and the driver commits them:

- after the write: every staged file is checked (a readable Parquet footer: the footer
  is written last, so a file cut short by a kill has none), fsynced, renamed to the
  sink's ``part-<run id>-<seq>.parquet`` and the directory fsynced;
- at the start of the next run (under the lock), staging left by a killed run is
  recovered: complete files are re-committed through ``sink.PartWriter`` (temp name,
  fsync, rename) minus any path already committed, so a path is never written twice
  even if the local runner scored those inputs in between; incomplete files are dropped
  and their inputs are scored again.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fracture_batch.scoring import resume, sink

log = logging.getLogger(__name__)

STAGING_PREFIX = ".ray-staging-"


def staging_dir(out: Path, run_id: str) -> Path:
    return out / f"{STAGING_PREFIX}{run_id}"


def stale_staging(out: Path) -> list[Path]:
    return sorted(p for p in out.glob(STAGING_PREFIX + "*") if p.is_dir())


def _complete(path: Path) -> int | None:
    """Row count of a readable Parquet file, None when it is truncated or corrupt."""
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception:  # pyarrow raises ArrowInvalid/OSError variants for a cut-short file
        return None


def staged_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.parquet") if p.is_file())


def commit_staged(out: Path, directory: Path, run_id: str, expected_rows: int) -> list[Path]:
    """Rename this run's staged files into --out as parts, once they hold every row.

    A count other than ``expected_rows`` (files written where the driver cannot see them,
    a retried write that left a duplicate) commits nothing: the staging directory stays,
    and the next run's ``recover`` commits what is complete, once per path.
    """
    files = staged_files(directory)
    counts = [_complete(f) for f in files]
    if any(n is None for n in counts) or sum(counts) != expected_rows:
        raise sink.SinkError(
            f"Ray staged {sum(n or 0 for n in counts)} complete row(s) for {expected_rows} input(s) in {directory}: "
            "is --out on storage that the driver and every worker node see at the same path? Nothing was "
            "committed; re-run the same command to recover the staged rows and score the rest"
        )
    parts: list[Path] = []
    for seq, f in enumerate(files):
        with open(f, "rb") as fh:  # make the bytes durable before the name is
            os.fsync(fh.fileno())
        final = out / f"part-{run_id}-{seq:05d}.parquet"
        os.replace(f, final)
        parts.append(final)
    sink.fsync_dir(out)
    shutil.rmtree(directory, ignore_errors=True)
    return parts


def recover(out: Path, *, discard: bool = False) -> int:
    """Commit complete files of staging dirs left by killed runs; returns rows recovered.

    ``discard`` (--overwrite): remove them instead.
    """
    dirs = stale_staging(out)
    if not dirs:
        return 0
    recovered = 0
    if not discard:
        index = resume.ResumeIndex.from_parts(sink.committed_parts(out))
        writer = sink.PartWriter(out, sink.new_run_id() + "-recovered")
        written: set[str] = set()  # staged dirs of two killed runs never overlap, but be sure
        for d in dirs:
            for f in staged_files(d):
                if _complete(f) is None:
                    log.info("dropping incomplete staged file %s (its inputs are scored again)", f)
                    continue
                table = pq.read_table(f)
                paths = table.column("path").to_pylist()
                keep = [p not in index and p not in written for p in paths]
                if not all(keep):
                    table = table.filter(pa.array(keep, pa.bool_()))
                if table.num_rows:
                    writer.write(table)
                    written.update(table.column("path").to_pylist())
                    recovered += table.num_rows
        if recovered:
            log.info("recovered %d row(s) staged by an interrupted Ray run", recovered)
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    sink.fsync_dir(out)
    return recovered
