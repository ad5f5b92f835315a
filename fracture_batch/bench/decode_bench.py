"""Decode-only benchmark: per format x decoder, images/s and ms per megapixel.

Decoders: ``python`` (``decode.decode_file``: PIL / pydicom + plugins, one thread,
the scorer's Python family), ``python+preprocess`` (plus ``to_model_input``: what one
Python decode worker feeds the model, the figure that bounds end-to-end throughput),
``dali-cpu`` and ``dali-gpu`` (the DALI pipeline, batch decode on cores / nvJPEG).
Each pass reads every file once (files are in the page cache after warm-up, so this is
decode cost, not disk); the median pass gives images/s, every per-file time feeds the
latency percentiles.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable



from fracture_batch.bench.records import Measurement
from fracture_batch.bench.stats import summarize

log = logging.getLogger(__name__)

DECODERS = ("python", "python+preprocess", "dali-cpu", "dali-gpu")


def _megapixels(paths: list[Path]) -> float:
    from fracture_batch.decode import decode_file

    return sum(d.width * d.height for d in (decode_file(p) for p in paths)) / 1e6


def _python_fn(preprocess: bool, input_size: int) -> Callable[[Path], Any]:
    from fracture_batch.decode import decode_file, decode_for_model
    from fracture_batch.model.spec import ModelSpec

    spec = ModelSpec(input_size=input_size)
    if preprocess:  # what a scorer's decode worker does: the spec's reduction rule included
        return lambda p: decode_for_model(p, spec)[0]
    return lambda p: decode_file(p).pixels


def run_decode_config(*, decoder: str, fmt: str, paths: list[str], warmup: int, repeats: int,
                      max_seconds: float, input_size: int = 224, threads: int = 1) -> list[Measurement]:
    files = [Path(p) for p in paths]
    mp = _megapixels(files)
    row = _label(decoder, fmt)
    row.warmup, row.threads, row.extra = warmup, threads, {"megapixels_per_image": mp / len(files)}
    if decoder.startswith("python"):
        fn = _python_fn(decoder.endswith("preprocess"), input_size)
        pass_times, per_file = _time_passes(lambda: _timed_each(fn, files), warmup, repeats, max_seconds)
    else:
        pass_times, per_file = _time_dali(decoder, files, warmup, repeats, max_seconds, threads, input_size)
    s_pass = summarize(pass_times)
    row.repeats, row.n_images = s_pass.n, s_pass.n * len(files)
    row.images_per_s = len(files) / s_pass.p50
    row.ms_per_megapixel = s_pass.p50 * 1e3 / mp
    for k, v in summarize(per_file).ms().items():  # per-image latency
        setattr(row, k, v)
    return [row]


def _timed_each(fn: Callable[[Path], Any], files: list[Path]) -> list[float]:
    out = []
    for p in files:
        t0 = time.perf_counter_ns()
        fn(p)
        out.append((time.perf_counter_ns() - t0) * 1e-9)
    return out


def _time_passes(one_pass: Callable[[], list[float]], warmup: int, repeats: int,
                 max_seconds: float) -> tuple[list[float], list[float]]:
    for _ in range(max(warmup, 1)):  # at least one: page cache and lazy plugin imports
        one_pass()
    passes, per_file, started = [], [], time.perf_counter()
    for i in range(repeats):
        t = one_pass()
        passes.append(sum(t))
        per_file += t
        if i >= 1 and time.perf_counter() - started > max_seconds:
            break
    return passes, per_file


def _time_dali(decoder: str, files: list[Path], warmup: int, repeats: int, max_seconds: float,
               threads: int, input_size: int) -> tuple[list[float], list[float]]:
    """Whole-batch DALI decode + resize; per-image latency is batch time / batch size."""
    from fracture_batch.bench.dali_adapter import dali_decoder

    run_batch = dali_decoder(files, device="gpu" if decoder == "dali-gpu" else "cpu",
                             threads=threads, input_size=input_size)

    def one_pass() -> list[float]:
        t0 = time.perf_counter_ns()
        run_batch()
        dt = (time.perf_counter_ns() - t0) * 1e-9
        return [dt / len(files)] * len(files)

    return _time_passes(one_pass, warmup, repeats, max_seconds)


def decode_skip_reason(decoder: str, fmt: str) -> str:
    if decoder.startswith("dali"):
        from fracture_batch.bench.dali_adapter import dali_skip_reason

        return dali_skip_reason(decoder, fmt)
    return ""


def run_decode_group(*, decoder: str, corpus: dict[str, list[str]], **kwargs: Any) -> list[Measurement]:
    """One child per decoder runs every format: a decoder's pools and caches are what it
    would reuse across files anyway, and a child per format costs more than it measures."""
    rows = []
    for fmt, paths in corpus.items():
        reason = decode_skip_reason(decoder, fmt)
        if reason:
            rows.append(_label(decoder, fmt, "skipped", reason))
            continue
        try:
            rows += run_decode_config(decoder=decoder, fmt=fmt, paths=paths, **kwargs)
        except Exception as exc:  # one format failing leaves the others measured
            rows.append(_label(decoder, fmt, "error", f"{type(exc).__name__}: {exc}"[:500]))
    return rows


def _label(decoder: str, fmt: str, status: str = "ok", note: str = "") -> Measurement:
    return Measurement(suite="decode", name=f"{decoder}/{fmt}", backend=decoder, format=fmt,
                       device="cuda" if decoder == "dali-gpu" else "cpu", status=status, note=note)


def bench_decode(corpus: dict[str, list[Path]], *, decoders: tuple[str, ...], warmup: int, repeats: int,
                 max_seconds: float, threads: int, input_size: int = 224,
                 in_process: bool = False) -> list[Measurement]:
    """``corpus``: format -> files of that format. One child process per decoder."""
    from fracture_batch.bench.isolate import run_isolated

    rows = []
    files = {fmt: [str(p) for p in paths] for fmt, paths in corpus.items()}
    for decoder in decoders:
        reason = decode_skip_reason(decoder, "")
        if reason:  # the whole decoder is unavailable: one row per format, same reason
            rows += [_label(decoder, fmt, "skipped", reason) for fmt in files]
            continue
        t0 = time.perf_counter()
        kwargs: dict[str, Any] = dict(decoder=decoder, corpus=files, warmup=warmup, repeats=repeats,
                                      max_seconds=max_seconds, input_size=input_size,
                                      threads=1 if decoder.startswith("python") else threads)
        rows += run_isolated("fracture_batch.bench.decode_bench:run_decode_group", kwargs,
                             label=_label(decoder, "all"), in_process=in_process, timeout_s=1800)
        log.info("decode %s: %.1f s", decoder, time.perf_counter() - t0)
    return rows
