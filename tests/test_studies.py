"""The study table: grouping rules, aggregation, and one table however the rows were written."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from fracture_batch.model.spec import SPEC_METADATA_KEY, ModelSpec
from fracture_batch.scoring import sink, studies
from fracture_batch.scoring.config import DecodeIsolation, ScoreConfig
from fracture_batch.scoring.local import score
from fracture_batch.scoring.studies import StudyAggregate, StudyKey, StudyRules

from support import modelgen

# Probabilities are float32 per image and averaged in float64; summation order differs
# between one run and a resumed one (other part boundaries), which moves a mean by ~1e-16.
MEAN_TOL = 1e-12

_ROW_SCHEMA = pa.schema([("path", pa.string()), ("relpath", pa.string()), ("status", pa.string()),
                         ("prob_fractured", pa.float32()), ("model_sha256", pa.string()),
                         ("dicom_study_instance_uid", pa.string())])


def _row(path, prob=None, uid=None, root="/d"):
    return {"path": f"{root}/{path}", "relpath": path, "status": "ok" if prob is not None else "error",
            "prob_fractured": prob, "model_sha256": "m", "dicom_study_instance_uid": uid}


def _table(rows, rules=StudyRules(), spec=ModelSpec(threshold=0.5), batch_rows=2):
    t = pa.Table.from_pylist(rows, schema=_ROW_SCHEMA)
    out = studies.aggregate_rows(ds.dataset(t), spec, rules, batch_rows=batch_rows)
    return {r["study_key"]: r for r in out.to_pylist()}


ROWS = [
    _row("p1/study1_positive/image1.png", 0.9), _row("p1/study1_positive/image2.png", 0.3),
    _row("p1/study1_positive/broken.png"),  # an error row: counted, not averaged
    _row("p1/study2_negative/nested/image1.png", 0.1),  # inside a study folder: that study
    _row("loose/a.png", 0.2), _row("top.png"),
    _row("x/1.dcm", 0.7, uid="tok"), _row("y/2.dcm", 0.5, uid="tok"),  # one study, two folders
]


def test_mura_folders_parent_folders_and_dicom_uids():
    t = _table(ROWS)
    s1 = t["/d/p1/study1_positive"]
    assert (s1["key_source"], s1["study_folder"]) == ("study_folder", "p1/study1_positive")
    assert (s1["n_images"], s1["n_ok"], s1["n_errors"]) == (3, 2, 1)
    assert s1["prob_mean"] == pytest.approx((0.9 + 0.3) / 2) and s1["prob_max"] == pytest.approx(0.9)
    assert s1["prob_study"] == s1["prob_mean"] and s1["pred_label"] == "fractured" and s1["aggregate"] == "mean"
    assert t["/d/p1/study2_negative"]["n_images"] == 1
    assert t["/d/loose"]["key_source"] == "parent_folder" and t["/d/loose"]["pred_label"] == "not_fractured"
    root = t["/d"]  # a file at the top of the input root: the root is its folder
    assert (root["study_folder"], root["n_errors"], root["prob_study"], root["pred_label"]) == (".", 1, None, None)
    uid = t["tok"]
    assert (uid["key_source"], uid["n_images"]) == ("dicom_study_uid", 2)
    assert uid["prob_mean"] == pytest.approx(0.6) and uid["threshold"] == 0.5


def test_folder_rule_ignores_uids_and_max_rule_takes_the_worst_view():
    t = _table(ROWS, StudyRules(StudyKey.FOLDER, StudyAggregate.MAX))
    assert "tok" not in t and t["/d/x"]["n_images"] == t["/d/y"]["n_images"] == 1
    s1 = t["/d/p1/study1_positive"]
    assert s1["aggregate"] == "max" and s1["prob_study"] == pytest.approx(0.9)


def test_threshold_decides_at_the_spec_value():
    t = _table(ROWS, spec=ModelSpec(threshold=0.65))
    assert t["tok"]["pred_label"] == "not_fractured"  # mean 0.6 < 0.65
    assert _table(ROWS, StudyRules(aggregate=StudyAggregate.MAX), spec=ModelSpec(threshold=0.65))["tok"][
        "pred_label"] == "fractured"  # max 0.7


def test_batching_does_not_change_the_table():
    one = _table(ROWS, batch_rows=1000)
    for n in (1, 3):
        other = _table(ROWS, batch_rows=n)
        assert other.keys() == one.keys()
        for k, r in one.items():
            o = other[k]
            assert {c: o[c] for c in r if not c.startswith("prob")} == {c: r[c] for c in r if not c.startswith("prob")}
            for c in ("prob_mean", "prob_max", "prob_study"):
                assert o[c] == pytest.approx(r[c], abs=MEAN_TOL) if r[c] is not None else o[c] is None


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return modelgen.tiny_models(tmp_path_factory)


def _cfg(inputs, model, out, **kw) -> ScoreConfig:
    base = dict(decoder="python", batch_size=4, decode_workers=1, intra_op_threads=1,
                decode_isolation=DecodeIsolation.THREAD, part_rows=3, part_seconds=60.0)
    base.update(kw)
    return ScoreConfig(inputs=tuple(str(i) for i in inputs), model=str(model), out=str(out), **base)


def _study_rows(out) -> dict[str, dict]:
    return {r["study_key"]: r for r in studies.read_studies(out).to_pylist()}


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        for c, v in a[k].items():
            if c.startswith("prob") and v is not None:
                assert b[k][c] == pytest.approx(v, abs=MEAN_TOL), (k, c)
            else:
                assert b[k][c] == v, (k, c)


def test_every_run_writes_the_study_table_and_resume_aggregates_once(models, tmp_path):
    _, onnx_path = models
    study = tmp_path / "in" / "patient00001" / "study1_positive"
    modelgen.write_images(study, 2)
    modelgen.write_images(tmp_path / "in" / "patient00002" / "study1_negative", 3, start=10)
    score(_cfg([tmp_path / "in"], onnx_path, tmp_path / "out"))
    first = _study_rows(tmp_path / "out")
    assert first[str(study)]["n_images"] == 2
    # A third view of the same study arrives; the resumed run writes only its row, and
    # the study is aggregated once from the rows of both runs.
    modelgen.write_images(study, 1, start=5)
    s = score(_cfg([tmp_path / "in"], onnx_path, tmp_path / "out"))
    assert (s.already_done, s.scored) == (5, 1)
    resumed = _study_rows(tmp_path / "out")
    assert resumed[str(study)]["n_images"] == 3
    score(_cfg([tmp_path / "in"], onnx_path, tmp_path / "oneshot"))
    _same(_study_rows(tmp_path / "oneshot"), resumed)
    # Same metadata as the image parts, plus the rules.
    meta = pq.read_schema(studies.studies_path(tmp_path / "out")).metadata
    assert ModelSpec.from_json(meta[SPEC_METADATA_KEY.encode()]).input_size == modelgen.INPUT_SIZE
    assert json.loads(meta[studies.STUDIES_METADATA_KEY.encode()]) == {
        "study_key": "auto", "aggregate": "mean", "source_rows": 6}
    done = sink.read_success(tmp_path / "out")
    assert done["studies"]["n"] == 2 and done["studies"]["rules"]["aggregate"] == "mean"


def test_rules_are_options_and_recorded(models, tmp_path):
    _, onnx_path = models
    modelgen.write_images(tmp_path / "in" / "a", 3)
    score(_cfg([tmp_path / "in"], onnx_path, tmp_path / "out", study_key=StudyKey.FOLDER,
               study_aggregate=StudyAggregate.MAX))
    rows = _study_rows(tmp_path / "out")
    r = rows[str(tmp_path / "in" / "a")]
    assert r["aggregate"] == "max" and r["prob_study"] == r["prob_max"]
    assert studies.rules_of(studies.read_studies(tmp_path / "out")) == StudyRules(StudyKey.FOLDER, StudyAggregate.MAX)
    # The image dataset is read as before: the study table sits in an ignored "_studies" folder.
    assert ds.dataset(str(tmp_path / "out"), format="parquet").count_rows() == 3


def test_dicom_studies_group_by_the_treated_uid(models, tmp_path):
    import numpy as np

    from support import imagegen

    _, onnx_path = models
    arr = (np.arange(40 * 56, dtype=np.uint16).reshape(40, 56) * 4095 // (40 * 56)).astype(np.uint16)
    uid = "1.2.826.0.1.3680043.8.498.1"
    for d in ("a", "b"):  # two folders, one study
        (tmp_path / "in" / d).mkdir(parents=True)
        imagegen.make_dicom(tmp_path / "in" / d / "view.dcm", arr, bits_stored=12, extra={"StudyInstanceUID": uid})
    score(_cfg([tmp_path / "in"], onnx_path, tmp_path / "hash"))
    (only,) = _study_rows(tmp_path / "hash").values()
    assert only["n_images"] == 2 and only["key_source"] == "dicom_study_uid" and only["study_key"] != uid
    score(_cfg([tmp_path / "in"], onnx_path, tmp_path / "keep", identifiers="keep"))
    assert list(_study_rows(tmp_path / "keep")) == [uid]
    score(_cfg([tmp_path / "in"], onnx_path, tmp_path / "drop", identifiers="drop"))
    assert sorted(r["key_source"] for r in _study_rows(tmp_path / "drop").values()) == ["parent_folder"] * 2
