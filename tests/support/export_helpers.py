"""A tiny checkpoint whose outputs mean something, for the export parity tests.

An untrained random ResNet gives nearly the same probability for every image, which
would make agreement and ROC AUC parity trivially pass. So the head is fitted instead:
resnet18 features (random conv weights, but eval-mode and deterministic) of the train
split feed a logistic regression, whose weights become ``fc``. That is seconds on a CPU,
and gives probabilities spread over (0, 1) that track the label (dark gap = fractured),
so int8 noise can really flip decisions and move the AUC. Before that, BatchNorm
statistics are re-estimated on the train images (as training would leave them): with
the factory's identity statistics, activations grow layer after layer and int8 ranges
are far wider than in any trained network.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fracture_batch.model.spec import ModelSpec

INPUT_SIZE = 64


def make_export_fixture(base: Path) -> tuple[Path, Path]:
    """(model.pt, data root with train/val/test splits) under ``base``."""
    from support.train_helpers import make_dataset

    data = make_dataset(base / "data", n_per_class={"train": 24, "val": 12, "test": 30})
    ckpt = base / "model.pt"
    make_probe_checkpoint(ckpt, data)
    return ckpt, data


def _features(model, root: Path, spec: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    import torch

    from export.images import _image_set, list_images, load_inputs

    inputs, used = load_inputs(_image_set(list_images(root), root, spec, str(root)), spec)
    x = torch.from_numpy(inputs)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
    model.train()
    with torch.no_grad():
        for batch in x.split(16):
            model(batch)
    model.eval()
    fc, model.fc = model.fc, torch.nn.Identity()
    try:
        with torch.inference_mode():
            feats = model(x).numpy()
    finally:
        model.fc = fc
    return feats, np.array(used.labels)


def make_probe_checkpoint(path: Path, data_root: Path, seed: int = 0) -> ModelSpec:
    """resnet18 at 64 px with a logistic-regression head fitted on ``data_root/train``."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from fracture_batch.model.checkpoint import create_model, save_checkpoint

    torch.manual_seed(seed)
    spec = ModelSpec(arch="resnet18", input_size=INPUT_SIZE)
    model = create_model("resnet18", 2).eval()
    feats, labels = _features(model, data_root / "train", spec)
    scale = feats.std(axis=0) + 1e-6
    clf = LogisticRegression(C=1.0, max_iter=2000).fit(feats / scale, labels)
    w = torch.from_numpy((clf.coef_[0] / scale).astype(np.float32))
    b = float(clf.intercept_[0])
    # Two-class softmax with logit difference w.f + b for the positive class (index 0).
    with torch.no_grad():
        model.fc.weight.copy_(torch.stack([w / 2, -w / 2]))
        model.fc.bias.copy_(torch.tensor([b / 2, -b / 2]))
    return save_checkpoint(path, model, spec)
