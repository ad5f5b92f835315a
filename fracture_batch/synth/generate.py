"""Seeded synthetic data sets: ImageFolder splits, flat scoring corpora, archive-size files.

Reproducibility: every image has its own generator seeded from
``SeedSequence(seed, spawn_key=key)`` where ``key`` names the image (split, class,
ordinal), so output bytes are the same on every run and for any number of workers.

No leak: nothing but the pixels tells the class. Image sizes come from the image's own
generator in a class-independent range; formats are assigned in equal shares within
every (split, class) group; file names are random hex from the seed; the generation
order is a seeded shuffle (so not even file times follow the class).
"""
from __future__ import annotations

import csv
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fracture_batch.model.spec import ModelSpec
from fracture_batch.synth.anatomy import Scene, render, sample_scene
from fracture_batch.synth.writers import DEFAULT_FORMATS, DicomInfo, ImageFormat, has_j2k_encoder, write_image

log = logging.getLogger(__name__)

CLASS_NAMES: tuple[str, ...] = ModelSpec().class_names  # ("fractured", "not_fractured")
POSITIVE = ModelSpec().positive_class
SPLITS = ("train", "val", "test")
MANIFEST_NAME = "synth_manifest.csv"
DEFAULT_SIZE_RANGE = (400, 700)
ARCHIVE_SHAPE = (2500, 2000)  # (height, width) of a typical CR/DR plate at ~0.15 mm


@dataclass(frozen=True)
class SynthConfig:
    """An ImageFolder data set: ``OUT/{train,val,test}/{fractured,not_fractured}/``."""

    n: int = 1000  # total images over all splits
    seed: int = 0
    size_range: tuple[int, int] = DEFAULT_SIZE_RANGE  # each side drawn independently, pixels
    formats: tuple[ImageFormat, ...] = DEFAULT_FORMATS
    subtle_fraction: float = 0.1  # share of fractures drawn as hairline, undisplaced lines
    split_ratios: tuple[float, float, float] = (0.7, 0.15, 0.15)
    workers: int = 1


@dataclass(frozen=True)
class SynthRecord:
    """One written file (a manifest row)."""

    relpath: str
    split: str
    label: str
    format: str
    width: int
    height: int
    subtle: bool  # a fracture drawn subtle (always False for not_fractured)


@dataclass(frozen=True)
class _Job:
    key: tuple[int, ...]  # spawn key naming the image (seed independence from order)
    directory: str  # relative output directory
    split: str
    fractured: bool
    fmt: ImageFormat
    shape_range: tuple[tuple[int, int], tuple[int, int]]  # (height range, width range)
    subtle_fraction: float


def size_range_for(size: int | None) -> tuple[int, int]:
    """``--size PX``: PX is the longest side; each side is drawn in [0.75 PX, PX]."""
    if size is None:
        return DEFAULT_SIZE_RANGE
    if size < 16:
        raise ValueError(f"--size must be at least 16 pixels, got {size}")
    return (max(16, round(0.75 * size)), size)


def resolve_split_counts(n: int, ratios: Sequence[float] = (0.7, 0.15, 0.15)) -> dict[str, int]:
    """Images per split, each even (balanced classes) and at least 2 (one per class)."""
    if n < 6:
        raise ValueError(f"need at least 6 images (one per class per split), got {n}")
    total = float(sum(ratios))
    val = max(2, 2 * round(n * ratios[1] / total / 2))
    test = max(2, 2 * round(n * ratios[2] / total / 2))
    train = max(2, 2 * ((n - val - test) // 2))
    return {"train": train, "val": val, "test": test}


def plan_dataset(config: SynthConfig) -> list[_Job]:
    counts = resolve_split_counts(config.n, config.split_ratios)
    shape_range = (tuple(config.size_range), tuple(config.size_range))
    jobs: list[_Job] = []
    for s, split in enumerate(SPLITS):
        # one rotation of the format list per split, shared by both classes: small splits
        # still get the same formats in each class, and not always the first ones
        start = int(np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(1100 + s,))).integers(1 << 16))
        for c, label in enumerate(CLASS_NAMES):
            m = counts[split] // 2
            fmts = _balanced_formats(
                config.formats, m, np.random.SeedSequence(config.seed, spawn_key=(1000 + s, c)), start)
            jobs += [
                _Job((s, c, k), f"{split}/{label}", split, label == POSITIVE, fmts[k], shape_range,
                     config.subtle_fraction)
                for k in range(m)
            ]
    return _shuffled(jobs, config.seed)


