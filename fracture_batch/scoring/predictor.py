"""The Predictor: load a model once, turn batches into output rows (Ray's batch-inference shape).

``Predictor(model_path, ...)`` resolves and loads the backend once. Then:
- ``predictor({"path": [...], "relpath": [...]})`` -> dict of column arrays in the
  output schema (``rows.COLUMNS``): decodes each file with the Python decoders and
  predicts; exactly one output row per input path, errors as error rows. This is what
  Ray Data's ``map_batches`` calls on an actor pool;
- ``predict_results(decode results)`` -> rows: what the local runner's inference stage
  calls with results from any decoder (Python, process-isolated or DALI);
- ``predict_array(x)`` -> (P(fractured), labels) for an already-normalised batch.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from fracture_batch.backends import (
    BackendKind,
    BackendOptions,
    DeviceKind,
    create_backend,
    file_sha256,
    resolve_backend,
)
from fracture_batch.decode.workers import DecodeOptions, DecodeResult, decode_one
from fracture_batch.scoring.discover import InputFile
from fracture_batch.scoring.rows import COLUMNS, RowContext, error_row, ok_row, rows_to_columns

log = logging.getLogger(__name__)


class Predictor:
    def __init__(
        self,
        model_path: str | Path,
        *,
        backend: BackendKind | str = BackendKind.AUTO,
        device: DeviceKind | str = DeviceKind.AUTO,
        options: BackendOptions = BackendOptions(),
        decode_options: DecodeOptions = DecodeOptions(),
    ):
        self.resolution = resolve_backend(Path(model_path).absolute(), backend, device,
                                          threads=options.intra_op_threads, device_id=options.device_id)
        # The file actually scored: the one given, or its GPU sibling (backends' auto rule).
        self.model_path = Path(self.resolution.model_path or model_path).absolute()
        log.info("backend: %s on %s (%s)", self.resolution.backend.value, self.resolution.device.value,
                 self.resolution.reason)
        self.backend = create_backend(self.model_path, self.resolution, options)
        self.spec = self.backend.spec
        # The exact artifact scored (ONNX/engine/checkpoint bytes), not just the weights.
        self.model_sha256 = file_sha256(self.model_path)
        self.ctx = RowContext(self.spec, self.model_sha256)
        self.decode_options = decode_options

    # ---- arrays ------------------------------------------------------------------
    def predict_array(self, x: np.ndarray) -> tuple[np.ndarray, list[str]]:
        limit = self.backend.max_batch or len(x) or 1
        logits = [self.backend.predict(x[i:i + limit]) for i in range(0, len(x), limit)]
        probs = self.spec.probabilities(np.concatenate(logits)) if logits else np.empty(0, np.float32)
        return probs, self.spec.labels(probs)

    # ---- decoded results -> rows ---------------------------------------------------
    def predict_results(self, results: Sequence[DecodeResult]) -> list[dict[str, Any]]:
        """One row per result, in order.

        A backend failure raises (it is not the input's fault): the runner stops with
        committed parts intact and a re-run retries those files, where error rows
        would have recorded them as done for good.
        """
        return self.submit_results(results)()

    def submit_results(self, results: Sequence[DecodeResult]) -> Callable[[], list[dict[str, Any]]]:
        """``predict_results`` in two halves: start the batch, return what finishes it.

        With a backend that can run a batch in the background (``submit``: OpenVINO) the
        caller prepares the next batch while this one runs; with any other backend the
        batch is predicted here and the returned function only hands the rows over."""
        ok = [i for i, r in enumerate(results) if r.tensor is not None]
        if not ok:
            rows = self._rows(results, ok, None, [], 0.0)
            return lambda: rows
        t0 = time.perf_counter()
        batch = _stack([results[i].tensor for i in ok], [results[i].ready for i in ok],
                       getattr(self.backend, "stream", None))
        submit = getattr(self.backend, "submit", None)
        if submit is None or (self.backend.max_batch and len(batch) > self.backend.max_batch):
            probs, labels = self.predict_array(batch)
            rows = self._rows(results, ok, probs, labels, (time.perf_counter() - t0) * 1000.0 / len(ok))
            return lambda: rows
        job = submit(batch)

        def finish() -> list[dict[str, Any]]:
            probs = self.spec.probabilities(job.result())
            # submit -> result: with a batch ahead of it, this includes its wait in the queue
            return self._rows(results, ok, probs, self.spec.labels(probs),
                              (time.perf_counter() - t0) * 1000.0 / len(ok))

        return finish

    def _rows(self, results: Sequence[DecodeResult], ok: list[int], probs, labels,
              per_image_ms: float) -> list[dict[str, Any]]:
        rows: list[dict[str, Any] | None] = [None] * len(results)
        for j, i in enumerate(ok):
            r = results[i]
            rows[i] = ok_row(r.file.path, r.file.relpath, probs[j], labels[j], self.ctx,
                             file_size=r.file.size, infer_ms=per_image_ms, **r.info)
        for i, r in enumerate(results):
            if rows[i] is None:
                rows[i] = error_row(r.file.path, r.file.relpath, r.error or "not decoded", self.ctx,
                                    file_size=r.file.size, **r.info)
        return rows  # type: ignore[return-value]

    # ---- columnar batch of paths (Ray Data map_batches) -----------------------------
    def __call__(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        paths = [str(p) for p in batch["path"]]
        relpaths = [str(p) for p in batch["relpath"]] if "relpath" in batch else [os.path.basename(p) for p in paths]
        files = [_input_file(p, r) for p, r in zip(paths, relpaths)]
        rows = self.predict_results([decode_one(f, self.spec, self.decode_options) for f in files])
        cols = rows_to_columns(rows)
        return {c: np.asarray(cols[c], dtype=object) for c in COLUMNS}

    def close(self) -> None:
        self.backend.close()


def _stack(tensors: list, ready: list, stream):
    """One batch. Device slices (DALI mixed) stay on the device: made on the decoder's stream,
    they are handed over to the backend's stream with their events (backends.cuda_streams)
    and stacked there, so decode of the next batch and this inference overlap."""
    if not getattr(tensors[0], "is_cuda", False):
        return np.stack(tensors)
    import torch

    if stream is None:  # a CPU backend: the host copy waits for the producer's events
        for ev in {id(e): e for e in ready if e is not None}.values():
            ev.synchronize()
        return torch.stack(tensors).cpu().numpy()
    from fracture_batch.backends.cuda_streams import adopt, on_stream

    with on_stream(stream):
        adopt(stream, tensors, ready)
        return torch.stack(tensors)


def _input_file(path: str, relpath: str) -> InputFile:
    path = os.path.abspath(path)
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return InputFile(path, relpath, -1, "file not found (deleted or a broken link)")
    except OSError as exc:
        return InputFile(path, relpath, -1, f"cannot read file metadata: {exc.strerror or exc}")
    return InputFile(path, relpath, size, "empty file (0 bytes)" if size == 0 else None)
