"""Result schema: JSON round trip, Parquet columns and machine metadata, process isolation."""
from __future__ import annotations

import json

import pyarrow.parquet as pq

from fracture_batch.bench.isolate import run_isolated
from fracture_batch.machine import describe_machine
from fracture_batch.bench.records import (
    COLUMNS,
    MACHINE_METADATA_KEY,
    BenchRun,
    Measurement,
    read_json,
    read_parquet_machine,
    write_json,
    write_parquet,
)


def _run() -> BenchRun:
    rows = [
        Measurement("model", "onnxruntime/fp32/cpu/bs8", "onnxruntime", "fp32", batch_size=8, images_per_s=100.0,
                    latency_p50_ms=80.0, gflops=float("nan"), extra={"description": "x"}),
        Measurement("model", "tensorrt/fp16/cuda", "tensorrt", "fp16", "cuda", status="skipped",
                    note="no CUDA GPU visible to torch"),
    ]
    return BenchRun(machine={"cpu_model": "Test CPU", "gpu": {"available": False}}, measurements=rows,
                    run={"run_id": "r1"})


def test_json_round_trip_and_nan_becomes_null(tmp_path):
    p = write_json(_run(), tmp_path / "bench.json")
    raw = json.loads(p.read_text())
    assert raw["machine"]["cpu_model"] == "Test CPU"
    assert raw["measurements"][0]["gflops"] is None  # NaN is not JSON
    back = read_json(p)
    assert [m.name for m in back.measurements] == ["onnxruntime/fp32/cpu/bs8", "tensorrt/fp16/cuda"]
    assert back.measurements[1].note == "no CUDA GPU visible to torch"


def test_parquet_schema_columns_and_machine_metadata(tmp_path):
    p = write_parquet(_run(), tmp_path / "bench.parquet")
    t = pq.read_table(p)
    assert t.column_names == list(COLUMNS) + ["machine_cpu", "machine_gpu", "run_id"]
    for col in ("suite", "backend", "precision", "device", "batch_size", "images_per_s", "latency_p50_ms",
                "latency_p95_ms", "latency_p99_ms", "gflops", "fraction_of_ceiling", "ms_per_megapixel",
                "ratio_vs_naive", "bound_by", "status", "note"):
        assert col in t.column_names
    assert str(t.schema.field("batch_size").type) == "int64"
    assert str(t.schema.field("images_per_s").type) == "double"
    assert t.column("machine_cpu").to_pylist() == ["Test CPU", "Test CPU"]
    assert json.loads(t.column("extra")[0].as_py()) == {"description": "x"}
    assert read_parquet_machine(p)["cpu_model"] == "Test CPU"
    assert MACHINE_METADATA_KEY.encode() in t.schema.metadata


def test_machine_description_has_what_a_reader_needs():
    m = describe_machine()
    for key in ("cpu_model", "cpu_flags", "cores_usable", "gpu", "packages", "thread_env", "blas"):
        assert key in m
    assert "torch" in m["packages"] and "onnxruntime" in m["packages"]
    assert m["cores_usable"] >= 1


def test_isolated_child_returns_rows_and_failure_becomes_error_row():
    label = Measurement("ceiling", "gemm/numpy/fp32/cpu", "numpy", "fp32")
    rows = run_isolated("fracture_batch.bench.ceilings:numpy_gemm", {"n": 64, "repeats": 2},
                        label=label, unset_env=("OPENBLAS_CORETYPE",), timeout_s=120)
    assert len(rows) == 1 and rows[0].status == "ok" and rows[0].gflops > 0
    assert rows[0].extra["n"] == 64 and rows[0].repeats == 2
    bad = run_isolated("fracture_batch.bench.ceilings:numpy_gemm", {"no_such_arg": 1}, label=label,
                       timeout_s=120)
    assert bad[0].status == "error" and "no_such_arg" in bad[0].note


def test_cpu_peer_rounds_give_same_run_ratios_and_their_median(monkeypatch, tmp_path):
    """Each round's ratio uses that round's peer run only (the VM's speed drifts between rounds)."""
    from fracture_batch.bench import cpu_peer

    rates = iter([100.0, 90.0, 200.0, 220.0, 150.0, 150.0])  # peer, score per round: 0.9, 1.1, 1.0

    def fake_one(variant, corpus, warmup, model):
        name = "plain/pil+openvino/int8" if variant is None else variant.name
        return Measurement("e2e", name, "x", "int8", images_per_s=next(rates),
                           extra={"cpu_ms_per_image_main": 10.0, "cpu_ms_per_image_decode_children": 5.0})

    monkeypatch.setattr(cpu_peer, "_one", fake_one)
    # stage costs: ours 5 + 15 core-ms, plain 5 + 15 with its own decode 5: 2 cores -> 100 images/s
    costs = {"decode_core_ms_ours": 5.0, "decode_core_ms_plain": 5.0, "infer_core_ms": 15.0,
             "infer_images_per_s": 133.0}
    monkeypatch.setattr(cpu_peer, "_costs", lambda corpus, model: costs)
    monkeypatch.setattr("fracture_batch.machine.cpu_count", lambda: 2)
    result = cpu_peer.alternate_rounds(corpus="c", model="m", rounds=3)
    assert [round(x, 6) for x in result["ratio_vs_plain_per_round"]["score/openvino/int8"]] == [0.9, 1.1, 1.0]
    assert abs(result["median_ratio_vs_plain"]["score/openvino/int8"] - 1.0) < 1e-9
    assert [round(x, 6) for x in result["of_bound_per_round"]["score/openvino/int8"]] == [0.9, 2.2, 1.5]
    cpu_peer.write_report(result, tmp_path, "# t")
    assert "| score/openvino/int8 / plain (same round) | 0.90, 1.10, 1.00 | 1.00 |" in (tmp_path / "cpu_peer.md").read_text()