def generate_dataset(
    out_dir: str | Path, config: SynthConfig = SynthConfig(), *, progress: Callable[[int], None] | None = None
) -> list[SynthRecord]:
    """Write the ImageFolder data set and ``synth_manifest.csv`` (at the top, outside the splits)."""
    out = Path(out_dir)
    for split in SPLITS:
        for label in CLASS_NAMES:
            (out / split / label).mkdir(parents=True, exist_ok=True)
    records = _run(out, plan_dataset(config), config.seed, config.workers, progress)
    write_manifest(out / MANIFEST_NAME, records)
    log.info("wrote %d synthetic radiographs to %s", len(records), out)
    return records


def generate_corpus(
    out_dir: str | Path,
    n: int,
    *,
    size_range: tuple[int, int] = DEFAULT_SIZE_RANGE,
    formats: Iterable[ImageFormat | str] = (ImageFormat.PNG8, ImageFormat.JPEG),
    seed: int = 0,
    fractured_fraction: float = 0.5,
    subtle_fraction: float = 0.1,
    workers: int = 1,
    manifest: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[SynthRecord]:
    """A flat, unlabeled directory of ``n`` images (e.g. a scoring benchmark corpus).

    Labels are drawn per image with ``fractured_fraction``; they go to ``manifest``
    (a CSV path, ideally outside ``out_dir`` so a scorer does not see it) when given.
    """
    shape_range = (tuple(size_range), tuple(size_range))
    return _flat(out_dir, n, seed, tuple(ImageFormat(f) for f in formats), shape_range,
                 fractured_fraction, subtle_fraction, workers, manifest, progress, namespace=2000)


def generate_archive(
    out_dir: str | Path,
    n: int,
    *,
    shape: tuple[int, int] = ARCHIVE_SHAPE,
    formats: Iterable[ImageFormat | str] | None = None,
    seed: int = 0,
    fractured_fraction: float = 0.5,
    workers: int = 1,
    manifest: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[SynthRecord]:
    """Archive-size files: ~``shape`` (height, width, +-4 %) 12-bit radiographs as 16-bit
    PNG and uncompressed DICOM, plus JPEG 2000 lossless DICOM when an encoder is installed."""
    if formats is None:
        formats = [ImageFormat.PNG16, ImageFormat.DICOM_MONO2, ImageFormat.DICOM_MONO1]
        if has_j2k_encoder():
            formats.append(ImageFormat.DICOM_J2K)
        else:
            log.warning("no JPEG 2000 encoder (pip install pylibjpeg-openjpeg): archive without dicom-j2k")
    h, w = shape
    shape_range = ((round(h * 0.96), round(h * 1.04)), (round(w * 0.96), round(w * 1.04)))
    return _flat(out_dir, n, seed, tuple(ImageFormat(f) for f in formats), shape_range,
                 fractured_fraction, 0.1, workers, manifest, progress, namespace=3000)


def _flat(out_dir, n, seed, formats, shape_range, fractured_fraction, subtle_fraction, workers, manifest,
          progress, *, namespace: int) -> list[SynthRecord]:
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fmts = _balanced_formats(formats, n, np.random.SeedSequence(seed, spawn_key=(namespace,)))
    labels = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(namespace + 1,))).random(n)
    jobs = [_Job((namespace + 2, k), "", "", bool(labels[k] < fractured_fraction), fmts[k], shape_range,
                 subtle_fraction) for k in range(n)]
    records = _run(out, jobs, seed, workers, progress)
    if manifest is not None:
        write_manifest(Path(manifest), records)
    return records


