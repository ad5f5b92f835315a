"""``--backend auto`` for an ONNX file on the CPU: onnxruntime or OpenVINO, whichever is
faster on this CPU among those within their parity bar.

The rule, in order:
1. OpenVINO not installed -> onnxruntime.
2. OpenVINO parity not recorded for this file (export writes ``openvino_parity.json``
   next to the files when openvino is installed), or no precision within its bar ->
   onnxruntime: a precision that missed the bar is never used.
3. A short timed probe (~2-4 s: batch 16, both backends, the run's thread count) decides;
   OpenVINO must be >= 5 % faster (below that the two are within run-to-run noise on a
   shared 2-core machine). The result is cached per file, CPU, thread count and library
   versions, so later runs decide at once. Why a probe and not a CPU table: the ranking
   flips between CPUs (AMX Xeon: OpenVINO int8 ~1.7x onnxruntime; AVX512-VNNI EPYC:
   not measured by this project yet), and a probe is right on CPUs nobody has measured.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fracture_batch.backends.base import BackendKind, BackendOptions, DeviceKind, file_sha256

log = logging.getLogger(__name__)

PARITY_FILE = "openvino_parity.json"
PROBE_BATCH = 16
PROBE_SECONDS = 0.8  # timed per backend, after one warm-up call
MIN_SPEEDUP = 1.05


@dataclass(frozen=True)
class CpuChoice:
    backend: BackendKind
    inference_precision: str  # the OpenVINO precision, "" for onnxruntime
    reason: str


Probe = Callable[[Path, str, int], dict[str, float]]  # (file, ov precision, threads) -> images/s by backend


def read_parity(model_path: str | Path, sha256: str | None = None) -> dict[str, dict]:
    """precision -> {"passed", "failures", "parity"} recorded for this exact file (sha256)."""
    path = Path(model_path)
    try:
        doc = json.loads((path.parent / PARITY_FILE).read_text())
        entry = doc["files"][path.name]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if entry.get("sha256") != (sha256 or file_sha256(path)):
        log.info("%s: recorded OpenVINO parity is for another file; ignored", path.name)
        return {}
    return dict(entry.get("precisions", {}))


def preferred_precision(passing: list[str], int8_file: bool, bf16_native: bool) -> str | None:
    """The OpenVINO precision auto uses among those within their bar: bf16 for a fp32 file
    on a CPU with native bf16 (AMX: ~3.5x f32), f32 otherwise (an int8 file measured as
    fast with f32 as with bf16 for its few non-quantised ops)."""
    order = ["f32", "bf16"] if int8_file or not bf16_native else ["bf16", "f32"]
    return next((p for p in order if p in passing), None)


def resolve_cpu_backend(model_path: str | Path, *, threads: int = 0, probe: Probe | None = None,
                        cache_dir: Path | None = None) -> CpuChoice:
    from fracture_batch.backends.openvino_backend import cpu_has_bf16, has_openvino, is_int8_file

    path = Path(model_path)
    ok, why = has_openvino()
    if not ok:
        return CpuChoice(BackendKind.ONNXRUNTIME, "", f"onnxruntime: {why}")
    sha = file_sha256(path)
    recorded = read_parity(path, sha)
    if not recorded:
        return CpuChoice(BackendKind.ONNXRUNTIME, "", f"onnxruntime: no OpenVINO parity recorded for {path.name} "
                         f"(re-run fracture-batch export with openvino installed to write {PARITY_FILE})")
    passing = [p for p, r in recorded.items() if r.get("passed")]
    precision = preferred_precision(passing, is_int8_file(path), cpu_has_bf16())
    if precision is None:
        missed = "; ".join(f"{p}: {', '.join(r.get('failures', []))}" for p, r in recorded.items())
        return CpuChoice(BackendKind.ONNXRUNTIME, "", f"onnxruntime: OpenVINO missed its parity bar ({missed})")
    rates, cached = cached_probe(path, sha, precision, threads, probe or timed_probe, cache_dir)
    ov, ort = rates["openvino"], rates["onnxruntime"]
    how = f"probe{' (cached)' if cached else ''}: openvino {precision} {ov:.1f} vs onnxruntime {ort:.1f} images/s"
    if ov >= MIN_SPEEDUP * ort:
        return CpuChoice(BackendKind.OPENVINO, precision, f"openvino ({how})")
    return CpuChoice(BackendKind.ONNXRUNTIME, "", f"onnxruntime ({how}; openvino not >= {MIN_SPEEDUP:g}x faster)")


def cached_probe(path: Path, sha: str, precision: str, threads: int, probe: Probe,
                 cache_dir: Path | None = None) -> tuple[dict[str, float], bool]:
    from fracture_batch.backends.openvino_backend import default_cache_dir
    from fracture_batch.machine import cpu_info, package_versions

    versions = package_versions()
    key = json.dumps([sha, cpu_info()["cpu_model"], threads, precision,
                      versions.get("openvino"), versions.get("onnxruntime")])
    cache = (cache_dir or default_cache_dir()) / "probe" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"
    try:
        return json.loads(cache.read_text()), True
    except (OSError, ValueError):
        pass
    rates = probe(path, precision, threads)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(rates))
    except OSError as exc:  # a read-only home: the probe runs again next time, nothing else changes
        log.info("cannot cache the backend probe in %s: %s", cache, exc)
    return rates, False


def timed_probe(path: Path, precision: str, threads: int) -> dict[str, float]:
    """images/s of each backend on a random batch (conv cost does not depend on pixel values)."""
    import numpy as np

    from fracture_batch.backends.onnxruntime_backend import OnnxRuntimeBackend
    from fracture_batch.backends.openvino_backend import OpenVinoBackend

    rates = {}
    for name, cls, opts in (
        ("onnxruntime", OnnxRuntimeBackend, BackendOptions(intra_op_threads=threads)),
        ("openvino", OpenVinoBackend, BackendOptions(intra_op_threads=threads, inference_precision=precision)),
    ):
        be = cls(path, DeviceKind.CPU, opts)
        s = be.spec.input_size
        x = np.random.default_rng(0).standard_normal((PROBE_BATCH, 3, s, s), dtype=np.float32)
        be.predict(x)
        n, t0 = 0, time.perf_counter()
        while n < 2 or time.perf_counter() - t0 < PROBE_SECONDS:
            be.predict(x)
            n += 1
        rates[name] = n * PROBE_BATCH / (time.perf_counter() - t0)
        be.close()
    log.info("backend probe on %s: %s", path.name, rates)
    return rates
