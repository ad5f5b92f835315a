"""The naive scorer: what a typical user writes in a notebook, the baseline ratio's
denominator. Standard and honest, not sabotaged:

PIL open -> convert('L') -> torchvision Resize / Grayscale(3) / ToTensor / Normalize,
a Dataset over paths, DataLoader(batch_size=32, num_workers=2), eager fp32 ResNet50 in
``eval()`` under ``no_grad``, softmax, a pandas DataFrame written to Parquet at the end.
DICOM (which PIL cannot open) goes through ``pydicom.dcmread().pixel_array`` scaled to
8 bits, as such a notebook would. It loads the same checkpoint as the scorer when one is
given, so the two compute the same model.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


def _open_gray(path: str):
    from PIL import Image

    if path.lower().endswith(".dcm"):
        import pydicom

        a = pydicom.dcmread(path).pixel_array.astype("float32")
        a = (a - a.min()) / max(float(a.max() - a.min()), 1e-6) * 255.0
        return Image.fromarray(a.astype("uint8"))
    return Image.open(path).convert("L")


class PathDataset:
    """torch Dataset over file paths (no ImageFolder: an archive has no class folders)."""

    def __init__(self, paths: list[str], transform):
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return self.transform(_open_gray(self.paths[i])), i


def naive_score(paths: list[str], out_parquet: str | Path | None = None, *, checkpoint: str | None = None,
                arch: str = "resnet50", input_size: int = 224, batch_size: int = 32,
                num_workers: int = 2) -> dict:
    """Score ``paths``; returns {"n", "seconds", "images_per_s", "build_s", "probs"}."""
    import pandas as pd
    import torch
    import torchvision.transforms as T
    from torch.utils.data import DataLoader

    from fracture_batch.model.spec import IMAGENET_MEAN, IMAGENET_STD

    t_start = time.perf_counter()
    if checkpoint:
        from fracture_batch.model.checkpoint import load_checkpoint

        model, spec = load_checkpoint(checkpoint)
        input_size = spec.input_size
    else:
        import torchvision

        model = torchvision.models.get_model(arch, weights=None, num_classes=2)
    model.eval()
    build_s = time.perf_counter() - t_start
    transform = T.Compose([
        T.Resize((input_size, input_size)),
        T.Grayscale(num_output_channels=3),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    loader = DataLoader(PathDataset(list(paths), transform), batch_size=batch_size,
                        num_workers=num_workers, shuffle=False)
    probs = [0.0] * len(paths)
    with torch.no_grad():
        for x, idx in loader:
            p = torch.softmax(model(x), dim=1)[:, 0]
            for i, v in zip(idx.tolist(), p.tolist()):
                probs[i] = v
    if out_parquet is not None:
        pd.DataFrame({"path": list(paths), "prob_fractured": probs}).to_parquet(out_parquet)
    seconds = time.perf_counter() - t_start
    return {"n": len(paths), "seconds": seconds, "images_per_s": len(paths) / seconds,
            "build_s": build_s, "probs": probs}