def _balanced_formats(
    formats: Sequence[ImageFormat], m: int, seq: np.random.SeedSequence, start: int = 0
) -> list[ImageFormat]:
    """Equal shares (+-1) of each format, cycling from ``start``, in a seeded order."""
    if not formats:
        raise ValueError("at least one image format is needed")
    cyclic = [formats[(start + k) % len(formats)] for k in range(m)]
    order = np.random.default_rng(seq).permutation(m)
    return [cyclic[i] for i in order]


def _shuffled(jobs: list[_Job], seed: int) -> list[_Job]:
    order = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(999,))).permutation(len(jobs))
    return [jobs[i] for i in order]


def _run(out: Path, jobs: list[_Job], seed: int, workers: int, progress) -> list[SynthRecord]:
    def one(job: _Job) -> SynthRecord:
        record = make_one(out, job, seed)
        if progress is not None:
            progress(1)
        return record

    if workers <= 1:
        return [one(j) for j in jobs]
    # numpy, zlib and libjpeg release the GIL, so threads overlap well; results are
    # per-job deterministic, so the worker count never changes the output.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, jobs))


def make_one(out: Path, job: _Job, seed: int) -> SynthRecord:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=job.key))
    (h_lo, h_hi), (w_lo, w_hi) = job.shape_range
    height, width = int(rng.integers(h_lo, h_hi + 1)), int(rng.integers(w_lo, w_hi + 1))
    name = uuid.UUID(bytes=rng.bytes(16), version=4).hex
    scene = sample_scene(rng, height, width, fractured=job.fractured, subtle_fraction=job.subtle_fraction)
    pixels = render(scene)
    directory = out / job.directory if job.directory else out
    path = write_image(directory / name, pixels, job.fmt, rng, dicom_info(scene, rng))
    return SynthRecord(
        relpath=path.relative_to(out).as_posix(), split=job.split,
        label=CLASS_NAMES[0] if job.fractured else CLASS_NAMES[1], format=job.fmt.value,
        width=width, height=height, subtle=bool(scene.fracture is not None and scene.fracture.subtle),
    )


def dicom_info(scene: Scene, rng: np.random.Generator) -> DicomInfo:
    """Body part from the drawn anatomy (class-independent), laterality from the marker."""
    joint = scene.bones[0].hi_end is not None
    paired = len(scene.bones) - int(joint) > 1
    choices = {
        (True, True): ("ELBOW", "WRIST", "KNEE", "ANKLE"),
        (True, False): ("FOREARM", "LEG"),
        (False, True): ("ELBOW", "KNEE"),
        (False, False): ("HUMERUS", "FEMUR"),
    }[(paired, joint)]
    side = scene.marker[0] if scene.marker is not None else ("L" if rng.random() < 0.5 else "R")
    return DicomInfo(str(rng.choice(choices)), side, str(rng.choice(["AP", "PA", "LL"])))


def write_manifest(path: Path, records: Sequence[SynthRecord]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(SynthRecord.__dataclass_fields__)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in sorted(records, key=lambda r: r.relpath):  # sorted: no generation order
            writer.writerow(asdict(r))


def read_manifest(path: str | Path) -> list[SynthRecord]:
    with open(path, newline="") as f:
        return [
            SynthRecord(r["relpath"], r["split"], r["label"], r["format"], int(r["width"]), int(r["height"]),
                        r["subtle"] == "True")
            for r in csv.DictReader(f)
        ]


def count_table(records: Iterable[SynthRecord]) -> list[tuple[str, str, str, int]]:
    """(split, label, format, count) rows, sorted, for the CLI summary."""
    counts: dict[tuple[str, str, str], int] = {}
    for r in records:
        key = (r.split or "-", r.label, r.format)
        counts[key] = counts.get(key, 0) + 1
    return [(*k, v) for k, v in sorted(counts.items())]
