"""Harness statistics and timing: percentiles on known data, warm-up/repeat counting."""
from __future__ import annotations

import math

import pytest

from fracture_batch.bench.stats import measure, summarize, throughput


def test_percentiles_on_known_data():
    # 1..100: linear interpolation between order statistics (numpy's default) gives
    # p50 = 50.5, p95 = 95.05, p99 = 99.01 exactly.
    s = summarize(list(range(1, 101)))
    assert s.n == 100
    assert s.p50 == pytest.approx(50.5)
    assert s.p95 == pytest.approx(95.05)
    assert s.p99 == pytest.approx(99.01)
    assert (s.min, s.max, s.mean) == (1, 100, 50.5)
    assert s.std == pytest.approx(29.011, abs=1e-3)  # sample std (ddof=1) of 1..100


def test_percentiles_are_order_independent_and_tail_sensitive():
    data = [0.010] * 98 + [0.5, 1.0]
    s = summarize(list(reversed(data)))
    assert s.p50 == pytest.approx(0.010)
    assert s.p95 == pytest.approx(0.010)
    assert 0.5 < s.p99 < 1.0  # the two outliers show up in the tail, not the median


def test_single_sample_and_empty():
    s = summarize([0.25])
    assert s.p50 == s.p99 == 0.25 and s.std == 0.0
    with pytest.raises(ValueError):
        summarize([])


def test_ms_and_throughput():
    s = summarize([0.1, 0.2, 0.3])
    assert s.ms()["latency_p50_ms"] == pytest.approx(200.0)
    assert throughput(32, s) == pytest.approx(160.0)  # 32 images / 0.2 s median


def test_measure_runs_warmup_untimed_and_counts_repeats():
    calls, synced = [], []
    times = measure(lambda: calls.append(1), warmup=3, repeats=5, sync=lambda: synced.append(1))
    assert len(calls) == 8 and len(times) == 5
    assert len(synced) == 6  # once after warm-up, once per timed repeat
    assert all(t >= 0 and math.isfinite(t) for t in times)


def test_measure_time_budget_stops_after_min_repeats():
    import time

    times = measure(lambda: time.sleep(0.02), warmup=0, repeats=100, min_repeats=3, max_seconds=0.01)
    assert len(times) == 3  # budget exhausted at once, min_repeats still honoured
    assert min(times) >= 0.015  # sleep(0.02) timed, allowing coarse timers 5 ms slack


def test_measure_rejects_zero_repeats():
    with pytest.raises(ValueError):
        measure(lambda: None, repeats=0)


def test_measure_warmup_stops_early_when_over_budget_but_runs_once():
    import time

    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.02)

    times = measure(slow, warmup=5, repeats=3, min_repeats=3, max_seconds=0.01)
    assert len(times) == 3 and len(calls) == 4  # one warm-up call (over budget), then 3 timed
