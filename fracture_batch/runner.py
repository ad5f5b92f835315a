"""The local scoring runner: discover -> decode -> batch -> predict -> Parquet, overlapped.

Threads and bounded queues (memory is flat in the number of files):

    discovery thread --files_q--> N decode workers --decoded_q--> inference thread
        --rows_q--> writer thread (a part every ``part_rows`` rows or ``part_seconds``)

Every fatal problem (inputs missing, output not writable or locked, model unreadable,
engine for another GPU, another model's results in --out) is raised before any input
is read. Once running, bad inputs become error rows; only the sink (disk full) or a
backend crash stops the run, and then committed parts stay and a re-run resumes.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fracture_batch import sink
from fracture_batch.backends import BackendKind, BackendOptions, DeviceKind
from fracture_batch.decode_stage import DecodeOptions
from fracture_batch.discover import DiscoveryStats, check_roots, is_within, iter_inputs, resolve_roots
from fracture_batch.predictor import Predictor
from fracture_batch.rows import rows_to_table, schema
from fracture_batch.runner_support import (
    DecodeIsolation,
    Stages,
    create_decoder_factory,
    resolve_threads,
    run_info,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreConfig:
    inputs: tuple[str, ...]
    model: str
    out: str
    backend: BackendKind = BackendKind.AUTO
    device: DeviceKind = DeviceKind.AUTO
    decoder: str = "auto"  # decoders.DecoderKind value
    batch_size: int = 32
    decode_workers: int = 0  # 0: resolve_threads decides
    intra_op_threads: int = 0  # 0: resolve_threads decides
    decode_isolation: DecodeIsolation = DecodeIsolation.PROCESS
    decode_timeout: float = 60.0
    part_rows: int = 5000
    part_seconds: float = 60.0
    resume: bool = True
    overwrite: bool = False
    max_pixels: int = 100_000_000
    identifiers: str = "hash"  # decoders.IdentifierMode: hash | keep | drop DICOM UIDs
    uid_salt: str = ""
    amp: bool = False
    engine_cache_dir: str | None = None  # default: <out>/_engine_cache (nothing outside --out)


@dataclass
class ScoreSummary:
    out: str
    files_seen: int = 0
    already_done: int = 0
    scored: int = 0
    ok: int = 0
    errors: int = 0
    parts_written: int = 0
    seconds: float = 0.0
    images_per_s: float = 0.0
    backend: str = ""
    backend_detail: str = ""
    backend_reason: str = ""
    device: str = ""
    decoder: str = ""
    threads: dict[str, int] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    dataset_rows: int = 0
    started_at: str = ""
    finished_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


class ScoreAborted(Exception):
    """The run stopped early (disk full, interrupt, backend crash); committed parts are intact."""


def score(
    cfg: ScoreConfig,
    *,
    on_progress: Callable[[int, int | None], None] | None = None,
    on_start: Callable[[ScoreSummary], None] | None = None,
) -> ScoreSummary:
    """Score ``cfg.inputs`` into the Parquet dataset ``cfg.out``; see the module docstring.

    ``on_start(summary)`` is called once the backend is loaded (backend/device/decoder
    chosen, before any input is read); ``on_progress(rows committed, total or None)``
    from the calling thread while the run goes.
    """
    started = time.time()
    roots = resolve_roots(cfg.inputs)
    try:
        check_roots(roots)
    except FileNotFoundError as exc:
        raise sink.SinkError(str(exc)) from None
    out = sink.prepare_output_dir(cfg.out)
    lock = sink.acquire_lock(out)
    try:
        return _score_locked(cfg, roots, out, started, on_progress, on_start)
    finally:
        lock.release()


def _score_locked(cfg, roots, out: Path, started: float, on_progress, on_start) -> ScoreSummary:
    threads = resolve_threads(cfg.decode_workers, cfg.intra_op_threads)
    engine_cache = cfg.engine_cache_dir or str(out / "_engine_cache")
    predictor = Predictor(
        cfg.model, backend=cfg.backend, device=cfg.device,
        options=BackendOptions(intra_op_threads=threads.intra_op, amp=cfg.amp, engine_cache_dir=engine_cache),
        decode_options=DecodeOptions(max_pixels=cfg.max_pixels, identifiers=cfg.identifiers, uid_salt=cfg.uid_salt),
    )
    index = prepare_dataset(cfg, out, predictor.model_sha256)
    decoder_name, make_decoder = create_decoder_factory(cfg, predictor, threads)
    summary = ScoreSummary(
        out=str(out), backend=predictor.resolution.backend.value, backend_detail=predictor.backend.description,
        backend_reason=predictor.resolution.reason, device=predictor.resolution.device.value, decoder=decoder_name,
        threads={"decode_workers": threads.decode_workers, "intra_op": threads.intra_op},
        started_at=iso_time(started),
    )
    log.info("scoring with %s; decoder %s; %d decode worker(s)", summary.backend_detail, decoder_name,
             threads.decode_workers)
    if on_start is not None:
        on_start(summary)
    stats = DiscoveryStats()
    excluded = [str(out)] if any(is_within(out, r) for r in roots) else []
    files = iter_inputs(roots, exclude=excluded, stats=stats)
    sch = schema(predictor.spec, run_info(cfg, summary))
    writer = sink.PartWriter(out, sink.new_run_id())
    stages = Stages(
        files=files, already_done=index, decoder_factory=make_decoder, workers=threads.decode_workers,
        batch_size=cfg.batch_size, predict=predictor.predict_results,
        write=lambda rows: writer.write(rows_to_table(rows, sch)),
        part_rows=cfg.part_rows, part_seconds=cfg.part_seconds, on_progress=on_progress,
    )
    t0 = time.perf_counter()
    try:
        stages.run()
    except (sink.SinkError, ScoreAborted):
        raise
    except Exception as exc:  # backend crash mid-run (e.g. CUDA error): stop, keep what is committed
        raise ScoreAborted(
            f"run stopped: {exc.__class__.__name__}: {exc}. {writer.rows_written} row(s) in committed parts "
            "are intact; re-run the same command to resume"
        ) from exc
    finally:
        predictor.close()
        _fill_summary(summary, stages, stats, writer, time.perf_counter() - t0)
    summary.dataset_rows = len(index) + writer.rows_written
    summary.finished_at = iso_time(time.time())
    payload = summary.to_dict() | {"spec": predictor.spec.to_dict(), "versions": package_versions(),
                                   "model": str(predictor.model_path), "model_sha256": predictor.model_sha256}
    try:
        sink.write_success(out, payload)
    except OSError as exc:  # e.g. the disk filled up just now: every row is committed already
        raise sink.SinkError(
            f"all rows are committed, but {sink.SUCCESS_NAME} could not be written in {out}: "
            f"{exc.strerror or exc}; free space and re-run the same command to write it"
        ) from None
    return summary


def prepare_dataset(cfg: ScoreConfig, out: Path, model_sha: str) -> sink.ResumeIndex:
    """Make ``out`` ready for a run (both engines): clear it (--overwrite) or index what
    is committed (resume), refusing results of another model."""
    sink.remove_stale_temp(out)
    if cfg.overwrite:
        n = sink.clear_output(out)
        if n:
            log.info("--overwrite: removed %d existing part(s) from %s", n, out)
        return sink.ResumeIndex()
    parts = sink.committed_parts(out)
    if not parts:
        (out / sink.SUCCESS_NAME).unlink(missing_ok=True)
        return sink.ResumeIndex()
    if not cfg.resume:
        raise sink.SinkError(
            f"{out} already holds {len(parts)} part(s); re-run with --resume to continue it, "
            "or --overwrite to start again"
        )
    previous = sink.existing_model_sha(parts)
    if previous and previous != model_sha:
        raise sink.SinkError(
            f"{out} holds results of another model (sha256 {previous[:12]}…, this one {model_sha[:12]}…); "
            "use --overwrite to replace them, or another --out"
        )
    index = sink.ResumeIndex.from_parts(parts)
    (out / sink.SUCCESS_NAME).unlink(missing_ok=True)
    log.info("resuming: %d path(s) already committed in %d part(s)", len(index), len(parts))
    return index


def _fill_summary(summary: ScoreSummary, stages: Stages, stats: DiscoveryStats, writer, seconds: float) -> None:
    summary.files_seen = stats.files
    summary.already_done = stages.already_done_count
    summary.scored = stages.rows_committed
    summary.ok = stages.ok_committed
    summary.errors = stages.rows_committed - stages.ok_committed
    summary.parts_written = len(writer.parts)
    summary.seconds = round(seconds, 3)
    summary.images_per_s = round(stages.rows_committed / seconds, 2) if seconds > 0 else 0.0
    summary.skipped = list(stats.skipped)


def iso_time(t: float) -> str:
    """UTC ISO-8601 for _SUCCESS."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def package_versions() -> dict[str, str]:
    """Versions of the packages a score depends on, for _SUCCESS."""
    from importlib import metadata

    out = {}
    for pkg in ("fracture-batch", "onnxruntime", "torch", "pyarrow", "numpy", "pillow", "pydicom", "tensorrt",
                "onnxruntime-gpu", "nvidia-dali-cuda130"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out

