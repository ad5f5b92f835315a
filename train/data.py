"""Training data: ImageFolder splits decoded and preprocessed exactly as the scorer does.

Layout: ``DATA_DIR/{train,val,test}/<class>/<files>`` (``valid``/``validation`` accepted
for val). Pixels come from ``fracture_batch.decode.decode_file`` (16-bit, DICOM, colour
handled there); evaluation inputs from ``fracture_batch.model.preprocess.to_model_input`` built
from the model spec, so train-time evaluation and scoring cannot drift. Training
augmentation works on the same decoded float gray and ends in the same
``normalize_gray``.

Unreadable files never stop an epoch: the dataset returns ``None`` for them, the collate
function drops them and hands their paths and messages to the training loop, which
reports them once.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fracture_batch.decode import DecodeError, decode_file, decode_gray
from fracture_batch.model.preprocess import normalize_gray, resize_gray, to_model_input
from fracture_batch.model.spec import ModelSpec

log = logging.getLogger(__name__)

SPLIT_ALIASES = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
SPLITS = ("train", "val", "test")
# Decoded training images are reduced to this multiple of the input size before caching /
# augmenting: random resized crops still have real detail, and decoding a 3k x 3k
# radiograph costs its resize only once.
WORKING_SIZE_FACTOR = 1.5


@dataclass(frozen=True)
class Sample:
    path: Path
    relpath: str  # relative to DATA_DIR, e.g. "train/fractured/img001.png"
    label: int
    size: int  # bytes, for the data fingerprint


def find_split_dir(data_dir: Path, split: str) -> Path:
    for name in SPLIT_ALIASES[split]:
        if (data_dir / name).is_dir():
            return data_dir / name
    raise FileNotFoundError(
        f"no {split!r} split in {data_dir}: expected a folder {SPLIT_ALIASES[split][0]}/ "
        f"holding one sub-folder per class (ImageFolder layout)"
    )


def scan_split(data_dir: Path, split: str, class_names: Sequence[str]) -> list[Sample]:
    """Every regular, non-hidden file under ``split/<class>/`` (recursively), sorted."""
    root = find_split_dir(data_dir, split)
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if sorted(class_names) != found:
        raise ValueError(f"{root} has class folders {found}; expected exactly {sorted(class_names)}")
    samples = []
    for label, cls in enumerate(class_names):
        for dirpath, dirnames, filenames in os.walk(root / cls):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                p = Path(dirpath) / name
                samples.append(Sample(p, p.relative_to(data_dir).as_posix(), label, p.stat().st_size))
    if not samples:
        raise ValueError(f"split {split!r} in {data_dir} holds no files")
    return samples


def resolve_class_names(data_dir: Path, positive_class: str) -> tuple[str, ...]:
    """Class folder names of the train split in ImageFolder (alphabetical) order."""
    root = find_split_dir(data_dir, "train")
    names = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if len(names) != 2:
        raise ValueError(f"{root} must hold exactly two class folders, found {list(names)}")
    if positive_class not in names:
        raise ValueError(f"positive class {positive_class!r} is not one of the class folders {list(names)}")
    return names


def class_counts(samples: Sequence[Sample], class_names: Sequence[str]) -> dict[str, int]:
    c = Counter(s.label for s in samples)
    return {name: int(c.get(i, 0)) for i, name in enumerate(class_names)}


def data_fingerprint(splits: dict[str, Sequence[Sample]]) -> str:
    """SHA-256 over sorted relpaths and sizes: which data a model was trained on."""
    h = hashlib.sha256()
    for line in sorted(f"{s.relpath}\t{s.size}" for samples in splits.values() for s in samples):
        h.update(line.encode() + b"\n")
    return h.hexdigest()


def reduce_to_working_size(gray: np.ndarray, side: int) -> np.ndarray:
    """Shrink (never enlarge) so the shorter side is ``side``, keeping the aspect ratio."""
    h, w = gray.shape
    scale = side / min(h, w)
    if scale >= 1.0:
        return gray
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(gray, dtype=np.float32), mode="F")
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(img.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)


def create_train_transform(spec: ModelSpec):
    """Augmentation on a (1, H, W) float gray tensor in [0, 1] -> (1, S, S) in [0, 1]."""
    from torchvision.transforms import v2

    s = spec.input_size
    return v2.Compose([
        v2.RandomResizedCrop((s, s), scale=(0.75, 1.0), ratio=(0.8, 1.25), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomRotation(10),
        v2.ColorJitter(brightness=0.2, contrast=0.2),
    ])


class XrayDataset:
    """Map-style dataset -> (tensor (3,S,S), label, index), or ``(None, message, index)``.

    ``train=True`` augments; otherwise the scorer's exact preprocessing is applied.
    ``cache`` (a list filled by ``fill_cache``) holds decoded arrays already reduced:
    working-size gray for training, input-size gray for evaluation.
    """

    def __init__(self, samples: Sequence[Sample], spec: ModelSpec, *, train: bool):
        self.samples = list(samples)
        self.spec = spec
        self.train = train
        self.transform = create_train_transform(spec) if train else None
        self.cache: list[np.ndarray | str | None] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def load_reduced(self, index: int) -> np.ndarray:
        """Decode and reduce early: the expensive part, done once when caching."""
        if self.train:
            gray = decode_file(self.samples[index].path).pixels
            return reduce_to_working_size(gray, round(self.spec.input_size * WORKING_SIZE_FACTOR))
        d = decode_gray(self.samples[index].path, self.spec)  # the spec's reduction rule, as scoring
        return resize_gray(d.pixels, self.spec, d.geometry)  # exactly what to_model_input resizes to

    def __getitem__(self, index: int):
        import torch

        try:
            cached = self.cache[index] if self.cache is not None else None
            if isinstance(cached, str):  # decode error recorded while caching
                return None, cached, index
            gray = cached if cached is not None else self.load_reduced(index)
            if self.train:
                t = self.transform(torch.tensor(gray, dtype=torch.float32)[None])  # copy: cache stays intact
                x = normalize_gray(t[0].clamp_(0.0, 1.0).numpy(), self.spec)
            elif cached is not None:
                x = normalize_gray(gray, self.spec)  # resize already done: same as to_model_input
            else:
                d = decode_gray(self.samples[index].path, self.spec)
                x = to_model_input(d.pixels, self.spec, d.geometry)
        except DecodeError as exc:
            return None, f"{self.samples[index].relpath}: {exc}", index
        except Exception as exc:  # noqa: BLE001 - any unreadable file is skipped, never fatal
            return None, f"{self.samples[index].relpath}: {type(exc).__name__}: {exc}", index
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), self.samples[index].label, index


def collate_skip_bad(items: list[tuple]) -> dict[str, Any]:
    """Stack the good items; carry the bad ones' messages to the loop for reporting."""
    import torch

    good = [it for it in items if it[0] is not None]
    bad = [it[1] for it in items if it[0] is None]
    if good:
        x = torch.stack([it[0] for it in good])
        y = torch.tensor([it[1] for it in good], dtype=torch.long)
        idx = torch.tensor([it[2] for it in good], dtype=torch.long)
    else:
        x, y, idx = None, torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    return {"x": x, "y": y, "index": idx, "bad": bad}


