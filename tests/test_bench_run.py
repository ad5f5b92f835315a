"""A tiny end-to-end bench on CPU in seconds, the report it writes, and the GPU
acceptance run (GPU rows skipped with a reason here, CPU rows pass)."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from fracture_batch.bench.suite import BenchConfig, run_bench
from fracture_batch.cli.bench_cmd import bench


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    # resnet18 at 32 px, 8 small images, 2 repeats, in this process: seconds, not minutes.
    cfg = BenchConfig(out=tmp / "out", arch="resnet18", input_size=32, batch_sizes=(1, 4), warmup=1, repeats=2,
                      max_seconds=1.0, small_n=8, archive_n=0, decode_n=2, gemm_n=128, quick=True,
                      backends=("onnxruntime",), workdir=tmp / "work", in_process=True,
                      via_export=False)  # export's own path is tested by its tests; this keeps seconds
    return cfg, run_bench(cfg)


def test_tiny_bench_measures_every_suite(tiny_run):
    cfg, run = tiny_run
    by_suite = {s: [r for r in run.measurements if r.suite == s] for s in ("ceiling", "model", "decode", "e2e")}
    assert {r.name for r in by_suite["ceiling"] if r.status == "ok"} >= {"gemm/numpy/fp32/cpu", "gemm/torch/fp32/cpu"}
    model_ok = [r for r in by_suite["model"] if r.status == "ok"]
    assert {(r.precision, r.batch_size) for r in model_ok} == {("fp32", 1), ("fp32", 4), ("int8", 1), ("int8", 4)}
    for r in model_ok:
        assert r.images_per_s > 0 and r.latency_p50_ms <= r.latency_p95_ms <= r.latency_p99_ms
        assert r.gflops > 0 and r.fraction_of_ceiling > 0 and r.build_s > 0 and r.repeats == 2
    cuda_rows = [r for r in by_suite["model"] if r.device == "cuda"]
    assert cuda_rows and all(r.status == "skipped" and r.note for r in cuda_rows)
    decode_ok = {(r.backend, r.format) for r in by_suite["decode"] if r.status == "ok"}
    assert ("python", "png16") in decode_ok and ("python", "dicom-j2k") in decode_ok
    assert all(r.ms_per_megapixel > 0 for r in by_suite["decode"] if r.status == "ok")
    e2e = {r.name: r for r in by_suite["e2e"]}
    assert e2e["naive/torch-eager/fp32"].status == "ok"
    for name in ("score/onnxruntime/fp32", "score/onnxruntime/int8"):
        r = e2e[name]
        assert r.status == "ok", r.note
        assert r.n_images == 8 and r.ratio_vs_naive > 0 and r.fraction_of_model_only > 0
        assert r.bound_by in ("decode", "inference")
        # Where the cores went: the scoring process always uses CPU; decode children are
        # the process-isolated decoders (the default), reaped before the figure is taken.
        assert r.extra["cpu_ms_per_image_main"] > 0 and r.extra["cpu_ms_per_image_decode_children"] > 0


def test_tiny_bench_writes_json_parquet_markdown_plots(tiny_run):
    cfg, run = tiny_run
    out = cfg.out
    for name in ("bench.json", "bench.parquet", "bench.md", "bench_throughput.png", "bench_tails.png",
                 "README_section.md"):
        assert (out / name).stat().st_size > 0, name
    data = json.loads((out / "bench.json").read_text())
    assert data["machine"]["cpu_model"] and len(data["measurements"]) == len(run.measurements)
    assert pq.read_table(out / "bench.parquet").num_rows == len(run.measurements)
    md = (out / "bench.md").read_text()
    assert "## Model only" in md and "onnxruntime" in md and "no CUDA GPU" in md
    assert "Quick run: too few images" in md  # quick=True: the targets table says it cannot judge
    assert "score int8 ÷ naive" in (out / "README_section.md").read_text()


def test_acceptance_gpu_rows_skipped_cpu_rows_pass(tmp_path):
    result = CliRunner().invoke(bench, ["--acceptance", "--out", str(tmp_path), "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 0, result.output
    (js,) = tmp_path.glob("acceptance-*.json")  # one file pair per run, named by GPU and time
    assert js.with_suffix(".md").is_file()
    rows = json.loads(js.read_text())["measurements"]
    cpu = [r for r in rows if r["device"] == "cpu"]
    gpu = [r for r in rows if r["device"] == "cuda"]
    assert len(cpu) == 6 and all(r["status"] == "pass" for r in cpu), [(r["name"], r["note"]) for r in cpu]
    import torch

    if not torch.cuda.is_available():
        # 15 GPU checks (14 + DICOM on the GPU) and the throughput section, each skipped with the reason.
        assert len(gpu) == 16 and all(r["status"] == "skipped" and "CUDA" in r["note"] for r in gpu)
    else:  # on a GPU machine no row may be skipped for want of a GPU
        assert gpu and not [r for r in gpu if r["status"] == "skipped" and "no CUDA" in (r["note"] or "")]
    passed = sum(r["status"] == "pass" for r in rows)
    failed = sum(r["status"] == "fail" for r in rows)
    assert f"{passed} passed, {failed} failed" in result.output
    assert passed >= 5  # the CPU rows at least


def test_bench_help_explains_every_option():
    out = CliRunner().invoke(bench, ["--help"]).output
    for opt in ("--model", "--backends", "--precisions", "--batch-sizes", "--repeats", "--warmup", "--quick",
                "--acceptance", "--out"):
        assert opt in out


def test_bad_batch_sizes_are_rejected():
    result = CliRunner().invoke(bench, ["--batch-sizes", "1,x"])
    assert result.exit_code != 0 and "comma-separated integers" in result.output


@pytest.mark.gpu
def test_acceptance_on_a_gpu_machine_has_no_failures(tmp_path):
    """On a CUDA machine the GPU rows really run: none may fail, and the CUDA AMP step
    (needs only torch) must pass; rows needing optional packages may still skip."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: the GPU acceptance rows cannot run here")
    from fracture_batch.bench.acceptance import run_acceptance

    rows = run_acceptance(workdir=tmp_path)
    assert not [r for r in rows if r.status == "fail"], [(r.name, r.note) for r in rows if r.status == "fail"]
    assert all(r.status == "pass" for r in rows if r.name.startswith("CUDA AMP"))
    assert any(r.backend == "torch" and r.precision == "fp16" and r.images_per_s for r in rows)
