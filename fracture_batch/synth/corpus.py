"""Benchmark corpora: files of known format and size, generated deterministically.

Decode speed depends on format, size and how compressible the pixels are, not on
anatomy, so the images are smooth radiograph-like fields (soft-tissue gradient, a few
bright bone-like bands, mild noise) that compress like real films do (unlike white
noise). Regimes from the issue: ``small`` (400-700 px per side, 8-bit JPEG/PNG) and
``archive`` (~2000 x 2500, 12-bit values in 16-bit PNG and DICOM).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FORMATS = ("jpeg8", "png8", "png16", "dicom", "dicom-j2k")
SUFFIX = {"jpeg8": ".jpg", "png8": ".png", "png16": ".png", "dicom": ".dcm", "dicom-j2k": ".dcm"}
REGIMES = {
    "small": {"size_range": (400, 700), "formats": ("jpeg8", "png8")},
    "archive": {"size_range": (2000, 2500), "formats": ("png16", "dicom")},
}


def radiograph_like(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """float32 [0, 1] field: gradient + bright bands + low-amplitude noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = 0.15 + 0.2 * (x / w) + 0.1 * np.sin(y / h * np.pi)
    for _ in range(rng.integers(1, 4)):
        cx, ang, width = rng.uniform(0.2, 0.8) * w, rng.uniform(-0.4, 0.4), rng.uniform(0.04, 0.1) * w
        d = np.abs((x - cx) * np.cos(ang) + (y - h / 2) * np.sin(ang))
        img += 0.5 * np.exp(-((d / width) ** 2))
    img += rng.normal(0, 0.02, (h, w)).astype(np.float32)
    return np.clip(img / img.max(), 0, 1).astype(np.float32)


# Benchmark format names -> the synth writers' formats (one writer for every corpus).
_WRITER_FORMAT = {"jpeg8": "jpeg", "png8": "png8", "png16": "png16", "dicom": "dicom-mono2", "dicom-j2k": "dicom-j2k"}


def write_image(stem: Path, img01: np.ndarray, fmt: str, rng: np.random.Generator) -> Path:
    """Write ``img01`` as ``stem`` + the format's suffix with ``synth.writers`` (12-bit
    stored values for png16 and DICOM, as an archive holds them)."""
    from fracture_batch.synth.writers import ImageFormat, write_image as write

    if fmt not in _WRITER_FORMAT:
        raise ValueError(f"unknown format {fmt!r}; choose from {FORMATS}")
    return write(stem, img01, ImageFormat(_WRITER_FORMAT[fmt]), rng)


def make_corpus(out_dir: str | Path, n: int, *, formats: tuple[str, ...], size_range: tuple[int, int],
                seed: int = 0) -> list[Path]:
    """``n`` files cycling through ``formats``, sides uniform in ``size_range``.
    Re-uses files already there (same names, same seed), so repeated runs are cheap."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        fmt = formats[i % len(formats)]
        h, w = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, 2))
        if size_range[0] >= 2000:  # archive films are portrait, ~2000 x 2500
            h, w = max(h, w), min(h, w)
        path = out / f"img_{i:05d}_{fmt}{SUFFIX[fmt]}"
        sub = np.random.default_rng([seed, i])
        if not path.exists():
            write_image(path.with_suffix(""), radiograph_like(h, w, sub), fmt, sub)
        paths.append(path)
    return paths


def make_regime_corpus(out_dir: str | Path, regime: str, n: int, seed: int = 0) -> list[Path]:
    r = REGIMES[regime]
    return make_corpus(out_dir, n, formats=r["formats"], size_range=r["size_range"], seed=seed)
