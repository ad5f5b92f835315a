"""Tiny ImageFolder data sets for the training tests (generated, a few KB each).

A 'bone' is a bright horizontal bar on noise; 'fractured' cuts it with a dark vertical
gap, a feature even a tiny network learns in a few epochs at 32-48 px.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_image(rng: np.random.Generator, fractured: bool, size: int = 48) -> np.ndarray:
    img = rng.normal(0.2, 0.05, (size, size))
    top = int(rng.integers(size // 4, size // 2))
    img[top:top + size // 4, 4:size - 4] += 0.6
    if fractured:
        x = int(rng.integers(size // 3, 2 * size // 3))
        img[top:top + size // 4, x:x + 3] = 0.1
    return np.clip(img, 0, 1)


def make_dataset(root: Path, *, n_per_class: dict[str, int] | None = None, size: int = 48,
                 seed: int = 0, sixteen_bit_every: int = 5, corrupt: int = 0) -> Path:
    """root/{train,val,test}/{fractured,not_fractured}/*.png; some 16-bit; optional corrupt files."""
    rng = np.random.default_rng(seed)
    n_per_class = n_per_class or {"train": 24, "val": 12, "test": 12}
    k = 0
    for split, n in n_per_class.items():
        for cls in ("fractured", "not_fractured"):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a = make_image(rng, cls == "fractured", size)
                k += 1
                if sixteen_bit_every and k % sixteen_bit_every == 0:
                    Image.fromarray((a * 65535).astype(np.uint16)).save(d / f"{i:03d}.png")
                else:
                    Image.fromarray((a * 255).astype(np.uint8)).save(d / f"{i:03d}.png")
    for j in range(corrupt):
        (root / "train" / "fractured" / f"broken_{j}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root
