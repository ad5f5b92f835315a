"""MURA-like studies: 2-4 views of the same limb, one label per study.

Layout (as MURA v1.1 lays out its studies, so evaluation and the study table see the
real thing)::

    OUT/<split>/XR_<BODY PART>/patientNNNNN/studyK_{positive,negative}/imageV.<ext>
    OUT/<split>_labeled_studies.csv      MURA's label file: "<split>/XR_.../studyK_x/,1|0"
    OUT/synth_manifest.csv               one row per image (relpath, label, format, ...)

A study is one limb: its anatomy (bones, soft tissue, the fracture if any) is drawn once
and each view sees it from another projection: rotated, the fracture's displacement
foreshortened as in a lateral or oblique view, with its own exposure, noise, marker
position and collimation. A positive study shows its fracture on every view (hairline
ones stay hairline). DICOM views of one study share a StudyInstanceUID and a series, so
the study table groups them by UID exactly as it groups the folders. Seeding is per
study and per view (``SeedSequence(seed, spawn_key=...)``), so bytes do not depend on
the number of workers, and nothing but the pixels tells the label except the folder name.
"""
from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from fracture_batch.synth.anatomy import Scene, render, sample_scene
from fracture_batch.synth.generate import (
    CLASS_NAMES, DEFAULT_SIZE_RANGE, MANIFEST_NAME, SynthRecord, _balanced_formats, dicom_info, write_manifest,
)
from fracture_batch.synth.writers import ImageFormat, write_image

_NAMESPACE = 5000
VIEWS = ("AP", "LAT", "OBL", "PA")
STUDY_SPLIT = "valid"  # MURA's held-out split name


def labels_csv_name(split: str) -> str:
    return f"{split}_labeled_studies.csv"


def generate_studies(
    out_dir: str | Path,
    n_studies: int,
    *,
    seed: int = 0,
    size_range: tuple[int, int] = DEFAULT_SIZE_RANGE,
    formats: Iterable[ImageFormat | str] = (ImageFormat.PNG8,),
    views: tuple[int, int] = (2, 4),
    fractured_fraction: float = 0.5,
    subtle_fraction: float = 0.1,
    split: str = STUDY_SPLIT,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> list[SynthRecord]:
    """Write ``n_studies`` studies under ``out_dir/split`` plus the label CSV and manifest."""
    if n_studies < 1:
        raise ValueError(f"need at least one study, got {n_studies}")
    lo, hi = views
    if not 1 <= lo <= hi <= len(VIEWS):
        raise ValueError(f"views per study must lie in 1..{len(VIEWS)}, got {views}")
    out = Path(out_dir)
    fmts = _balanced_formats(tuple(ImageFormat(f) for f in formats), n_studies,
                             np.random.SeedSequence(seed, spawn_key=(_NAMESPACE,)))
    n_pos = round(n_studies * fractured_fraction)
    positive = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_NAMESPACE + 1,))).permutation(
        [True] * n_pos + [False] * (n_studies - n_pos))
    plans = _plan(n_studies, seed, size_range, views, positive, subtle_fraction, split)
    jobs = [(p, v, fmts[i]) for i, p in enumerate(plans) for v in range(p["n_views"])]

    def one(job) -> SynthRecord:
        record = _write_view(out, *job, seed=seed)
        if progress is not None:
            progress(1)
        return record

    if workers <= 1:
        records = [one(j) for j in jobs]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            records = list(pool.map(one, jobs))
    write_manifest(out / MANIFEST_NAME, records)
    with open(out / labels_csv_name(split), "w", newline="") as f:  # MURA's format: no header
        writer = csv.writer(f)
        for p in plans:
            writer.writerow([p["folder"] + "/", int(p["fractured"])])
    return records


