"""Where the initial weights come from: ``--pretrained auto|none|imagenet|PATH``.

Nothing is downloaded: ``imagenet`` reads torchvision's file from the local torch hub
cache (``torch.hub.get_dir()/checkpoints``), ``PATH`` any compatible state dict (e.g.
RadImageNet ResNet50), ``auto`` the hub cache when the file is there, else random init.
The source is recorded in the model spec (``pretrained``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class PretrainedError(Exception):
    """Weights asked for but unusable; the message says how to provide them."""


@dataclass(frozen=True)
class PretrainedWeights:
    source: str  # "none" | "imagenet:<file>" | "file:<path>"
    state_dict: dict[str, Any] | None


def imagenet_weight_files(arch: str) -> list[Path]:
    """torchvision's ImageNet files for ``arch`` in the hub cache, newest recipe first."""
    import torch
    import torchvision

    enum_name = {"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights",
                 "resnet50": "ResNet50_Weights", "resnet101": "ResNet101_Weights"}[arch]
    weights = getattr(torchvision.models, enum_name)
    names = [w.url.rsplit("/", 1)[-1] for w in reversed(list(weights))]
    ckpt_dir = Path(torch.hub.get_dir()) / "checkpoints"
    return [ckpt_dir / n for n in names]


def load_state_dict_file(path: Path) -> dict[str, Any]:
    """A plain state dict from a file; unwraps ``{"state_dict": ...}``/``{"model": ...}``."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PretrainedError(f"cannot read weights from {path}: {exc}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj:
        raise PretrainedError(f"{path} does not hold a state dict of tensors")
    # DataParallel / Lightning prefixes.
    out = {}
    for k, v in obj.items():
        for prefix in ("module.", "model.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def resolve_pretrained(choice: str, arch: str) -> PretrainedWeights:
    choice = str(choice)
    if choice == "none":
        return PretrainedWeights("none", None)
    if choice in ("imagenet", "auto"):
        files = [p for p in imagenet_weight_files(arch) if p.is_file()]
        if files:
            return PretrainedWeights(f"imagenet:{files[0].name}", load_state_dict_file(files[0]))
        if choice == "auto":
            log.info("no ImageNet weights in the torch hub cache: training from random initialisation")
            return PretrainedWeights("none", None)
        expected = imagenet_weight_files(arch)
        raise PretrainedError(
            f"--pretrained imagenet: torchvision's {arch} ImageNet weights are not in the local "
            f"torch hub cache and this machine cannot download them. Copy the file to "
            f"{expected[0]} (or {expected[-1].name}; set TORCH_HOME to use another cache), "
            f"or pass the file directly with --pretrained PATH."
        )
    path = Path(choice).expanduser()
    if not path.is_file():
        raise PretrainedError(f"--pretrained {choice}: not 'auto', 'none', 'imagenet' or an existing file")
    return PretrainedWeights(f"file:{path.resolve()}", load_state_dict_file(path))


def zero_init_residual(model) -> None:
    """Zero the last BN scale of every residual block (torchvision's ``zero_init_residual``).

    Each block then starts as the identity, which trains a deep ResNet from random
    initialisation faster and more stably (Goyal et al. 2017, "Accurate, Large Minibatch SGD").
    """
    import torch.nn as nn
    from torchvision.models.resnet import BasicBlock, Bottleneck

    for m in model.modules():
        if isinstance(m, Bottleneck):
            nn.init.zeros_(m.bn3.weight)
        elif isinstance(m, BasicBlock):
            nn.init.zeros_(m.bn2.weight)


def apply_pretrained(model, weights: PretrainedWeights) -> None:
    """Load backbone weights; the classification head (other class count) stays fresh.
    Without weights, prepare the random init for training from scratch instead."""
    if weights.state_dict is None:
        zero_init_residual(model)
        return
    own = model.state_dict()
    usable = {k: v for k, v in weights.state_dict.items()
              if k in own and not k.startswith("fc.") and tuple(v.shape) == tuple(own[k].shape)}
    backbone = [k for k in own if not k.startswith("fc.")]
    missing = [k for k in backbone if k not in usable]
    if len(missing) > len(backbone) // 2:
        raise PretrainedError(
            f"{weights.source}: only {len(backbone) - len(missing)} of {len(backbone)} backbone "
            f"tensors match this architecture (first missing: {missing[:3]}); is it a different arch?"
        )
    if missing:
        log.warning("%s: %d backbone tensors not found, left at random init (e.g. %s)",
                    weights.source, len(missing), missing[:3])
    model.load_state_dict(usable, strict=False)
    log.info("loaded %d tensors from %s", len(usable), weights.source)
