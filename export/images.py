"""Real images for calibration and parity, through the model spec's own preprocessing.

Two disjoint sets are drawn: calibration images set the int8 activation ranges; held-out
images measure every variant against the torch fp32 model. Measuring on the images that
set the ranges would flatter int8, so the sets never share a file.

Sources:
- ``data_dir``: (default: the ``data_dir`` in the training run's ``config.json`` next to
  the checkpoint) a split dataset root ``{train,val,test}/<class>/...`` (what ``synth`` and
  ``train`` use). Parity runs on ``test`` (else ``val``); calibration on ``val`` when
  parity uses ``test``, else on ``train``.
- ``calib_dir``: any folder of images. With a ``data_dir`` it only feeds calibration;
  alone it is split (deterministic shuffle) into calibration and parity parts.
Labels come from a path component named like one of the spec's classes; without them
parity still measures probability differences and agreement, but not ROC AUC.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fracture_batch.decode import DecodeError, decode_for_model
from fracture_batch.model.spec import ModelSpec

from export.config import ExportConfig

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom"}
HELDOUT_SPLITS = ("test", "val", "valid", "validation")
CALIB_SPLITS = ("val", "valid", "validation", "train")


class ImageSourceError(Exception):
    """No usable images for calibration or parity; the message says what to pass."""


@dataclass(frozen=True)
class ImageSet:
    paths: tuple[Path, ...]
    labels: tuple[int | None, ...]  # 1 = spec.positive_class, 0 = another class, None = unknown
    source: str

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def labelled(self) -> bool:
        return bool(self.labels) and all(label is not None for label in self.labels)


def list_images(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _label(path: Path, root: Path, spec: ModelSpec) -> int | None:
    for part in path.relative_to(root).parts[:-1]:
        if part in spec.class_names:
            return int(part == spec.positive_class)
    return None


def _image_set(paths: list[Path], root: Path, spec: ModelSpec, source: str) -> ImageSet:
    return ImageSet(tuple(paths), tuple(_label(p, root, spec) for p in paths), source)


def _sample(paths: list[Path], n: int, seed: int) -> list[Path]:
    if len(paths) <= n:
        return paths
    return sorted(random.Random(seed).sample(paths, n))


def _split_dir(data_dir: Path, names: tuple[str, ...], exclude: Path | None = None) -> Path | None:
    for name in names:
        d = data_dir / name
        if d.is_dir() and d != exclude and list_images(d):
            return d
    return None


def training_data_dir(checkpoint: Path) -> Path | None:
    """The dataset a checkpoint was trained on, from ``RUN_DIR/config.json`` (``data_dir``)
    written by ``fracture-batch train``; None when it is not recorded or no longer there."""
    run_config = Path(checkpoint).parent / "config.json"
    try:
        recorded = json.loads(run_config.read_text()).get("data_dir")
    except (OSError, ValueError, AttributeError):
        return None
    if not recorded:
        return None
    for candidate in (Path(recorded), run_config.parent / recorded):
        if candidate.is_dir():
            return candidate
    log.warning("%s names data_dir %s, which is not there", run_config, recorded)
    return None


def resolve_image_source(config: ExportConfig) -> ExportConfig:
    """Fill ``data_dir`` from the training run when neither images option was given."""
    if config.data_dir is not None or config.calib_dir is not None:
        return config
    data_dir = training_data_dir(config.checkpoint)
    if data_dir is None:
        raise ImageSourceError(
            "export needs real images to calibrate int8 and check parity: pass --data-dir "
            "(the dataset used for training, with train/val/test splits) or --calib-dir "
            f"(no training data_dir recorded in {Path(config.checkpoint).parent / 'config.json'})"
        )
    log.info("using the training data recorded in the run: %s", data_dir)
    return dataclasses.replace(config, data_dir=data_dir)


def resolve_image_sets(config: ExportConfig, spec: ModelSpec) -> tuple[ImageSet, ImageSet]:
    """-> (calibration set, held-out parity set), disjoint, each capped by the config."""
    config = resolve_image_source(config)
    if config.data_dir is not None:
        data_dir = Path(config.data_dir)
        heldout_dir = _split_dir(data_dir, HELDOUT_SPLITS)
        if heldout_dir is None:
            raise ImageSourceError(f"{data_dir} has no test/ or val/ split with images")
        heldout_paths = _sample(list_images(heldout_dir), config.parity_n, config.seed)
        heldout = _image_set(heldout_paths, heldout_dir, spec, f"{heldout_dir} ({heldout_dir.name} split)")
        if config.calib_dir is not None:
            calib_root = Path(config.calib_dir)
        else:
            calib_root = _split_dir(data_dir, CALIB_SPLITS, exclude=heldout_dir)
            if calib_root is None:
                raise ImageSourceError(f"{data_dir} has no split besides {heldout_dir.name}/ to calibrate on")
        held = {p.resolve() for p in heldout_paths}
        calib_all = [p for p in list_images(calib_root) if p.resolve() not in held]
        calib = _image_set(_sample(calib_all, config.calib_n, config.seed), calib_root, spec, str(calib_root))
    else:
        root = Path(config.calib_dir)
        paths = list_images(root)
        if len(paths) < 2:
            raise ImageSourceError(f"--calib-dir {root} needs at least 2 images (found {len(paths)})")
        random.Random(config.seed).shuffle(paths)
        # Calibration takes up to calib_n but always leaves at least half for parity.
        n_calib = min(config.calib_n, len(paths) // 2)
        calib = _image_set(sorted(paths[:n_calib]), root, spec, f"{root} (calibration part)")
        rest = sorted(paths[n_calib:])[: config.parity_n]
        heldout = _image_set(rest, root, spec, f"{root} (held-out part, disjoint from calibration)")
    if not len(calib):
        raise ImageSourceError(f"no calibration images found in {calib.source}")
    log.info("calibration: %d images from %s; parity: %d images from %s", len(calib), calib.source, len(heldout), heldout.source)
    return calib, heldout


def load_inputs(images: ImageSet, spec: ModelSpec) -> tuple[np.ndarray, ImageSet]:
    """Decode and preprocess -> ((N, 3, S, S) float32, the set of images actually used).

    An undecodable file is logged and left out (as the scorer would give it an error row);
    it must not abort an export that has plenty of other images.
    """
    arrays, paths, labels = [], [], []
    for path, label in zip(images.paths, images.labels):
        try:
            arrays.append(decode_for_model(path, spec)[0])  # the spec's reduction rule, as scoring
        except DecodeError as exc:
            log.warning("skipping %s: %s", path, exc)
            continue
        paths.append(path)
        labels.append(label)
    if not arrays:
        raise ImageSourceError(f"none of the images in {images.source} could be decoded")
    used = ImageSet(tuple(paths), tuple(labels), images.source)
    return np.stack(arrays).astype(np.float32, copy=False), used
