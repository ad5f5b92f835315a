"""The GPU acceptance run's CPU-runnable parts: budget, MLPerf figure, perf rows with fake
backends and a fake timer, skip rows carrying the install command, the AMP judge, the table."""
from __future__ import annotations

import numpy as np
import pytest

from fracture_batch.bench import acceptance as acc
from fracture_batch.bench import acceptance_perf as perf
from fracture_batch.bench.acceptance_report import format_table, result_stem, to_markdown, write_results
from fracture_batch.bench.acceptance_train import AmpTrace, judge
from fracture_batch.bench.records import Measurement, read_json


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_budget_shares_what_is_left():
    clock = Clock()
    b = perf.Budget(100, clock=clock)
    assert b.share(4, cap=90) == 25 and b.allows(100)
    clock.t = 80
    assert b.left() == 20 and not b.allows(21) and b.share(1, cap=90) == 20
    clock.t = 150
    assert b.left() == 0 and b.share(3, cap=90) == 0


def test_mlperf_figure_per_gpu_and_only_for_sxm_parts():
    h200 = perf.mlperf_figure("NVIDIA H200")
    assert h200.per_gpu == pytest.approx(756_960 / 8) and "v4.1" in h200.source
    assert perf.mlperf_figure("NVIDIA H100 80GB HBM3").per_gpu == pytest.approx(703_770 / 8)
    for other in ("NVIDIA H100 PCIe", "NVIDIA H100 NVL", "NVIDIA H200 NVL", "NVIDIA A100-SXM4-80GB"):
        assert perf.mlperf_figure(other) is None
    row = perf.mlperf_row(47_310.0, "NVIDIA H200")
    assert row.fraction_of_ceiling == pytest.approx(0.5, abs=1e-3) and "50%" in row.note
    assert perf.mlperf_row(None, "NVIDIA H200", "tensorrt not installed").status == "skipped"
    assert "no published MLPerf figure" in perf.mlperf_row(1000.0, "NVIDIA L4").note


class FakeBackend:
    def __init__(self):
        self.closed = False

    def predict(self, x):
        return np.zeros((len(x), 2), np.float32)

    def close(self):
        self.closed = True


def _timer(fn, **kw):
    fn()
    return [0.010, 0.011, 0.020]  # seconds per call: p50 11 ms


def test_perf_rows_measure_skip_and_fail_per_path():
    loaded = []

    def needs_missing():
        raise acc.Skip("tensorrt not installed: pip install 'fracture-batch[gpu]'")

    def load_ok(max_batch):
        loaded.append(max_batch)
        return FakeBackend()

    def load_broken(max_batch):
        raise RuntimeError("engine build failed")

    paths = [perf.PerfPath("tensorrt", "int8", 0.1, needs_missing, load_ok),
             perf.PerfPath("torch", "fp16", 0.02, lambda: None, load_ok),
             perf.PerfPath("tensorrt", "fp16", 0.02, lambda: None, load_broken)]
    rows = perf.perf_rows(paths, make_batch=lambda b: np.zeros((b, 3, 4, 4), np.float32),
                          check=lambda be, bar: f"parity ok (bar {bar})", budget=perf.Budget(600),
                          skip_type=acc.Skip, batches=(1, 8), timer=_timer)
    skipped, b1, b8, failed = rows
    assert skipped.status == "skipped" and "pip install 'fracture-batch[gpu]'" in skipped.note
    assert (b1.status, b1.batch_size, b8.batch_size) == ("pass", 1, 8)
    assert b8.images_per_s == pytest.approx(8 / 0.011) and b8.latency_p99_ms == pytest.approx(19.82)  # numpy linear interpolation: 11 + 0.98 * 9 ms
    assert failed.status == "fail" and "engine build failed" in failed.note
    assert loaded == [8]  # loaded once, for the largest batch


