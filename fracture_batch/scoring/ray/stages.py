"""The two Ray Data stages, composed from the local runner's own functions.

- ``decode_batch`` (stateless, Ray CPU tasks): ``decode_stage.decode_one`` on each
  (path, relpath, size, error) of a batch -> model inputs plus the decode facts.
- ``PredictStage`` (stateful, Ray actors, GPU where reserved): builds the runner's
  ``Predictor`` once, turns a decoded batch back into ``DecodeResult``s and calls
  ``Predictor.predict_results`` -> rows in ``rows.schema`` (a pyarrow Table, so the
  column types are the schema's, not whatever Arrow would infer from numpy objects).

Nothing here decodes, preprocesses, predicts or shapes a row itself. This module never
imports ray, so the workers only need the package itself importable.

Between the stages a batch is a dict of plain columns: paths as bytes (see
``work_table``), strings never null ("" means "no error"), a fixed-shape float32 tensor column (zeros where decoding failed, flagged
by ``decoded``), and the decode facts as one JSON string (their keys vary by format).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

from fracture_batch.backends import BackendOptions
from fracture_batch.decode.workers import DecodeOptions, DecodeResult, decode_one
from fracture_batch.scoring.discover import InputFile
from fracture_batch.scoring.rows import as_text, rows_to_table, schema
from fracture_batch.model.spec import ModelSpec

log = logging.getLogger(__name__)

WORK_COLUMNS = ("path", "relpath", "size", "error")  # what the driver hands to the decode stage


def work_table(files: list[InputFile]) -> pa.Table:
    """Discovered files -> the driver's input block (path, relpath, size, error).

    Paths travel as the file system's bytes (``os.fsencode``), not text: a file name that
    is not UTF-8 (a Latin-1 archive) must reach the decoder exactly as the OS spelled it,
    and Arrow strings cannot hold it. Rows get ``rows.as_text`` of it, as locally.
    """
    return pa.table({
        "path": pa.array([os.fsencode(f.path) for f in files], pa.binary()),
        "relpath": pa.array([os.fsencode(f.relpath) for f in files], pa.binary()),
        "size": pa.array([f.size for f in files], pa.int64()),
        "error": pa.array([as_text(f.error or "") for f in files], pa.string()),
    })


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else str(v)


def decode_batch(batch: Mapping[str, np.ndarray], *, spec_json: str, decode_options: dict) -> dict[str, np.ndarray]:
    """Ray CPU task: decode + preprocess every file of the batch with ``decode_one``."""
    spec = ModelSpec.from_json(spec_json)
    opts = DecodeOptions(**decode_options)
    results = [
        decode_one(InputFile(os.fsdecode(p), os.fsdecode(r), int(s), str(e) or None), spec, opts)
        for p, r, s, e in zip(batch["path"], batch["relpath"], batch["size"], batch["error"])
    ]
    shape = (3, spec.input_size, spec.input_size)
    tensors = np.zeros((len(results), *shape), dtype=np.float32)
    for i, res in enumerate(results):
        if res.tensor is not None:
            tensors[i] = res.tensor
    return {
        "path": np.array([os.fsencode(res.file.path) for res in results], dtype=object),
        "relpath": np.array([os.fsencode(res.file.relpath) for res in results], dtype=object),
        "size": np.array([res.file.size for res in results], dtype=np.int64),
        "decoded": np.array([res.tensor is not None for res in results], dtype=bool),
        "error": np.array([as_text(res.error or "") for res in results], dtype=object),
        "info": np.array([json.dumps(res.info, default=_plain) for res in results], dtype=object),
        "tensor": tensors,
    }


def results_from_batch(batch: Mapping[str, np.ndarray]) -> list[DecodeResult]:
    """The inverse of ``decode_batch``'s packing."""
    out = []
    for i in range(len(batch["path"])):
        file = InputFile(os.fsdecode(batch["path"][i]), os.fsdecode(batch["relpath"][i]), int(batch["size"][i]))
        ok = bool(batch["decoded"][i])
        out.append(DecodeResult(
            file, np.asarray(batch["tensor"][i], dtype=np.float32) if ok else None,
            None if ok else (str(batch["error"][i]) or "not decoded"), json.loads(str(batch["info"][i])),
        ))
    return out


def create_predictor(model: str, backend: str, device: str, options: dict, decode_options: dict):
    from fracture_batch.scoring.predictor import Predictor

    return Predictor(model, backend=backend, device=device, options=BackendOptions(**options),
                     decode_options=DecodeOptions(**decode_options))


class PredictStage:
    """Ray actor: the runner's Predictor, loaded once per actor."""

    def __init__(self, model: str, backend: str, device: str, options: dict, decode_options: dict,
                 run_meta: str | None = None):
        self.predictor = create_predictor(model, backend, device, options, decode_options)
        self.schema = schema(self.predictor.spec, run_meta)

    def __call__(self, batch: Mapping[str, np.ndarray]) -> pa.Table:
        rows = self.predictor.predict_results(results_from_batch(batch))
        return rows_to_table(rows, self.schema)


def probe(model: str, backend: str, device: str, options: dict, decode_options: dict) -> dict[str, Any]:
    """Load the model where the actors will run (same resources); report what was chosen.

    Runs as one Ray task before any input is read, so a model that cannot be loaded on
    the workers (missing there, no GPU for an engine, backend not installed) is a fatal
    error with the backend's own message instead of a failure deep inside the pipeline.
    """
    try:
        p = create_predictor(model, backend, device, options, decode_options)
    except Exception as exc:  # returned, not raised: the driver re-raises it as a BackendError
        return {"error": f"{exc.__class__.__name__}: {exc}"}
    try:
        return {
            "spec_json": p.spec.to_json(), "model_sha256": p.model_sha256,
            "backend": p.resolution.backend.value, "device": p.resolution.device.value,
            "reason": p.resolution.reason, "description": p.backend.description,
        }
    finally:
        p.close()
