"""A PNG grid of sample images with their labels, decoded the way the model sees them.

Tiles go through ``fracture_batch.decode.decode_file`` (MONOCHROME1 inversion, windows,
16-bit scaling included), so a decoding mistake shows up on the sheet as a dark or
inverted tile rather than hiding behind a separate viewer.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fracture_batch.synth.generate import SynthRecord

log = logging.getLogger(__name__)

CONTACT_SHEET_NAME = "contact_sheet.png"
_LABEL_HEIGHT = 16


def pick_samples(records: Sequence[SynthRecord], n: int, seed: int = 0) -> list[SynthRecord]:
    """Up to ``n`` records, alternating classes, in a seeded order (so formats mix too)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(4000,)))
    by_label: dict[str, list[SynthRecord]] = {}
    for r in sorted(records, key=lambda r: r.relpath):
        by_label.setdefault(r.label, []).append(r)
    pools = [[group[i] for i in rng.permutation(len(group))] for _, group in sorted(by_label.items())]
    picked: list[SynthRecord] = []
    while len(picked) < n and any(pools):
        for pool in pools:
            if pool and len(picked) < n:
                picked.append(pool.pop())
    return picked


def write_contact_sheet(
    root: str | Path,
    records: Sequence[SynthRecord],
    out_path: str | Path,
    *,
    n: int = 32,
    tile: int = 192,
    cols: int = 8,
    seed: int = 0,
) -> Path:
    """Decode ``n`` sample files under ``root`` and save them as a labelled grid."""
    from PIL import Image, ImageDraw, ImageFont

    from fracture_batch.decode import DecodeError, decode_file

    samples = pick_samples(records, n, seed)
    if not samples:
        raise ValueError("no images to put on a contact sheet")
    cols = max(1, min(cols, len(samples)))
    rows = -(-len(samples) // cols)
    sheet = Image.new("RGB", (cols * tile, rows * (tile + _LABEL_HEIGHT)), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=11)
    for i, rec in enumerate(samples):
        x, y = (i % cols) * tile, (i // cols) * (tile + _LABEL_HEIGHT)
        try:
            gray = decode_file(Path(root) / rec.relpath).pixels
            img = Image.fromarray(np.rint(np.clip(gray, 0, 1) * 255).astype(np.uint8))
            img.thumbnail((tile, tile), Image.Resampling.BILINEAR)
            sheet.paste(img.convert("RGB"), (x + (tile - img.width) // 2, y + (tile - img.height) // 2))
        except DecodeError as exc:  # show the failure on the sheet instead of hiding it
            draw.text((x + 4, y + tile // 2), f"decode error: {exc}"[:40], fill=(255, 80, 80), font=font)
        fractured = rec.label == "fractured"
        text = f"{rec.label}{' (subtle)' if rec.subtle else ''} {rec.format}"
        colour = (255, 140, 110) if fractured else (140, 220, 140)
        draw.text((x + 3, y + tile + 2), text, fill=colour, font=font)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_path)
    log.info("contact sheet of %d images: %s", len(samples), out_path)
    return out_path
