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
from typing import Callable

from fracture_batch.backends import BackendOptions
from fracture_batch.decode.workers import DecodeOptions
from fracture_batch.scoring import sink
from fracture_batch.scoring.config import ScoreAborted, ScoreConfig, ScoreSummary
from fracture_batch.scoring.discover import DiscoveryStats
from fracture_batch.scoring.pipeline import Stages, create_decoder_factory, run_info, spawn_decode_children
from fracture_batch.scoring.predictor import Predictor
from fracture_batch.scoring.rows import rows_to_table, schema
from fracture_batch.scoring.session import Counts, Session, open_session
from fracture_batch.scoring.threads import resolve_threads

log = logging.getLogger(__name__)


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
    with open_session(cfg) as session:
        return _score(session, on_progress, on_start)


def _score(session: Session, on_progress, on_start) -> ScoreSummary:
    cfg, out = session.cfg, session.out
    threads = resolve_threads(cfg.decode_workers, cfg.intra_op_threads)
    children = spawn_decode_children(cfg, threads)  # they start up while the model loads
    try:
        return _run(session, threads, children, on_progress, on_start)
    finally:
        for child in children:  # not adopted by a decoder (e.g. the run chose DALI, or failed)
            child.kill()


def _run(session: Session, threads, children: list, on_progress, on_start) -> ScoreSummary:
    cfg, out = session.cfg, session.out
    engine_cache = cfg.engine_cache_dir or str(out / "_engine_cache")
    predictor = Predictor(
        cfg.model, backend=cfg.backend, device=cfg.device,
        options=BackendOptions(intra_op_threads=threads.intra_op, amp=cfg.amp, engine_cache_dir=engine_cache,
                               inference_precision=cfg.inference_precision,
                               openvino_cache_dir=cfg.openvino_cache_dir,
                               device_id=cfg.device_id, batch_size=cfg.batch_size),
        decode_options=DecodeOptions(max_pixels=cfg.max_pixels, identifiers=cfg.identifiers, uid_salt=cfg.uid_salt,
                                     decode_reduce=cfg.decode_reduce),
    )
    index = session.prepare(predictor.model_sha256)
    decoder_name, make_decoder = create_decoder_factory(cfg, predictor, threads, children)
    summary = session.new_summary(
        backend=predictor.resolution.backend.value, backend_detail=predictor.backend.description,
        backend_reason=predictor.resolution.reason, device=predictor.resolution.device.value, decoder=decoder_name,
        threads={"decode_workers": threads.decode_workers, "intra_op": threads.intra_op},
    )
    log.info("scoring with %s; decoder %s; %d decode worker(s)", summary.backend_detail, decoder_name,
             threads.decode_workers)
    if on_start is not None:
        on_start(summary)
    stats = DiscoveryStats()
    sch = schema(predictor.spec, run_info(cfg, summary))
    writer = sink.PartWriter(out, sink.new_run_id())
    stages = Stages(
        files=session.discover(stats), already_done=index, decoder_factory=make_decoder,
        workers=threads.decode_workers, batch_size=cfg.batch_size, predict=predictor.predict_results,
        submit=predictor.submit_results,
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
    summary.decode_paths = dict(stages.decode_paths)
    counts = Counts(already_done=stages.already_done_count, scored=stages.rows_committed,
                    ok=stages.ok_committed, parts_written=len(writer.parts), seconds=time.perf_counter() - t0)
    return session.finish(summary, counts, stats, spec=predictor.spec, model=str(predictor.model_path),
                          model_sha256=predictor.model_sha256)
