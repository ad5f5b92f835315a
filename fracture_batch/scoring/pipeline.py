"""The overlapped stages of a local run, and the decoder each worker creates.

``Stages.run()`` wires discovery, N decode workers, one inference thread and one
writer thread with bounded queues. Every blocking put/get has a timeout and checks the
stop event, so a failure anywhere (disk full, backend crash, Ctrl-C) stops all stages
promptly; the writer then commits the complete rows it holds (except on a sink error)
and the failure is raised in the caller's thread.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import Counter
from typing import Any, Callable, Iterable, Iterator

from fracture_batch.decode.workers import DecodeResult, ProcessDecoder, PythonDecoder
from fracture_batch.scoring.discover import InputFile
from fracture_batch.scoring.config import DecodeIsolation
from fracture_batch.scoring.rows import STATUS_OK
from fracture_batch.scoring.threads import Threads

log = logging.getLogger(__name__)

_POLL = 0.1  # seconds between stop checks while a queue is full/empty
_DONE = object()


def spawn_decode_children(cfg, threads: Threads) -> list:
    """Decode children started before the model loads, so their interpreter start-up and
    imports (~0.15 CPU-s each, a few % of a short run) overlap the model load instead of
    delaying the first batch. Only where the process-isolated Python decoders are the
    likely choice (a CUDA run picks DALI under ``auto``; unused children are killed)."""
    from fracture_batch.decode.workers import spawn_decode_child

    if (DecodeIsolation(cfg.decode_isolation) is not DecodeIsolation.PROCESS
            or cfg.decoder not in ("python", "auto") or cfg.device == "cuda"):
        return []
    return [spawn_decode_child() for _ in range(threads.decode_workers)]


def create_decoder_factory(cfg, predictor, threads: Threads, children: list | None = None
                           ) -> tuple[str, Callable[[], Any]]:
    """(name, factory) of the decoder each worker thread creates for itself. ``children``
    (``spawn_decode_children``): adopted by the process-isolated decoders, one each; the
    caller kills whatever is left in the list after the run."""
    from fracture_batch.decode.select import DecoderKind, resolve_decoder

    # "python" needs no DALI probe (importing DALI costs ~0.6 s and memory).
    kind = DecoderKind.PYTHON if cfg.decoder == "python" else resolve_decoder(
        cfg.decoder, device=predictor.resolution.device.value)
    spec, opts = predictor.spec, predictor.decode_options
    if kind is DecoderKind.DALI:
        from fracture_batch.decode.workers import DaliDecoder

        device = predictor.resolution.device.value
        if device == "cuda":
            device = f"cuda:{cfg.device_id}"  # the backend's GPU: the batch stays on that device
        return f"dali ({device})", lambda: DaliDecoder(spec, opts, batch_size=cfg.batch_size, device=device)
    if kind is DecoderKind.NVIMGCODEC:
        from fracture_batch.decode.workers import NvImageCodecDecoder

        device = predictor.resolution.device.value
        return f"nvimgcodec DICOM ({device})", lambda: NvImageCodecDecoder(spec, opts, batch_size=cfg.batch_size,
                                                                           device=device)
    if DecodeIsolation(cfg.decode_isolation) is DecodeIsolation.PROCESS:
        spare = children if children is not None else []

        def process_decoder() -> ProcessDecoder:
            try:
                child = spare.pop()  # atomic: worker threads call this concurrently
            except IndexError:
                child = None
            return ProcessDecoder(spec, opts, cfg.decode_timeout, child=child)

        return "python (process-isolated)", process_decoder
    return "python (threads)", lambda: PythonDecoder(spec, opts)


def run_info(cfg, summary) -> str:
    return json.dumps({"backend": summary.backend, "device": summary.device, "decoder": summary.decoder,
                       "started_at": summary.started_at, "batch_size": cfg.batch_size})


class Stopped(Exception):
    pass


class Stages:
    def __init__(
        self, *, files: Iterable[InputFile], already_done, decoder_factory: Callable[[], Any], workers: int,
        batch_size: int, predict: Callable[[list[DecodeResult]], list[dict]], write: Callable[[list[dict]], Any],
        part_rows: int, part_seconds: float, on_progress: Callable[[int, int | None], None] | None = None,
        submit: Callable[[list[DecodeResult]], Callable[[], list[dict]]] | None = None,
    ):
        self.files, self.already_done = files, already_done
        self.decoder_factory, self.workers, self.batch_size = decoder_factory, max(1, workers), max(1, batch_size)
        self.predict, self.write = predict, write
        # ``submit(batch)`` starts a batch and returns what finishes it (Predictor.submit_results):
        # the inference stage then collects batch N only after starting batch N + 1.
        self.submit = submit or self._predict_now
        self.part_rows, self.part_seconds = max(1, part_rows), part_seconds
        self.on_progress = on_progress or (lambda done, total: None)
        # How files were decoded (device / cpu:<why> / ...), for _SUCCESS; decoders that
        # do not say (the Python and DALI families) leave it empty.
        self.decode_paths: Counter = Counter()
        self._paths_lock = threading.Lock()
        depth = 2 * self.batch_size  # bounded: at most ~4 batches of tensors in flight
        self.files_q: queue.Queue = queue.Queue(maxsize=depth)
        self.decoded_q: queue.Queue = queue.Queue(maxsize=depth)
        self.rows_q: queue.Queue = queue.Queue(maxsize=8)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.discovered = 0
        self.discovery_done = False
        self.already_done_count = 0
        self.rows_committed = 0
        self.ok_committed = 0

    # ---- plumbing -------------------------------------------------------------------
    def _put(self, q: queue.Queue, item) -> None:
        while True:
            if self.stop.is_set():
                raise Stopped
            try:
                q.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue

    def _get(self, q: queue.Queue, timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.stop.is_set():
                raise Stopped
            wait = _POLL if deadline is None else min(_POLL, deadline - time.monotonic())
            if wait <= 0:
                raise queue.Empty
            try:
                return q.get(timeout=wait)
            except queue.Empty:
                continue

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.stop.set()

    def _thread(self, name: str, fn: Callable[[], None]) -> threading.Thread:
        def body():
            try:
                fn()
            except Stopped:
                pass
            except BaseException as exc:  # surfaced in run(); other stages stop
                log.debug("stage %s failed", name, exc_info=True)
                self._fail(exc)

        t = threading.Thread(target=body, name=f"fracture-batch-{name}", daemon=True)
        t.start()
        return t

    # ---- stages -----------------------------------------------------------------------
    def _discover(self) -> None:
        for f in self.files:
            if f.path in self.already_done:
                self.already_done_count += 1
                continue
            self._put(self.files_q, f)
            self.discovered += 1
        self.discovery_done = True
        for _ in range(self.workers):
            self._put(self.files_q, _DONE)

    def _decode_worker(self) -> None:
        decoder = self.decoder_factory()
        chunk = max(1, getattr(decoder, "batch_size", 1))
        try:
            while True:
                item = self._get(self.files_q)
                if item is _DONE:
                    break
                batch = [item]
                done = False
                while len(batch) < chunk:  # batch decoders (DALI) take what is ready
                    try:
                        nxt = self.files_q.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _DONE:
                        done = True
                        break
                    batch.append(nxt)
                for r in decoder.decode(batch):
                    if r.decode_path:
                        with self._paths_lock:
                            self.decode_paths[r.decode_path] += 1
                    self._put(self.decoded_q, r)
                if done:
                    break
        finally:
            decoder.close()
            if not self.stop.is_set():
                self._put(self.decoded_q, _DONE)

    def _predict_now(self, batch: list[DecodeResult]) -> Callable[[], list[dict]]:
        rows = self.predict(batch)
        return lambda: rows

    def _infer(self) -> None:
        pending: list[DecodeResult] = []
        running = None  # finishes the batch the backend is working on (one in flight at most)
        finished = 0
        while finished < self.workers:
            try:
                # Wait briefly for a full batch; flush a partial one rather than idle.
                item = self._get(self.decoded_q, timeout=0.05 if pending or running else None)
            except queue.Empty:
                item = None
            if item is _DONE:
                finished += 1
            elif item is not None:
                pending.append(item)
            ready = sum(r.tensor is not None for r in pending)
            if pending and (ready >= self.batch_size or item is None or finished == self.workers):
                job = self.submit(pending)  # starts before the previous batch is collected
                pending = []
                if running is not None:
                    self._put(self.rows_q, running())
                running = job
            elif running is not None and item is None:  # nothing new: hand over what is done
                self._put(self.rows_q, running())
                running = None
        if running is not None:
            self._put(self.rows_q, running())
        self._put(self.rows_q, _DONE)

    def _writer(self) -> None:
        buf: list[dict] = []
        last = time.monotonic()
        try:
            while True:
                try:
                    item = self.rows_q.get(timeout=_POLL)
                except queue.Empty:
                    item = None
                if item is _DONE:
                    break
                if item is not None:
                    buf.extend(item)
                if self.stop.is_set():
                    break
                if buf and (len(buf) >= self.part_rows or time.monotonic() - last >= self.part_seconds):
                    self._commit(buf[: self.part_rows])
                    buf = buf[self.part_rows:]
                    last = time.monotonic()
        except BaseException as exc:
            self._fail(exc)  # recorded before the finally below decides whether to commit
            raise
        finally:
            # Complete rows are committed even when another stage stopped the run,
            # unless the sink itself failed (then there is nothing safe to do).
            from fracture_batch.scoring.sink import SinkError

            while buf and not isinstance(self.error, SinkError):
                self._commit(buf[: self.part_rows])
                buf = buf[self.part_rows:]

    def _commit(self, rows: list[dict]) -> None:
        self.write(rows)
        self.rows_committed += len(rows)
        self.ok_committed += sum(r["status"] == STATUS_OK for r in rows)

    def run(self) -> None:
        writer_done = threading.Event()

        def write_stage() -> None:
            try:
                self._writer()
            finally:
                writer_done.set()

        threads = [self._thread("discover", self._discover)]
        threads += [self._thread(f"decode-{i}", self._decode_worker) for i in range(self.workers)]
        threads.append(self._thread("infer", self._infer))
        threads.append(self._thread("write", write_stage))
        # Wait on an Event, not Thread.join: a KeyboardInterrupt (Ctrl-C, or SIGTERM via the
        # CLI) landing inside join() can mark a still-running thread as finished
        # (CPython bpo-45274), and the process would exit in the middle of a commit.
        try:
            self.on_progress(0, None)
            while not writer_done.wait(0.2):
                self.on_progress(self.rows_committed, self.discovered if self.discovery_done else None)
        except KeyboardInterrupt:
            from fracture_batch.scoring.config import ScoreAborted

            self._fail(ScoreAborted("interrupted; complete rows were committed, re-run the same command to resume"))
            while not writer_done.wait(0.5):
                pass
        self.on_progress(self.rows_committed, self.discovered if self.discovery_done else None)
        self.stop.set()
        for t in threads:
            t.join(timeout=10)
        if self.error is not None:
            raise self.error


def iter_chunks(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for x in items:
        chunk.append(x)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
