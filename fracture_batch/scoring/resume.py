"""Resume: what a re-run with the same ``--out`` skips, and the checks before it appends.

The set of paths in committed parts is read column-projected, batch by batch, and kept
as sorted 16-byte BLAKE2b digests (16 bytes a path; 1M paths = 16 MB). Both engines call
``prepare_dataset`` (through ``session``); the Ray engine first recovers what a killed
run staged (``ray.staging``), so its rows are counted here too.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow.parquet as pq

from fracture_batch.model.spec import SPEC_METADATA_KEY
from fracture_batch.scoring import sink
from fracture_batch.scoring.config import ScoreConfig
from fracture_batch.scoring.rows import as_text

log = logging.getLogger(__name__)


def path_digest(path: str) -> bytes:
    # The path as the rows store it (rows.as_text), so a non-UTF-8 file name found again
    # on disk matches its committed row; identical to plain UTF-8 for ordinary names.
    return hashlib.blake2b(as_text(path).encode("utf-8"), digest_size=16).digest()


class ResumeIndex:
    """Membership test for paths already committed, 16 bytes a path."""

    def __init__(self, digests: np.ndarray | None = None):
        d = digests if digests is not None else np.empty(0, dtype="S16")
        self._sorted = np.sort(d)

    def __len__(self) -> int:
        return int(self._sorted.size)

    def __contains__(self, path: str) -> bool:
        if not self._sorted.size:
            return False
        key = np.array(path_digest(path), dtype="S16")
        i = int(np.searchsorted(self._sorted, key))
        return i < self._sorted.size and self._sorted[i] == key

    @classmethod
    def from_parts(cls, parts: Iterable[Path], batch_rows: int = 65536) -> "ResumeIndex":
        import pyarrow.dataset as ds

        parts = [str(p) for p in parts]
        if not parts:
            return cls()
        chunks: list[np.ndarray] = []
        dataset = ds.dataset(parts, format="parquet")
        for batch in dataset.to_batches(columns=["path"], batch_size=batch_rows):
            paths = batch.column(0).to_pylist()
            chunks.append(np.array([path_digest(p) for p in paths], dtype="S16"))
        return cls(np.concatenate(chunks) if chunks else None)


def existing_model_sha(parts: list[Path]) -> str | None:
    """model_sha256 of the dataset already in --out (read from one part's first row)."""
    if not parts:
        return None
    pf = pq.ParquetFile(parts[0])
    if pf.metadata.num_rows == 0:
        return None
    col = pf.read_row_group(0, columns=["model_sha256"]).column(0)
    return col[0].as_py() if len(col) else None


def existing_spec_json(parts: list[Path]) -> str | None:
    if not parts:
        return None
    meta = pq.read_schema(parts[0]).metadata or {}
    raw = meta.get(SPEC_METADATA_KEY.encode())
    return raw.decode() if raw else None


def prepare_dataset(cfg: ScoreConfig, out: Path, model_sha: str) -> ResumeIndex:
    """Make ``out`` ready for a run (both engines): clear it (--overwrite) or index what
    is committed (resume), refusing results of another model."""
    sink.remove_stale_temp(out)
    if cfg.overwrite:
        n = sink.clear_output(out)
        if n:
            log.info("--overwrite: removed %d existing part(s) from %s", n, out)
        return ResumeIndex()
    parts = sink.committed_parts(out)
    if not parts:
        (out / sink.SUCCESS_NAME).unlink(missing_ok=True)
        return ResumeIndex()
    if not cfg.resume:
        raise sink.SinkError(
            f"{out} already holds {len(parts)} part(s); re-run with --resume to continue it, "
            "or --overwrite to start again"
        )
    previous = existing_model_sha(parts)
    if previous and previous != model_sha:
        raise sink.SinkError(
            f"{out} holds results of another model (sha256 {previous[:12]}…, this one {model_sha[:12]}…); "
            "use --overwrite to replace them, or another --out"
        )
    index = ResumeIndex.from_parts(parts)
    (out / sink.SUCCESS_NAME).unlink(missing_ok=True)
    log.info("resuming: %d path(s) already committed in %d part(s)", len(index), len(parts))
    return index
