"""One configuration per process: run a benchmark function in a fresh interpreter.

Thread pools (OpenMP, oneDNN, ORT), allocator high-water marks, oneDNN primitive
caches and CUDA contexts all outlive a measurement and would leak into the next one;
a child process per configuration is what pyperf and torchbench do. The child runs
``module:function(**kwargs)``, which returns a list of ``Measurement``; it writes them
as JSON to a file the parent reads. A child that crashes or times out becomes one
``status="error"`` row with the tail of its stderr, so a run always completes.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

from fracture_batch.bench.records import Measurement

log = logging.getLogger(__name__)


def run_isolated(
    target: str,
    kwargs: Mapping[str, Any],
    *,
    label: Measurement,
    timeout_s: float = 1800,
    env: Mapping[str, str] | None = None,
    unset_env: tuple[str, ...] = (),
    in_process: bool = False,
) -> list[Measurement]:
    """Run ``target`` ("package.module:function") with JSON-able ``kwargs``.

    ``label`` is the row returned (with status=error) if the child fails. ``env`` adds
    variables and ``unset_env`` removes them for the child only (the GEMM ceiling
    unsets OPENBLAS_CORETYPE, which would force older kernels). ``in_process`` runs in
    this interpreter (tests, and the ``--quick`` demo where start-up cost dominates).
    """
    if in_process:
        try:
            return list(_call(target, dict(kwargs)))
        except Exception as exc:  # a failing config is a row, not a crashed run
            log.exception("benchmark %s failed", label.name)
            return [_error_row(label, f"{type(exc).__name__}: {exc}")]
    child_env = dict(os.environ)
    child_env.update(env or {})
    for k in unset_env:
        child_env.pop(k, None)
    with tempfile.TemporaryDirectory(prefix="fb-bench-") as tmp:
        spec_path, out_path = Path(tmp, "spec.json"), Path(tmp, "out.json")
        spec_path.write_text(json.dumps({"target": target, "kwargs": dict(kwargs)}))
        cmd = [sys.executable, "-m", "fracture_batch.bench.isolate", str(spec_path), str(out_path)]
        try:
            proc = subprocess.run(cmd, env=child_env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return [_error_row(label, f"timed out after {timeout_s:.0f} s")]
        if proc.returncode != 0 or not out_path.exists():
            tail = (proc.stderr or "").strip().splitlines()[-3:]
            return [_error_row(label, f"child exited {proc.returncode}: {' | '.join(tail)}")]
        return [Measurement.from_dict(d) for d in json.loads(out_path.read_text())]


def _error_row(label: Measurement, message: str) -> Measurement:
    row = Measurement.from_dict(label.to_dict())
    row.status, row.note = "error", message[-500:]
    return row


def _call(target: str, kwargs: dict[str, Any]) -> list[Measurement]:
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)(**kwargs)


def _main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    rows = _call(spec["target"], spec["kwargs"])
    Path(argv[1]).write_text(json.dumps([r.to_dict() for r in rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
