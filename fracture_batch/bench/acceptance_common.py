"""What the acceptance checks and throughput rows share: the parity bars, ``Skip``, the
parity check and the guards that skip a row with the reason and the install command."""
from __future__ import annotations

import numpy as np

# Parity bars on P(fractured) against torch fp32 on CPU, each with its reason:
FP32_CPU_BAR = 1e-4  # same math, kernel summation order only (export's fp32 bar)
DALI_BAR = 0.05  # DALI and PIL differ at the outermost pixel rows/columns (decode/dali.py docstring)
FP32_GPU_BAR = 1e-2  # TensorRT/cuDNN may use TF32 tensor cores for fp32 by default
FP16_BAR = 2e-2  # 11-bit mantissas through ~50 layers
BF16_BAR = 5e-2  # 8-bit mantissas: 8x fp16's rounding step
INT8_BAR = 0.1  # Q/DQ rounding moves probabilities by hundredths; 0.1 flags a broken calibration/kernel


class Skip(Exception):
    """The row cannot run here; the message says why and how to make it run."""


def _diff(p: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max |dP|, decision agreement) against the reference."""
    return float(np.max(np.abs(p - ref))), float(np.mean((p >= 0.5) == (ref >= 0.5)))


def check_parity(p: np.ndarray, ref: np.ndarray, bar: float) -> str:
    d, agree = _diff(p, ref)
    msg = f"max |dP| {d:.2e} (bar {bar:g}), agreement {agree:.0%}"
    if not d <= bar:
        raise AssertionError(msg)
    return msg


# ---- guards: every missing piece is named with its install command --------------------
def _stack_fix(name_part: str) -> str:
    from fracture_batch.gpu_stack import GPU_EXTRA_COMMAND, probe

    for item in probe():
        if name_part in item.name and not item.ok:
            return f"{item.name}: {item.detail}; install: {item.fix or GPU_EXTRA_COMMAND}"
    return ""


def need_cuda() -> None:
    from fracture_batch.backends import has_cuda

    ok, why = has_cuda()
    if not ok:
        raise Skip(why + (f"; {fix}" if (fix := _stack_fix("torch")) else ""))


def _cuda_missing() -> list[str]:
    from fracture_batch.backends import has_cuda

    ok, why = has_cuda()
    return [] if ok else [why]


def need_tensorrt() -> None:
    """Skip naming everything missing at once: the GPU, and TensorRT with its install command."""
    missing = _cuda_missing()
    if fix := _stack_fix("TensorRT"):
        missing.append(fix)
    if missing:
        raise Skip("; ".join(missing))
    from export.tensorrt_build import TensorRTUnavailable, resolve_tensorrt

    try:
        resolve_tensorrt()
    except TensorRTUnavailable as exc:
        raise Skip(str(exc)) from None


def need_ort_provider(name: str) -> None:
    """Skip unless onnxruntime can *load* the provider here (not merely lists it)."""
    from fracture_batch.backends.onnxruntime_backend import ORT_GPU_HINT, provider_status

    missing = _cuda_missing()
    ok, why = provider_status(name)
    if not ok:
        missing.append(f"{why}; {ORT_GPU_HINT}")
    if missing:
        raise Skip("; ".join(missing))


def need_dali() -> None:
    from fracture_batch.decode.select import has_dali

    ok, why = has_dali()
    if not ok:
        raise Skip(why)
