"""`fracture-batch evaluate`: labels from folders or a CSV, metrics against sklearn, CIs, plots."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from fracture_batch.cli import main
from fracture_batch.model.spec import ModelSpec
from fracture_batch.model import metrics
from fracture_batch.report.evaluate import EvaluateConfig, evaluate_run, format_table
from fracture_batch.report.labels import CsvLabels, LabelError, LabelSource, folder_label
from fracture_batch.scoring.config import DecodeIsolation, ScoreConfig
from fracture_batch.scoring.local import score
from fracture_batch.synth.studies import generate_studies, labels_csv_name

from support import modelgen


def _cfg(inputs, model, out) -> ScoreConfig:
    return ScoreConfig(inputs=tuple(map(str, inputs)), model=str(model), out=str(out), decoder="python",
                       batch_size=8, decode_workers=1, intra_op_threads=1, decode_isolation=DecodeIsolation.THREAD)


@pytest.fixture(scope="module")
def mura_run(tmp_path_factory):
    """10 synthetic MURA-like studies (2-4 views, 64-80 px) scored by the tiny model."""
    _, onnx_path = modelgen.tiny_models(tmp_path_factory)
    tmp = tmp_path_factory.mktemp("mura")
    records = generate_studies(tmp / "data", 10, size_range=(64, 80), seed=1)
    score(_cfg([tmp / "data" / "valid"], onnx_path, tmp / "out"))
    return tmp, records


def test_cohens_kappa_and_rank_auc_match_sklearn():
    from sklearn.metrics import cohen_kappa_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.4
    p = np.round(np.clip(0.3 * y + 0.7 * rng.random(300), 0, 1), 2)  # rounded: ties, as real scores have
    m = metrics.binary_metrics(y, p, 0.5)
    assert m["kappa"] == pytest.approx(cohen_kappa_score(y, p >= 0.5), abs=1e-12)
    assert metrics._auc_ranks(y, p)[0] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    groups = np.arange(300) // 3  # studies of three views
    ci = metrics.bootstrap_ci(y, p, 0.5, n_boot=300, seed=1, groups=groups)
    assert ci == metrics.bootstrap_ci(y, p, 0.5, n_boot=300, seed=1, groups=groups)  # seeded
    for k in ("roc_auc", "kappa", "sensitivity", "specificity"):
        assert ci[k][0] <= m[k] <= ci[k][1], k


def test_labels_from_folders_and_csv(tmp_path):
    spec = ModelSpec()
    assert folder_label("train/fractured/a.png", LabelSource.CLASS_FOLDERS, spec) == 1
    assert folder_label("x/Not_Fractured/b.png", LabelSource.CLASS_FOLDERS, spec) == 0
    assert folder_label("XR_WRIST/patient1/study2_negative/image1.png", LabelSource.MURA, spec) == 0
    assert folder_label("XR_WRIST/patient1/study1_positive/image1.png", LabelSource.MURA, spec) == 1
    assert folder_label("loose/a.png", LabelSource.MURA, spec) is None
    mura = tmp_path / "mura.csv"
    mura.write_text("MURA-v1.1/valid/XR_WRIST/patient11185/study1/,1\nMURA-v1.1/valid/XR_WRIST/patient11186/study1/,0\n")
    table = CsvLabels(mura, spec)
    assert table.lookup("/data/valid/XR_WRIST/patient11185/study1") == 1  # trailing components match
    assert table.lookup("/data/valid/XR_WRIST/patient11186/study1") == 0
    assert table.lookup("/data/other/patient99999/study1") is None
    assert table.lookup("/data/study1") is None  # one shared component is not a match
    header = tmp_path / "labels.csv"
    header.write_text("relpath,label\na/x.png,fractured\na/y.png,normal\n")
    t2 = CsvLabels(header, spec)
    assert (t2.lookup("/in/a/x.png"), t2.lookup("/in/a/y.png")) == (1, 0)
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\na.png,maybe\n")
    with pytest.raises(LabelError, match="line 2.*'maybe'"):
        CsvLabels(bad, spec)


def test_mura_folders_give_image_and_study_metrics(mura_run):
    from sklearn.metrics import roc_auc_score

    tmp, records = mura_run
    result = evaluate_run(EvaluateConfig(out=str(tmp / "out"), n_boot=200))
    assert result.source == "mura"
    assert result.image["n"] == len(records) and result.study["n"] == 10
    assert result.study["n_positive"] == 5  # generate_studies balances the labels
    import pyarrow.parquet as pq

    st = pq.read_table(tmp / "out" / "_studies" / "studies.parquet").to_pylist()
    y = [int("_positive" in r["study_folder"]) for r in st]
    assert result.study["roc_auc"] == pytest.approx(roc_auc_score(y, [r["prob_study"] for r in st]))
    for level in (result.image, result.study):
        for k in ("roc_auc", "sensitivity", "specificity", "kappa"):
            lo, hi = level["ci95"][k]  # 10 studies: an interval, not necessarily around the estimate
            assert -1.0 <= lo <= hi <= 1.0 or np.isnan(level[k]), k
    saved = json.loads((tmp / "out" / "_evaluation" / "evaluation.json").read_text())
    assert saved["study"]["n"] == 10 and saved["label_source"] == "mura"
    for name in ("roc.png", "pr.png"):
        assert (tmp / "out" / "_evaluation" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = format_table(result)
    assert table.splitlines()[0].split()[:3] == ["level", "n", "positive"]
    assert "study" in table and "Cohen's kappa" in table


def test_cli_with_the_mura_label_csv_agrees_with_the_folders(mura_run, tmp_path):
    tmp, _ = mura_run
    folders = evaluate_run(EvaluateConfig(out=str(tmp / "out"), n_boot=50, results_dir=str(tmp_path / "a")))
    csv = tmp / "data" / labels_csv_name("valid")
    r = CliRunner().invoke(main, ["evaluate", str(tmp / "out"), "--labels", str(csv), "--bootstrap", "50",
                                  "--results", str(tmp_path / "b")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "image" in r.output and "study" in r.output and "labels: csv" in r.output
    via_csv = json.loads((tmp_path / "b" / "evaluation.json").read_text())
    for level in ("image", "study"):
        for k in ("n", "n_positive", "roc_auc", "kappa", "sensitivity", "specificity"):
            assert via_csv[level][k] == pytest.approx(getattr(folders, level)[k], nan_ok=True), (level, k)


def test_no_labels_is_a_clear_error(tmp_path, tmp_path_factory):
    _, onnx_path = modelgen.tiny_models(tmp_path_factory)
    modelgen.write_images(tmp_path / "in" / "plain", 3)
    score(_cfg([tmp_path / "in"], onnx_path, tmp_path / "out"))
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path / "out")])
    assert r.exit_code == 1 and "has a label" in r.output and "--labels" in r.output
