"""The Parquet sink: an output directory that is a Parquet dataset, written so nothing is lost.

- Each part is written to a hidden temporary name, fsynced, renamed to
  ``part-<run id>-<seq>.parquet`` and the directory fsynced: a killed run leaves only
  complete parts (plus temporary files that the next run removes).
- Resume (``resume``): the paths in committed parts are skipped by the next run.
- One writer at a time: an exclusive ``fcntl`` lock (``filelock``) on ``.fracture-batch.lock``,
  released by the kernel even when the holder is SIGKILLed.
- ``_SUCCESS`` (JSON) is written last, atomically; it is removed when a run starts.
Only names this module writes are ever removed (``--overwrite``); nothing is written
outside the output directory.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

LOCK_NAME = ".fracture-batch.lock"
SUCCESS_NAME = "_SUCCESS"
PART_GLOB = "part-*.parquet"
TMP_PREFIX = ".tmp-part-"


class SinkError(Exception):
    """A fatal output problem; the message says what to do."""


class OutputLockedError(SinkError):
    pass


class DiskFullError(SinkError):
    pass


def prepare_output_dir(out: str | Path) -> Path:
    """Create ``out`` (its parent must exist) and prove it is writable, before any input is read."""
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise SinkError(f"--out {out} exists and is not a directory")
    if not out.exists():
        if not out.parent.is_dir():
            what = "is a file, not a directory" if out.parent.exists() else "does not exist"
            raise SinkError(f"cannot create --out {out}: its parent directory {out.parent} {what}")
        try:
            out.mkdir()
        except OSError as exc:
            raise SinkError(f"cannot create output directory {out}: {exc.strerror or exc}") from None
    probe = out / f".write-probe-{uuid.uuid4().hex}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise SinkError(f"output directory {out} is not writable: {exc.strerror or exc}") from None
    return out


def acquire_lock(out: Path):
    """Exclusive, non-blocking lock on the output directory; returns the held lock."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(out / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise OutputLockedError(
            f"another fracture-batch run is writing to {out} (lock {out / LOCK_NAME} is held). "
            "Wait for it to finish, or choose another --out."
        ) from None
    except OSError as exc:  # e.g. ELOOP: filelock refuses a symbolic link planted there
        raise SinkError(
            f"cannot lock {out / LOCK_NAME}: {exc.strerror or exc}. If it is a symbolic link, "
            "remove it: the tool only writes real files inside --out."
        ) from None
    return lock


def committed_parts(out: Path) -> list[Path]:
    return sorted(p for p in out.glob(PART_GLOB) if p.is_file())


def remove_stale_temp(out: Path) -> int:
    """Temporary parts of a killed run: never committed, their inputs are redone."""
    n = 0
    for p in out.glob(TMP_PREFIX + "*"):
        p.unlink(missing_ok=True)
        n += 1
    if n:
        log.info("removed %d uncommitted temporary part(s) left by an interrupted run", n)
    return n


def clear_output(out: Path) -> int:
    """--overwrite: remove this tool's parts and _SUCCESS, nothing else."""
    parts = committed_parts(out)
    for p in parts:
        p.unlink()
    (out / SUCCESS_NAME).unlink(missing_ok=True)
    remove_stale_temp(out)
    fsync_dir(out)
    return len(parts)


class PartWriter:
    """Writes numbered parts atomically; raises DiskFullError on ENOSPC."""

    def __init__(self, out: Path, run_id: str, *, compression: str = "zstd"):
        self.out = out
        self.run_id = run_id
        self.compression = compression
        self.seq = 0
        self.rows_written = 0
        self.parts: list[Path] = []

    def write(self, table: pa.Table) -> Path:
        final = self.out / f"part-{self.run_id}-{self.seq:05d}.parquet"
        tmp = self.out / f"{TMP_PREFIX}{self.run_id}-{self.seq:05d}.parquet"
        try:
            self._write_file(table, tmp)
            os.replace(tmp, final)
            fsync_dir(self.out)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(
                    f"disk full while writing part {final.name} in {self.out}; committed parts "
                    f"are intact ({len(self.parts)} this run, {self.rows_written} rows). Free space "
                    "and re-run the same command to resume."
                ) from None
            raise SinkError(f"cannot write part {final.name} in {self.out}: {exc.strerror or exc}") from None
        self.seq += 1
        self.rows_written += table.num_rows
        self.parts.append(final)
        log.debug("committed %s (%d rows)", final.name, table.num_rows)
        return final

    def _write_file(self, table: pa.Table, tmp: Path) -> None:
        with open(tmp, "wb") as f:
            pq.write_table(table, f, compression=self.compression)
            f.flush()
            os.fsync(f.fileno())


def write_success(out: Path, summary: dict[str, Any]) -> Path:
    path = out / SUCCESS_NAME
    tmp = out / f".{SUCCESS_NAME}.tmp"
    # Exclusive create after unlinking: a symbolic link planted at the temporary name is
    # replaced, never written through (nothing is written outside --out).
    tmp.unlink(missing_ok=True)
    with open(tmp, "x", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(out)
    return path


def read_success(out: str | Path) -> dict[str, Any] | None:
    path = Path(out) / SUCCESS_NAME
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def fsync_dir(path: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def new_run_id() -> str:
    import time

    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
