"""Tiny models and inputs for the scorer's tests (resnet18 at 64 px: ~45 MB ONNX, ms per image).

Exports to ONNX here (legacy TorchScript exporter, fast and deterministic) so the
scorer's tests do not depend on the export package; the spec travels in
``metadata_props`` under ``SPEC_METADATA_KEY`` exactly as export writes it.
"""
from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import numpy as np

from fracture_batch.model.spec import SPEC_METADATA_KEY, ModelSpec

INPUT_SIZE = 64


def tiny_spec() -> ModelSpec:
    return ModelSpec(arch="resnet18", input_size=INPUT_SIZE)


def make_checkpoint(path: Path, seed: int = 0) -> ModelSpec:
    import torch

    from fracture_batch.model.checkpoint import create_model, save_checkpoint

    torch.manual_seed(seed)
    model = create_model("resnet18", 2).eval()
    return save_checkpoint(path, model, tiny_spec())


def export_onnx(ckpt: Path, out: Path) -> Path:
    import onnx
    import torch

    from fracture_batch.model.checkpoint import load_checkpoint

    model, spec = load_checkpoint(ckpt)
    x = torch.zeros(1, 3, spec.input_size, spec.input_size)
    with warnings.catch_warnings():  # the legacy exporter's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (x,), str(out), input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False,
        )
    m = onnx.load(str(out))
    entry = m.metadata_props.add()
    entry.key, entry.value = SPEC_METADATA_KEY, spec.to_json()
    onnx.save(m, str(out))
    return out


@functools.lru_cache(maxsize=None)
def _cached_models(cache_dir: str) -> tuple[Path, Path]:
    d = Path(cache_dir)
    d.mkdir(parents=True, exist_ok=True)
    ckpt, onnx_path = d / "model.pt", d / "model.onnx"
    if not ckpt.exists():
        make_checkpoint(ckpt)
    if not onnx_path.exists():
        export_onnx(ckpt, onnx_path)
    return ckpt, onnx_path


def tiny_models(tmp_path_factory) -> tuple[Path, Path]:
    """(model.pt, model.onnx), built once per test session."""
    base = tmp_path_factory.getbasetemp() / "scorer-models"
    return _cached_models(str(base))


def write_images(directory: Path, n: int, *, size: int = 32, start: int = 0, formats=("png",)) -> list[Path]:
    """n small gray radiograph-like images (8-bit PNG, 16-bit PNG, JPEG, BMP, TIFF by turns)."""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    paths = []
    for i in range(start, start + n):
        fmt = formats[i % len(formats)]
        arr = rng.random((size, size), dtype=np.float32)
        p = directory / f"img_{i:05d}.{fmt}"
        if fmt == "png16":
            p = directory / f"img_{i:05d}.png"
            Image.fromarray((arr * 65535).astype(np.uint16)).save(p)
        else:
            Image.fromarray((arr * 255).astype(np.uint8)).save(p)
        paths.append(p)
    return paths


def write_bad_inputs(directory: Path) -> dict[str, Path]:
    """Files that must each become one error row."""
    directory.mkdir(parents=True, exist_ok=True)
    good = write_images(directory, 1, start=900)[0]
    out = {
        "empty": directory / "empty.png",
        "truncated": directory / "truncated.png",
        "text": directory / "notes.txt",
        "broken_link": directory / "broken.png",
        "self_link": directory / "self.png",
    }
    out["empty"].write_bytes(b"")
    out["truncated"].write_bytes(good.read_bytes()[:60])
    out["text"].write_text("not an image\n")
    os.symlink(directory / "does-not-exist.png", out["broken_link"])
    os.symlink("self.png", out["self_link"])  # relative: the link points to itself
    return out