class _CacheItems:
    def __init__(self, ds: XrayDataset):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        try:
            return self.ds.load_reduced(i)
        except Exception as exc:  # noqa: BLE001 - recorded, reported and skipped later
            return f"{self.ds.samples[i].relpath}: {exc}"


def fill_cache(ds: XrayDataset, num_workers: int, progress: bool = False) -> list[str]:
    """Decode every file once (in worker processes) into ``ds.cache``; -> unreadable list."""
    import torch
    from fracture_batch.progress import track

    loader = torch.utils.data.DataLoader(
        _CacheItems(ds), batch_size=None, num_workers=num_workers, collate_fn=_as_is,
        multiprocessing_context=_mp_context(num_workers),
    )
    cache = list(track(loader, len(ds), "decode+cache", "img", enabled=progress))
    ds.cache = cache
    return [c for c in ds.cache if isinstance(c, str)]


def _as_is(item):
    return item


def _mp_context(num_workers: int):
    # fork: workers share the in-memory cache copy-on-write instead of pickling it.
    return "fork" if num_workers > 0 and os.name == "posix" else None


def _worker_init(worker_id: int) -> None:
    import torch

    # One intra-op thread per worker: the main process's compute keeps the cores.
    torch.set_num_threads(1)


def create_loader(ds: XrayDataset, *, batch_size: int, shuffle: bool, seed: int,
                  num_workers: int, sampler_weights: Sequence[float] | None = None,
                  drop_last: bool = False):
    """A DataLoader whose order and augmentation depend on ``seed`` only.

    A fresh loader per epoch with ``seed = base + epoch`` makes epoch k identical
    whether or not the run was interrupted and resumed before it.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    sampler = None
    if sampler_weights is not None:
        sampler = torch.utils.data.WeightedRandomSampler(
            list(sampler_weights), num_samples=len(ds), replacement=True, generator=g)
        shuffle = False
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=shuffle, sampler=sampler, generator=g,
        num_workers=num_workers, collate_fn=collate_skip_bad, worker_init_fn=_worker_init,
        multiprocessing_context=_mp_context(num_workers), drop_last=drop_last,
    )
