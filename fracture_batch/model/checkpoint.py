"""Model factory and safe checkpoint loading, shared by train, export and the torch backend.

A checkpoint (``model.pt``) is a dict of plain types: ``{"format": 1, "spec": spec
dict, "state_dict": tensors}``, so it loads with ``torch.load(weights_only=True)``:
a file from another site can never run code on unpickling.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from fracture_batch.model.spec import ModelSpec

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
SUPPORTED_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101")


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message says what to do."""


def create_model(arch: str, num_classes: int):
    """A torchvision ResNet with a ``num_classes`` head, randomly initialised."""
    import torch.nn as nn
    import torchvision

    if arch not in SUPPORTED_ARCHS:
        raise ValueError(f"unsupported arch {arch!r}; choose one of {', '.join(SUPPORTED_ARCHS)}")
    model = getattr(torchvision.models, arch)(weights=None)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def state_dict_sha256(state_dict: dict[str, Any]) -> str:
    """Content hash of weights, independent of pickling details."""
    import torch

    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(path: str | Path, model, spec: ModelSpec, **extra: Any) -> ModelSpec:
    """Write ``model.pt`` with the spec stamped with the weights' SHA-256; returns that spec."""
    import torch

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    spec = spec.replace(weights_sha256=state_dict_sha256(state))
    payload = {"format": CHECKPOINT_FORMAT, "spec": spec.to_dict(), "state_dict": state, **extra}
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return spec


def load_checkpoint(path: str | Path, *, map_location: str = "cpu"):
    """-> (model in eval mode, ModelSpec). Refuses anything but plain tensors and types."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refusing to load {path}: it contains objects other than tensors and plain types "
            f"(loading it could run code). Re-save it as a fracture-batch checkpoint. ({exc})"
        ) from None
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    if not isinstance(payload, dict) or "spec" not in payload or "state_dict" not in payload:
        raise CheckpointError(f"{path} is not a fracture-batch checkpoint (no spec/state_dict)")
    try:
        spec = ModelSpec.from_dict(payload["spec"])
    except (TypeError, ValueError, KeyError) as exc:  # a spec from another site may be anything
        raise CheckpointError(f"{path} has an invalid model spec: {exc}") from None
    model = create_model(spec.arch, spec.num_classes)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, spec
