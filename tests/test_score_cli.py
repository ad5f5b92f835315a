"""`fracture-batch score` and `info` through Click: summary, exit codes, clear refusals."""
from __future__ import annotations

import json
import os

import pyarrow.dataset as ds
import pytest
from click.testing import CliRunner

from fracture_batch.scoring import sink
from fracture_batch.cli import main

from support import modelgen

FAST = ["--decode-workers", "1", "--intra-op-threads", "1", "--decode-isolation", "thread", "--no-progress"]


def _score(*args):
    return CliRunner().invoke(main, ["score", *map(str, args), *FAST], catch_exceptions=False)


def test_score_writes_dataset_and_prints_summary(models, tmp_path):
    _, onnx_path = models
    modelgen.write_images(tmp_path / "in", 5)
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    r = _score(tmp_path / "in", "--model", onnx_path, "--out", tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert "backend onnxruntime on cpu (.onnx file -> onnxruntime" in r.output  # which and why
    for label, value in (("files found", "6"), ("  ok", "5"), ("  errors", "1")):
        assert any(line.startswith(label) and line.split()[-1] == value for line in r.output.splitlines()), label
    assert "images/s" in r.output and str(tmp_path / "out") in r.output
    assert ds.dataset(str(tmp_path / "out")).count_rows() == 6
    # Second run: everything already committed, nothing rescored.
    r2 = _score(tmp_path / "in", "--model", onnx_path, "--out", tmp_path / "out")
    assert r2.exit_code == 0 and "already done (resumed)  6" in r2.output
    assert json.loads((tmp_path / "out" / "_SUCCESS").read_text())["already_done"] == 6


def test_second_run_on_same_out_refuses_with_lock_message(models, tmp_path):
    _, onnx_path = models
    modelgen.write_images(tmp_path / "in", 1)
    (tmp_path / "out").mkdir()
    held = sink.acquire_lock(tmp_path / "out")  # stands for a first run still going
    try:
        r = _score(tmp_path / "in", "--model", onnx_path, "--out", tmp_path / "out")
    finally:
        held.release()
    assert r.exit_code == 1
    assert "another fracture-batch run is writing to" in r.output
    assert not sink.committed_parts(tmp_path / "out")


def test_lock_excludes_a_second_process(models, tmp_path):
    """The lock is an OS-level flock: a run in another process is refused too."""
    import subprocess
    import sys

    _, onnx_path = models
    modelgen.write_images(tmp_path / "in", 1)
    (tmp_path / "out").mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from fracture_batch.scoring import sink; "
         "lock = sink.acquire_lock(Path(sys.argv[1])); print('held', flush=True); time.sleep(60)",
         str(tmp_path / "out")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = _score(tmp_path / "in", "--model", onnx_path, "--out", tmp_path / "out")
        assert r.exit_code == 1 and "another fracture-batch run is writing to" in r.output
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing: the kernel dropped its lock, so a new run proceeds.
    r = _score(tmp_path / "in", "--model", onnx_path, "--out", tmp_path / "out")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("problem", ["missing_model", "garbage_model", "missing_out_parent", "readonly_out"])
def test_fatal_problems_exit_nonzero_with_a_message(models, tmp_path, problem):
    _, onnx_path = models
    modelgen.write_images(tmp_path / "in", 1)
    model, out = onnx_path, tmp_path / "out"
    if problem == "missing_model":
        model = tmp_path / "nope.onnx"
        expect = "model file not found"
    elif problem == "garbage_model":
        model = tmp_path / "garbage.onnx"
        model.write_bytes(os.urandom(64))
        expect = "cannot read ONNX model"
    elif problem == "missing_out_parent":
        out = tmp_path / "no" / "such" / "out"
        expect = "does not exist"
    else:
        if os.access("/sys", os.W_OK) and not os.path.ismount("/sys"):
            pytest.skip("/sys is not a read-only mount here")
        out = "/sys/fracture-batch-out"  # read-only for root too
        expect = "cannot create output directory"
    r = _score(tmp_path / "in", "--model", model, "--out", out)
    assert r.exit_code == 1 and expect in r.output, r.output


def test_score_help_documents_every_option():
    r = CliRunner().invoke(main, ["score", "--help"])
    assert r.exit_code == 0
    for opt in ("--backend", "--device", "--decoder", "--decode-timeout", "--part-rows", "--resume", "--overwrite",
                "--dicom-ids", "--engine-cache"):
        assert opt in r.output


def test_info_reports_backends_and_why_missing():
    r = CliRunner().invoke(main, ["info", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    names = {c["name"]: c for c in report["backends"] + report["decoders"]}
    assert names["onnxruntime"]["available"] and "CPUExecutionProvider" in names["onnxruntime"]["detail"]
    assert "pydicom" in names and report["cpu"]["usable_cores"] >= 1
    assert set(report["cpu"]["flags"]) >= {"avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"}
    trt = names["tensorrt"]
    assert trt["available"] or "pip install" in trt["detail"]  # missing means: why + how
    table = CliRunner().invoke(main, ["info"])
    assert table.exit_code == 0 and "cpu flags" in table.output and "tensorrt" in table.output