def _plan(n: int, seed: int, size_range, views, positive, subtle_fraction: float, split: str) -> list[dict]:
    """Per study: folder, size, views, label, the limb's scene and acquisition details."""
    plans: list[dict] = []
    patient = 0
    study_of_patient = 0
    for i in range(n):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_NAMESPACE + 2, i)))
        if i == 0 or study_of_patient >= 2 or rng.random() >= 0.2:  # a fifth of patients have a 2nd study
            patient, study_of_patient = patient + 1, 0
        study_of_patient += 1
        h, w = (int(rng.integers(size_range[0], size_range[1] + 1)) for _ in range(2))
        fractured = bool(positive[i])
        scene = sample_scene(rng, h, w, fractured=fractured, subtle_fraction=subtle_fraction)
        info = dicom_info(scene, rng)
        token = rng.bytes(16).hex()
        label = "positive" if fractured else "negative"
        folder = f"{split}/XR_{info.body_part}/patient{patient:05d}/study{study_of_patient}_{label}"
        plans.append({"index": i, "folder": folder, "scene": scene, "info": info, "fractured": fractured, "split": split,
                      "n_views": int(rng.integers(views[0], views[1] + 1)), "token": token,
                      "order": rng.permutation(len(VIEWS))})
    return plans


def view_scene(scene: Scene, rng: np.random.Generator, view: int) -> Scene:
    """Another projection of the same limb: rotated about the image centre, the fracture's
    sideways displacement foreshortened by the projection angle, new exposure and noise."""
    theta = 0.0 if view == 0 else float(rng.uniform(-0.35, 0.35))
    projection = 0.0 if view == 0 else float(rng.uniform(0.3, 1.3))  # radians away from the first view
    cx, cy = scene.width / 2, scene.height / 2
    c, s = math.cos(theta), math.sin(theta)

    def turn(p: tuple[float, float]) -> tuple[float, float]:
        x, y = p[0] - cx, p[1] - cy
        return (cx + x * c - y * s, cy + x * s + y * c)

    bones = tuple(dataclasses.replace(b, origin=turn(b.origin), angle=b.angle + theta) for b in scene.bones)
    fracture = scene.fracture
    if fracture is not None:
        fracture = dataclasses.replace(fracture, shift=fracture.shift * math.cos(projection))
    marker = scene.marker
    if marker is not None:
        letter, _, _, px = marker
        marker = (letter, float(rng.uniform(0.04, 0.12)) * scene.width, float(rng.uniform(0.04, 0.12)) * scene.height, px)
    u01 = rng.uniform
    return dataclasses.replace(
        scene, limb_origin=turn(scene.limb_origin), limb_angle=scene.limb_angle + theta, bones=bones,
        fracture=fracture, marker=marker,
        collimation=(*(float(m) for m in u01(0.0, 0.07, 4)), 0.9) if rng.random() < 0.3 else None,
        exposure=u01(0.4, 0.7), gamma=u01(0.75, 1.15), fog=u01(0.0, 0.08),
        heel=(u01(0.0, 0.12), u01(0, 2 * math.pi)), noise=u01(0.008, 0.03), noise_seed=int(rng.integers(2**63)),
    )


def _write_view(out: Path, plan: dict, view: int, fmt: ImageFormat, *, seed: int) -> SynthRecord:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_NAMESPACE + 3, plan["index"], view)))
    scene = view_scene(plan["scene"], rng, view)
    info = dataclasses.replace(plan["info"], view=VIEWS[plan["order"][view]], study_uid=_uid(plan["token"], "study"),
                               series_uid=_uid(plan["token"], "series"))
    directory = out / plan["folder"]
    directory.mkdir(parents=True, exist_ok=True)
    path = write_image(directory / f"image{view + 1}", render(scene), fmt, rng, info)
    return SynthRecord(
        relpath=path.relative_to(out).as_posix(), split=plan["split"],
        label=CLASS_NAMES[0] if plan["fractured"] else CLASS_NAMES[1], format=fmt.value,
        width=scene.width, height=scene.height, subtle=bool(scene.fracture is not None and scene.fracture.subtle),
    )


def _uid(token: str, kind: str) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[token, kind])
