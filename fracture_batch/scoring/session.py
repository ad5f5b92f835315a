"""The run skeleton both engines share: pre-flight, lock, resume, summary, ``_SUCCESS``.

    with open_session(cfg) as session:          inputs checked, --out ready and locked
        index = session.prepare(model_sha)      --overwrite / resume / another model refused
        summary = session.new_summary(...)      what was chosen, before any input is read
        files = session.discover(stats)         inputs, never the output directory itself
        ... the engine scores files ...
        session.finish(summary, counts, ...)    counts filled in, the study table rebuilt from
                                                every committed row, _SUCCESS written last

The local runner (``local``) and the Ray engine (``ray.engine``) differ only in the
"scores files" step, so every guarantee around it is written once, here.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from fracture_batch.machine import package_versions
from fracture_batch.model.spec import ModelSpec
from fracture_batch.scoring import sink, studies
from fracture_batch.scoring.config import ScoreConfig, ScoreSummary
from fracture_batch.scoring.discover import DiscoveryStats, InputFile, check_roots, is_within, iter_inputs, resolve_roots
from fracture_batch.scoring.resume import ResumeIndex, prepare_dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Counts:
    """What one run did, as the engine counted it."""

    already_done: int
    scored: int
    ok: int
    parts_written: int
    seconds: float


@dataclass
class Session:
    cfg: ScoreConfig
    roots: list[Path]
    out: Path
    started: float
    index: ResumeIndex | None = None

    def prepare(self, model_sha: str) -> ResumeIndex:
        self.index = prepare_dataset(self.cfg, self.out, model_sha)
        # Like _SUCCESS, the study table is only there once a run has completed.
        studies.remove_studies(self.out)
        return self.index

    def new_summary(self, *, backend: str, backend_detail: str, backend_reason: str, device: str, decoder: str,
                    threads: dict[str, int]) -> ScoreSummary:
        return ScoreSummary(out=str(self.out), backend=backend, backend_detail=backend_detail,
                            backend_reason=backend_reason, device=device, decoder=decoder, threads=threads,
                            started_at=iso_time(self.started))

    def discover(self, stats: DiscoveryStats) -> Iterator[InputFile]:
        # An output directory inside an input root is never scored as input.
        excluded = [str(self.out)] if any(is_within(self.out, r) for r in self.roots) else []
        return iter_inputs(self.roots, exclude=excluded, stats=stats)

    def finish(self, summary: ScoreSummary, counts: Counts, stats: DiscoveryStats, *, spec: ModelSpec,
               model: str, model_sha256: str, extra: dict[str, Any] | None = None,
               versions: dict[str, str] | None = None) -> ScoreSummary:
        """Fill the summary, rebuild the study table from every committed row (so resumed
        and Ray runs give the same table), then write ``_SUCCESS`` (last: its presence
        means the run completed)."""
        record_counts(summary, counts, stats, dataset_rows=len(self.index or ()) + counts.scored)
        rules = studies.StudyRules(self.cfg.study_key, self.cfg.study_aggregate)
        try:
            table = studies.build_studies(self.out, rules, spec)
        except OSError as exc:  # e.g. disk full: the image rows are committed, only the summary tables are not
            raise sink.SinkError(
                f"all rows are committed, but the study table could not be written in {self.out}: "
                f"{exc.strerror or exc}; free space and re-run the same command to write it"
            ) from None
        payload = summary.to_dict() | {"spec": spec.to_dict(), "versions": package_versions() | (versions or {}),
                                       "model": model, "model_sha256": model_sha256,
                                       "studies": {"path": studies.STUDIES_DIR, "n": table.num_rows if table else 0,
                                                   "rules": rules.to_dict()}} | (extra or {})
        try:
            sink.write_success(self.out, payload)
        except OSError as exc:  # e.g. the disk filled up just now: every row is committed already
            raise sink.SinkError(
                f"all rows are committed, but {sink.SUCCESS_NAME} could not be written in {self.out}: "
                f"{exc.strerror or exc}; free space and re-run the same command to write it"
            ) from None
        return summary


@contextlib.contextmanager
def open_session(cfg: ScoreConfig, *, model_must_exist: bool = False) -> Iterator[Session]:
    """Every check that needs no model and reads no input, then the output lock.

    Fatal problems (inputs missing, --out not writable or locked) raise ``SinkError``
    here, before any input is read; the lock is released however the run ends.
    """
    started = time.time()
    roots = resolve_roots(cfg.inputs)
    try:
        check_roots(roots)
    except FileNotFoundError as exc:
        raise sink.SinkError(str(exc)) from None
    if model_must_exist and not Path(cfg.model).is_file():
        from fracture_batch.backends import BackendError

        raise BackendError(f"model file not found: {cfg.model}")
    out = sink.prepare_output_dir(cfg.out)
    lock = sink.acquire_lock(out)
    try:
        yield Session(cfg, roots, out, started)
    finally:
        lock.release()


def record_counts(summary: ScoreSummary, counts: Counts, stats: DiscoveryStats, *, dataset_rows: int) -> None:
    summary.files_seen = stats.files
    summary.already_done = counts.already_done
    summary.scored = counts.scored
    summary.ok = counts.ok
    summary.errors = counts.scored - counts.ok
    summary.parts_written = counts.parts_written
    summary.seconds = round(counts.seconds, 3)
    summary.images_per_s = round(counts.scored / counts.seconds, 2) if counts.seconds > 0 else 0.0
    summary.skipped = list(stats.skipped)
    summary.dataset_rows = dataset_rows
    summary.finished_at = iso_time(time.time())


def iso_time(t: float) -> str:
    """UTC ISO-8601 for _SUCCESS."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