def test_perf_rows_respect_the_budget():
    clock = Clock()
    budget = perf.Budget(100, clock=clock)
    clock.t = 99.0  # 1 s left: a TensorRT build (~120 s) is not started
    path = perf.PerfPath("tensorrt", "int8", 0.1, lambda: None, lambda b: FakeBackend(), build_estimate_s=120)
    (row,) = perf.perf_rows([path], make_batch=lambda b: None, check=lambda be, bar: "", budget=budget,
                            skip_type=acc.Skip, batches=(1,), timer=_timer)
    assert row.status == "skipped" and row.note.startswith("time budget")


def test_checks_past_the_budget_are_skipped_not_run():
    clock = Clock()
    ctx = acc.Context(work=None, art=None, images=[], x=None, reference=None,
                      budget=perf.Budget(100, clock=clock))
    ran = []
    checks = (("a", "cpu", lambda c: ran.append("a") or "ok"), ("b", "cuda", lambda c: ran.append("b") or "ok"))
    clock.t = 90.0  # 10 s left < CHECK_RESERVE_S
    rows = acc.run_checks(ctx, checks)
    assert ran == [] and all(r.status == "skipped" and "time budget" in r.note for r in rows)


def test_guards_name_the_install_command_here():
    """On this GPU-less machine the GPU guards skip, and say why (and how to fix it)."""
    import importlib.util

    with pytest.raises(acc.Skip, match="no CUDA GPU"):
        acc.need_cuda()
    if importlib.util.find_spec("tensorrt") is None:  # this machine: both missing, both named
        with pytest.raises(acc.Skip, match=r"no CUDA GPU.*TensorRT.*not installed; install: pip install 'fracture-batch\[gpu\]'"):
            acc.need_tensorrt()


def test_amp_judge():
    good = AmpTrace([0.7, 0.69, 0.5, 0.3, 0.2, 0.1], [65536.0, 32768.0, 32768.0, 32768.0, 32768.0, 32768.0])
    assert good.skipped == 1 and judge(good) == ""
    assert "non-finite" in judge(AmpTrace([0.7, float("nan")]))
    assert "skipped 6 of 6" in judge(AmpTrace([0.7] * 6, [2.0 ** (15 - i) for i in range(6)]))  # halved every step
    assert "did not go down" in judge(AmpTrace([0.5, 0.6, 0.7, 0.8]))
    # bf16 (no scaler): only the losses count.
    assert judge(AmpTrace([0.7, 0.4, 0.2])) == ""


def test_bf16_training_steps_on_cpu_pass():
    from fracture_batch.bench.acceptance_train import amp_check

    assert "bf16 autocast on cpu, 8 steps" in amp_check("cpu", "bf16")


def test_table_markdown_and_files(tmp_path):
    rows = [Measurement(suite="acceptance", name="torch fp16 batch 32", device="cuda", batch_size=32,
                        images_per_s=5123.4, latency_p50_ms=6.2, latency_p99_ms=7.9, status="pass", note="ok"),
            Measurement(suite="acceptance", name="tensorrt int8 throughput", device="cuda", status="skipped",
                        note="not installed; install: pip install 'fracture-batch[gpu]'")]
    text = format_table(rows)
    assert "5,123" in text and "6.20" in text and "SKIPPED" in text and text.endswith("1 passed, 0 failed, 1 skipped")
    machine = {"gpu": {"name": "NVIDIA H200", "driver": "580.1", "torch_cuda": "13.0"}, "cpu_model": "Xeon"}
    md = to_markdown(rows, machine, 312.0)
    assert "| torch fp16 batch 32 | cuda | PASS | 32 | 5,123 |" in md and "NVIDIA H200" in md
    assert result_stem(machine).startswith("acceptance-nvidia-h200-")
    js, mdp = write_results(rows, machine, 312.0, tmp_path)
    assert read_json(js).measurements[0].images_per_s == pytest.approx(5123.4) and mdp.read_text() == md
