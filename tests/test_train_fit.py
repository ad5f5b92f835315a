"""End-to-end training runs on a tiny data set: outputs, reproducibility, resume, CLI.

resnet18 at 32 px, 1 frozen + 2 unfrozen epochs on ~50 images: a few seconds per run.
No accuracy is asserted here (too little data to be stable); the demo asserts that.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from fracture_batch.cli import main  # noqa: E402
from fracture_batch.model.checkpoint import load_checkpoint  # noqa: E402
from support.train_helpers import make_dataset  # noqa: E402
from train.config import Imbalance, TrainConfig  # noqa: E402
from train.fit import fit  # noqa: E402

TINY = dict(arch="resnet18", image_size=32, frozen_epochs=1, epochs=2, batch_size=8, bootstrap=50,
            num_workers=0, progress=False, backbone_lr=1e-3)
CLI_TINY = ["--arch", "resnet18", "--image-size", "32", "--frozen-epochs", "1", "--epochs", "2",
            "--batch-size", "8", "--bootstrap", "50", "--num-workers", "0", "--no-progress",
            "--backbone-lr", "1e-3", "--pretrained", "none"]


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("xr"), n_per_class={"train": 12, "val": 6, "test": 6},
                        corrupt=1)


@pytest.fixture(scope="module")
def cli_run(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "cli"
    res = CliRunner().invoke(main, ["train", str(data_dir), "--out", str(out), *CLI_TINY])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return out, res.output


def test_cli_prints_phase_table_and_writes_outputs(cli_run):
    out, output = cli_run
    assert "Original Model (Frozen)" in output and "Fine-Tuned Model (Unfrozen)" in output
    for name in ("model.pt", "metrics.json", "report.md", "confusion_matrix.png", "roc_pr.png",
                 "history.png", "timings.json", "test_predictions.csv", "config.json"):
        assert (out / name).is_file(), name
    assert not (out / "last.pt").exists()  # removed once the run completed
    m = json.loads((out / "metrics.json").read_text())
    for phase in ("frozen", "unfrozen"):
        at = m["phases"][phase]["at_threshold"]
        for key in ("accuracy", "f1", "precision", "recall", "roc_auc", "sensitivity", "specificity"):
            lo, hi = at["ci95"][key]
            assert lo <= at[key] <= hi
    assert m["class_counts"]["train"] == {"fractured": 13, "not_fractured": 12}
    assert len(m["skipped_files"]) == 1 and "broken_0.png" in m["skipped_files"][0]
    assert [h["phase"] for h in m["history"]] == ["frozen", "unfrozen", "unfrozen"]
    report = (out / "report.md").read_text()
    assert "Original Model (Frozen)" in report and "ROC AUC" in report and "95% bootstrap CI" in report
    assert "broken_0.png" in report


def test_model_spec_carries_calibration_and_provenance(cli_run, data_dir):
    out, _ = cli_run
    model, spec = load_checkpoint(out / "model.pt")
    m = json.loads((out / "metrics.json").read_text())
    final = m["phases"]["unfrozen"]
    assert spec.arch == "resnet18" and spec.input_size == 32
    assert spec.threshold == final["threshold"] and spec.temperature == final["temperature"]
    assert spec.threshold_method.value == "target_sensitivity" and "sensitivity" in spec.threshold_detail
    assert spec.pretrained == "none" and len(spec.data_fingerprint) == 64
    assert set(spec.versions) == {"torch", "torchvision", "fracture_batch"}
    assert spec.weights_sha256


def test_seeded_runs_give_identical_metrics_and_resume_matches(cli_run, data_dir, tmp_path):
    """Same seed -> byte-identical metrics.json; a run killed after an epoch and resumed too."""
    out, _ = cli_run
    reference = (out / "metrics.json").read_text()

    def kill_after_first_unfrozen(phase, epoch):
        if phase == "unfrozen" and epoch == 0:
            raise Killed

    cfg = TrainConfig(data_dir=data_dir, out_dir=tmp_path / "killed", pretrained="none", **TINY)
    with pytest.raises(Killed):
        fit(cfg, on_epoch_end=kill_after_first_unfrozen)
    last = tmp_path / "killed" / "last.pt"
    assert last.is_file() and not (tmp_path / "killed" / "model.pt").exists()
    state = torch.load(last, weights_only=True)  # plain types only
    assert state["phase"] == "unfrozen" and state["epoch"] == 0
    res = CliRunner().invoke(main, ["train", "--resume", str(tmp_path / "killed"), "--no-progress"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "Fine-Tuned Model (Unfrozen)" in res.output
    assert (tmp_path / "killed" / "metrics.json").read_text() == reference


def test_sampler_imbalance_and_time_budget(data_dir, tmp_path):
    cfg = TrainConfig(data_dir=data_dir, out_dir=tmp_path / "s", pretrained="none",
                      imbalance=Imbalance.SAMPLER, max_minutes=1e-6, **TINY)
    r = fit(cfg)
    assert r.metrics["class_weights"] is None and r.metrics["imbalance"] == "sampler"
    # The first epoch always runs; after it the (tiny) budget stops every further one.
    assert r.metrics["phases"]["frozen"]["epochs_run"] == 1
    assert r.metrics["phases"]["unfrozen"]["epochs_run"] == 0
    assert r.metrics["phases"]["unfrozen"]["stopped_by"] == "time_budget"
    assert (tmp_path / "s" / "model.pt").is_file()


def test_cli_refuses_to_overwrite_and_explains_missing_args(cli_run, data_dir):
    out, _ = cli_run
    res = CliRunner().invoke(main, ["train", str(data_dir), "--out", str(out), *CLI_TINY])
    assert res.exit_code != 0 and "--resume" in res.output
    res = CliRunner().invoke(main, ["train", str(data_dir)])
    assert res.exit_code == 2 and "--out" in res.output
    res = CliRunner().invoke(main, ["train", "--help"])
    for opt in ("--frozen-epochs", "--unfreeze", "--amp", "--pretrained", "--target-sensitivity",
                "--resume", "--cache", "--imbalance", "--step-size", "--gamma", "--patience"):
        assert opt in res.output


def test_dali_training_loader_on_cpu(data_dir, tmp_path):
    """DALI's CPU operators run the same graph the GPU would; the bad file is reported."""
    from fracture_batch.decode.select import has_dali
    from train.config import Loader

    ok, why = has_dali()
    if not ok:
        pytest.skip(why)
    cfg = TrainConfig(data_dir=data_dir, out_dir=tmp_path / "d", pretrained="none", loader=Loader.DALI,
                      **{**TINY, "epochs": 0})
    r = fit(cfg)
    assert set(r.metrics["phases"]) == {"frozen"}
    assert any("broken_0.png" in m for m in r.metrics["skipped_files"])
    # DALI drops the last partial batch: 24 readable training files, batches of 8.
    assert r.metrics["history"][0]["train_accuracy"] >= 0 and len(r.metrics["history"]) == 1
