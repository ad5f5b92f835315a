"""`synth --studies`: MURA-like studies, 2-4 views of one limb, one label per study."""
from __future__ import annotations

import csv
import hashlib
import math
import re
from collections import defaultdict

import numpy as np
import pydicom
from click.testing import CliRunner

from fracture_batch.cli import main
from fracture_batch.synth import generate_studies, labels_csv_name
from fracture_batch.synth.anatomy import sample_scene
from fracture_batch.synth.studies import view_scene

STUDY_DIR = re.compile(r"^valid/XR_[A-Z]+/patient\d{5}/study\d_(positive|negative)$")


def _by_study(records):
    out = defaultdict(list)
    for r in records:
        out[r.relpath.rsplit("/", 1)[0]].append(r)
    return out


def test_layout_views_labels_and_the_label_file(tmp_path):
    records = generate_studies(tmp_path, 12, size_range=(64, 80), seed=3, formats=("png8", "jpeg"))
    studies = _by_study(records)
    assert len(studies) == 12
    for folder, views in studies.items():
        m = STUDY_DIR.match(folder)
        assert m, folder
        assert 2 <= len(views) <= 4
        assert {v.label for v in views} == {"fractured" if m.group(1) == "positive" else "not_fractured"}
        assert len({v.format for v in views}) == 1  # one study, one modality
        assert [v.relpath.rsplit("/", 1)[1].split(".")[0] for v in sorted(views, key=lambda v: v.relpath)] == [
            f"image{i + 1}" for i in range(len(views))]
    assert sum(f.endswith("_positive") for f in studies) == 6  # balanced
    with open(tmp_path / labels_csv_name("valid"), newline="") as f:
        rows = list(csv.reader(f))
    assert {r[0] for r in rows} == {f + "/" for f in studies}
    assert all(r[1] == ("1" if r[0].rstrip("/").endswith("_positive") else "0") for r in rows)


def test_same_seed_same_bytes_for_any_worker_count(tmp_path):
    def digest(root):
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("image*"))}

    generate_studies(tmp_path / "a", 5, size_range=(48, 64), seed=7, workers=1)
    generate_studies(tmp_path / "b", 5, size_range=(48, 64), seed=7, workers=2)
    assert digest(tmp_path / "a") == digest(tmp_path / "b") and digest(tmp_path / "a")


def test_dicom_views_of_a_study_share_its_uids(tmp_path):
    records = generate_studies(tmp_path, 4, size_range=(48, 64), seed=1, formats=("dicom-mono2",))
    uids = {}
    for folder, views in _by_study(records).items():
        headers = [pydicom.dcmread(tmp_path / v.relpath, stop_before_pixels=True) for v in views]
        assert len({h.StudyInstanceUID for h in headers}) == 1 and len({h.SeriesInstanceUID for h in headers}) == 1
        assert len({h.SOPInstanceUID for h in headers}) == len(views)
        assert len({h.BodyPartExamined for h in headers}) == 1
        assert folder.split("/")[1] == "XR_" + headers[0].BodyPartExamined
        uids[folder] = headers[0].StudyInstanceUID
    assert len(set(uids.values())) == len(uids)


def test_a_view_is_the_same_limb_turned_with_the_same_fracture():
    rng = np.random.default_rng(0)
    scene = sample_scene(rng, 200, 240, fractured=True)
    view = view_scene(scene, np.random.default_rng(1), 1)
    turn = view.limb_angle - scene.limb_angle
    assert 0 < abs(turn) <= 0.35
    for a, b in zip(scene.bones, view.bones):
        assert math.isclose(b.angle - a.angle, turn) and (b.radius, b.lo_end, b.hi_end) == (a.radius, a.lo_end, a.hi_end)
    f0, f1 = scene.fracture, view.fracture
    assert f1 is not None and (f1.bone, f1.u, f1.gap, f1.subtle) == (f0.bone, f0.u, f0.gap, f0.subtle)
    assert abs(f1.shift) <= abs(f0.shift)  # foreshortened by the projection
    assert view.noise_seed != scene.noise_seed
    assert view_scene(sample_scene(rng, 200, 240, fractured=False), rng, 2).fracture is None


def test_cli_study_mode(tmp_path):
    r = CliRunner().invoke(main, ["synth", str(tmp_path / "s"), "--studies", "3", "--size", "48",
                                  "--format", "png8", "--no-contact-sheet"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "3 studies" in r.output and labels_csv_name("valid") in r.output
    assert len(list((tmp_path / "s" / "valid").rglob("*.png"))) >= 6
