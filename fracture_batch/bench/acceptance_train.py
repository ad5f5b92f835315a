"""The acceptance run's mixed-precision training check: several optimiser steps, not one.

GradScaler starts at 2**16 and *skips* a step whose scaled gradients overflow, halving
the scale (torch.amp docs), so "the weights moved after one fp16 step" fails on a healthy
setup whenever the first step overflows. What a working AMP setup shows over a few steps
on one fixed batch instead: every loss finite, the loss going down (the model memorises
the batch), at most a few skipped steps, and a finite, positive scale at the end.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# Steps on one fixed batch of 8: SGD(lr 0.05, momentum 0.9) takes a resnet18's loss on 8
# random 64 px images down within a handful of applied steps. At most 3 skips: from 2**16,
# three halvings reach 2**13, enough headroom for resnet18's fp16 gradients; more means the
# scaler is not settling (NaN loss, a broken cast).
STEPS = 8
MAX_SKIPPED = 3


@dataclass
class AmpTrace:
    losses: list[float] = field(default_factory=list)
    scales: list[float] = field(default_factory=list)  # after each step; empty without a scaler

    @property
    def skipped(self) -> int:
        """Steps GradScaler skipped: each one halves the scale (growth only doubles it)."""
        return sum(1 for a, b in zip([2.0 ** 16] + self.scales, self.scales) if b < a)


def judge(trace: AmpTrace, *, max_skipped: int = MAX_SKIPPED) -> str:
    """'' when the trace looks like working mixed precision, else what is wrong."""
    import math

    if not trace.losses:
        return "no step ran"
    if not all(math.isfinite(x) for x in trace.losses):
        return f"non-finite loss in {[round(x, 3) for x in trace.losses]}"
    if trace.scales and not (math.isfinite(trace.scales[-1]) and trace.scales[-1] > 0):
        return f"GradScaler scale ended at {trace.scales[-1]}"
    if trace.skipped > max_skipped:
        return f"GradScaler skipped {trace.skipped} of {len(trace.losses)} steps (scales {trace.scales})"
    first, last = trace.losses[0], min(trace.losses[-3:])
    if not last < first:
        return f"loss did not go down over {len(trace.losses)} steps ({first:.3f} -> {last:.3f})"
    return ""


def run_amp_steps(device: str, amp_dtype: str, steps: int = STEPS, seed: int = 0) -> AmpTrace:
    """``steps`` optimiser steps of resnet18 (channels_last, autocast ``amp_dtype``) on one
    fixed batch, with a GradScaler for CUDA fp16: the mechanics train/loops.py uses."""
    import torch

    from fracture_batch.model.checkpoint import create_model

    torch.manual_seed(seed)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[amp_dtype]
    dev = torch.device(device)
    model = create_model("resnet18", 2).to(dev).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda") if dev.type == "cuda" and dtype is torch.float16 else None
    x = torch.randn(8, 3, 64, 64, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.tensor([0, 1] * 4, device=dev)
    loss_fn = torch.nn.CrossEntropyLoss()
    trace = AmpTrace()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev.type, dtype=dtype):
            loss = loss_fn(model(x), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            trace.scales.append(float(scaler.get_scale()))
        else:
            loss.backward()
            opt.step()
        trace.losses.append(float(loss.detach().float()))
    return trace


def amp_check(device: str, amp_dtype: str) -> str:
    """An acceptance row: raises AssertionError with the reason, or returns the detail."""
    trace = run_amp_steps(device, amp_dtype)
    problem = judge(trace)
    detail = (f"{amp_dtype} autocast on {device}, {len(trace.losses)} steps: loss {trace.losses[0]:.3f} -> "
              f"{trace.losses[-1]:.3f}" + (f", {trace.skipped} skipped, scale {trace.scales[-1]:g}" if trace.scales else ""))
    if problem:
        raise AssertionError(f"{problem}; {detail}")
    return detail
