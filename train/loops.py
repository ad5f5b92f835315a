"""Small training-loop functions with explicit arguments, returning metrics (torchvision style).

Mixed precision: ``MixedPrecision`` says the device, the autocast dtype (or none) and whether
a gradient scaler is needed (CUDA fp16 only: bf16 has fp32's exponent range).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from train.config import AmpDtype, DeviceKind, Unfreeze

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MixedPrecision:
    device: str  # "cpu" | "cuda"
    amp_dtype: str | None  # "bfloat16" | "float16" | None (fp32)
    channels_last: bool

    @property
    def needs_scaler(self) -> bool:
        return self.device == "cuda" and self.amp_dtype == "float16"

    def autocast(self):
        import torch

        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device, dtype=getattr(torch, self.amp_dtype))

    def describe(self) -> str:
        return f"{self.device}, {'autocast ' + self.amp_dtype if self.amp_dtype else 'fp32'}" + (
            ", channels_last" if self.channels_last else "")


def resolve_precision(device: DeviceKind, amp: bool, amp_dtype: AmpDtype, channels_last: bool) -> MixedPrecision:
    import torch

    if device is DeviceKind.CUDA and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but CUDA is not available here (use --device cpu)")
    dev = "cuda" if device is DeviceKind.CUDA or (device is DeviceKind.AUTO and torch.cuda.is_available()) else "cpu"
    dtype = None
    if amp:
        if amp_dtype is AmpDtype.FP16:
            if dev == "cpu":
                raise ValueError("fp16 autocast is for CUDA; on CPU use bf16 (--amp-dtype bf16)")
            dtype = "float16"
        elif amp_dtype is AmpDtype.BF16 or dev == "cpu" or torch.cuda.is_bf16_supported():
            dtype = "bfloat16"
        else:
            dtype = "float16"
    return MixedPrecision(dev, dtype, channels_last)


# ---- which parameters train ---------------------------------------------------------
UNFREEZE_PREFIXES = {
    Unfreeze.LAYER4: ("layer4.",),
    Unfreeze.LAYER3_PLUS: ("layer3.", "layer4."),
    Unfreeze.ALL: ("",),
}


def set_trainable(model, unfreeze: Unfreeze | None) -> tuple[list, list]:
    """Head always trains; backbone parameters per ``unfreeze`` (None = frozen phase).

    -> (head params, trainable backbone params). ``train_mode(freeze_bn_stats=True)``
    also keeps the batch-norm statistics of frozen modules fixed.
    """
    head, backbone = [], []
    prefixes = UNFREEZE_PREFIXES[unfreeze] if unfreeze is not None else ()
    for name, p in model.named_parameters():
        if name.startswith("fc."):
            p.requires_grad_(True)
            head.append(p)
        else:
            on = any(name.startswith(pre) for pre in prefixes)
            p.requires_grad_(on)
            if on:
                backbone.append(p)
    return head, backbone


def train_mode(model, freeze_bn_stats: bool = False) -> None:
    """model.train(); with ``freeze_bn_stats`` frozen modules stay in eval mode."""
    model.train()
    if not freeze_bn_stats:
        return
    for m in model.modules():
        params = list(m.parameters(recurse=False))
        if params and not any(p.requires_grad for p in params):
            m.eval()


# ---- early stopping ----------------------------------------------------------------
@dataclass
class EarlyStopping:
    patience: int
    min_delta: float = 0.0
    best_loss: float = float("inf")
    best_epoch: int = -1
    bad_epochs: int = 0
    best_state: dict[str, Any] | None = field(default=None, repr=False)

    def step(self, val_loss: float, epoch: int, model) -> bool:
        """Record an epoch; -> True when training should stop."""
        if val_loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch, self.bad_epochs = float(val_loss), epoch, 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            self.bad_epochs += 1
        return self.patience > 0 and self.bad_epochs >= self.patience

    def restore_best(self, model) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)

    def state_dict(self) -> dict[str, Any]:
        return {"patience": self.patience, "min_delta": self.min_delta, "best_loss": self.best_loss,
                "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs, "best_state": self.best_state}

    @classmethod
    def from_state_dict(cls, d: dict[str, Any]) -> "EarlyStopping":
        return cls(**d)


# ---- loops --------------------------------------------------------------------------
def _to_device(batch: dict[str, Any], prec: MixedPrecision):
    import torch

    x = batch["x"].to(prec.device, non_blocking=True)
    if prec.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, batch["y"].to(prec.device, non_blocking=True)


def train_one_epoch(model, loader: Iterable, criterion, optimizer, prec: MixedPrecision, *, scaler=None,
                    freeze_bn_stats: bool = False, batch_scheduler=None,
                    on_bad: Callable[[list[str]], None] = lambda bad: None,
                    desc: str = "train", progress: bool = True) -> dict[str, float]:
    from tqdm import tqdm

    from fracture_batch.progress import is_terminal

    train_mode(model, freeze_bn_stats)
    total_loss, correct, seen = 0.0, 0, 0
    # Batch bars on a terminal only: in a log file the epoch lines are the progress.
    bar = tqdm(loader, desc=desc, disable=not (progress and is_terminal()), leave=False, unit="batch")
    for batch in bar:
        if batch["bad"]:
            on_bad(batch["bad"])
        if batch["x"] is None or len(batch["y"]) < 2:  # batch norm needs 2 samples
            continue
        x, y = _to_device(batch, prec)
        with prec.autocast():
            logits = model(x)
            loss = criterion(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if batch_scheduler is not None:  # a per-step schedule (one-cycle)
            batch_scheduler.step()
        n = len(y)
        total_loss += float(loss.detach()) * n
        correct += int((logits.argmax(1) == y).sum())
        seen += n
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.3f}")
    return {"loss": total_loss / max(seen, 1), "accuracy": correct / max(seen, 1), "n": seen}


def evaluate(model, loader: Iterable, criterion, prec: MixedPrecision, *,
             on_bad: Callable[[list[str]], None] = lambda bad: None,
             desc: str = "eval", progress: bool = True) -> dict[str, Any]:
    """-> loss, accuracy, and the raw fp32 logits/labels/indices for metrics and calibration."""
    import torch
    from tqdm import tqdm

    from fracture_batch.progress import is_terminal

    model.eval()
    logits_all, labels_all, index_all = [], [], []
    with torch.inference_mode():
        for batch in tqdm(loader, desc=desc, disable=not (progress and is_terminal()), leave=False, unit="batch"):
            if batch["bad"]:
                on_bad(batch["bad"])
            if batch["x"] is None:
                continue
            x, y = _to_device(batch, prec)
            with prec.autocast():
                logits = model(x)
            logits_all.append(logits.float().cpu())
            labels_all.append(y.cpu())
            index_all.append(batch["index"])
    if not logits_all:
        raise RuntimeError("no readable images in this split")
    logits = torch.cat(logits_all)
    labels = torch.cat(labels_all)
    loss = float(criterion(logits, labels))
    return {"loss": loss, "accuracy": float((logits.argmax(1) == labels).float().mean()),
            "logits": logits.numpy().astype(np.float32), "labels": labels.numpy(),
            "index": torch.cat(index_all).numpy(), "n": len(labels)}
