"""Timing and statistics: warm-up, repeats within a time budget, percentiles.

Mirrors what pytest-benchmark / torch.utils.benchmark / Google Benchmark do: warm-up
calls are run and discarded (lazy allocation, ORT arena growth, oneDNN primitive
caches), each repeat is timed with ``perf_counter_ns``, and a ``sync`` callable
(``torch.cuda.synchronize``) is called before reading the clock on GPU so queued
asynchronous work is inside the interval it belongs to.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

PERCENTILES = (50, 95, 99)


@dataclass(frozen=True)
class Summary:
    """Latency statistics in seconds over ``n`` timed repeats."""

    n: int
    p50: float
    p95: float
    p99: float
    mean: float
    std: float
    min: float
    max: float

    def ms(self) -> dict[str, float]:
        return {
            "latency_p50_ms": self.p50 * 1e3,
            "latency_p95_ms": self.p95 * 1e3,
            "latency_p99_ms": self.p99 * 1e3,
            "latency_mean_ms": self.mean * 1e3,
            "latency_std_ms": self.std * 1e3,
            "latency_min_ms": self.min * 1e3,
        }


def summarize(samples: Sequence[float]) -> Summary:
    """Percentiles by linear interpolation between order statistics (numpy's default,
    the same as ``statistics.quantiles(method='inclusive')``): with few repeats p99 is
    close to the max, which is what a tail over a handful of samples can honestly say."""
    a = np.asarray(samples, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no samples to summarise")
    p50, p95, p99 = np.percentile(a, PERCENTILES)
    return Summary(
        n=int(a.size), p50=float(p50), p95=float(p95), p99=float(p99),
        mean=float(a.mean()), std=float(a.std(ddof=1)) if a.size > 1 else 0.0,
        min=float(a.min()), max=float(a.max()),
    )


def measure(
    fn: Callable[[], object],
    *,
    warmup: int = 2,
    repeats: int = 10,
    min_repeats: int = 3,
    max_seconds: float | None = None,
    sync: Callable[[], None] | None = None,
) -> list[float]:
    """Time ``fn`` ``repeats`` times after ``warmup`` untimed calls; seconds per call.

    ``max_seconds`` bounds the timed phase (after ``min_repeats``; warm-up to half of it,
    after one call) so one slow
    configuration (ResNet50 at batch 128 on 2 cores is seconds per call) cannot eat the
    whole benchmark budget; the number actually run is ``len(result)``.
    """
    if repeats < 1 or min_repeats < 1:
        raise ValueError("repeats and min_repeats must be >= 1")
    warm_start = time.perf_counter()
    for _ in range(max(0, warmup)):
        fn()
        # One warm-up call always; more only while within the budget (a 40 s call at
        # batch 128 is warm after one run, and a second would only burn the budget).
        if max_seconds is not None and time.perf_counter() - warm_start > max_seconds / 2:
            break
    if sync is not None:
        sync()
    times: list[float] = []
    started = time.perf_counter()
    for i in range(repeats):
        t0 = time.perf_counter_ns()
        fn()
        if sync is not None:
            sync()
        times.append((time.perf_counter_ns() - t0) * 1e-9)
        if (max_seconds is not None and i + 1 >= min_repeats
                and time.perf_counter() - started > max_seconds):
            break
    return times


def cuda_event_timer(fn: Callable[[], object], *, warmup: int, repeats: int) -> list[float]:
    """GPU-side timing with CUDA events (excludes host launch jitter); seconds per call."""
    import torch

    for _ in range(max(0, warmup)):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        out.append(start.elapsed_time(end) * 1e-3)
    return out


def throughput(items_per_call: int, summary: Summary) -> float:
    """Items/s from the median call time (robust to the odd preempted repeat on a shared
    machine); the mean-based figure is kept in the record's extra for comparison."""
    return items_per_call / summary.p50 if summary.p50 > 0 else float("nan")
