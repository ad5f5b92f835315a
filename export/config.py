"""Typed configuration of one export run, and the parity bars each variant must meet."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path


class Precision(str, enum.Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


class Variant(str, enum.Enum):
    """One ONNX file written by export. int8 comes in two Q/DQ flavours, one per runtime."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"  # uint8 asymmetric activations: onnxruntime CPU kernels (QLinearConv)
    INT8_TRT = "int8.trt"  # symmetric int8, zero points 0: the only Q/DQ form TensorRT takes

    @property
    def filename(self) -> str:
        return "model.onnx" if self is Variant.FP32 else f"model.{self.value}.onnx"

    @property
    def precision(self) -> Precision:
        return Precision(self.value.split(".")[0])


def variants_for(precisions: tuple[Precision, ...]) -> tuple[Variant, ...]:
    """fp32 is always written: every other variant is derived from (and checked against) it."""
    out = [Variant.FP32]
    if Precision.FP16 in precisions:
        out.append(Variant.FP16)
    if Precision.INT8 in precisions:
        out += [Variant.INT8, Variant.INT8_TRT]
    return tuple(out)


@dataclass(frozen=True)
class ParityBars:
    """Acceptance bars against the torch fp32 model (probabilities of the positive class).

    fp32 differs from torch only by kernel summation order (~1e-6); fp16 rounds weights
    and activations to 11-bit mantissas. int8 usually moves individual probabilities by
    more than that, so it is judged on decisions (agreement) and ranking (ROC AUC), unless
    every probability stayed within ``int8_max_abs`` of fp32's: then no image can change
    side except one lying within that distance of the threshold, and a flip measures how
    many images sit on the threshold, not quantisation damage (a briefly trained model
    with all its probabilities within 1e-3 of the threshold flips 1 of 36 decisions at a
    max |Δp| of 2e-4). The tolerance is fp16's own bar: an int8 file that close to fp32
    is as faithful as an fp16 file export accepts.
    """

    fp32_max_abs: float = 1e-4
    fp16_max_abs: float = 1e-2
    int8_max_abs: float = 1e-2  # below it int8 passes whatever the flips (see above)
    int8_min_agreement: float = 0.99
    int8_max_auc_diff: float = 0.005


@dataclass(frozen=True)
class ExportConfig:
    checkpoint: Path
    out_dir: Path
    precisions: tuple[Precision, ...] = (Precision.FP32, Precision.FP16, Precision.INT8)
    # Held-out/calibration images. data_dir: a split dataset root (train/ val/ test/ with
    # one folder per class); calib_dir: any folder of images (class folders optional).
    data_dir: Path | None = None
    calib_dir: Path | None = None
    calib_n: int = 128
    parity_n: int = 512
    batch_size: int = 16
    opset: int = 18
    seed: int = 0
    bars: ParityBars = field(default_factory=ParityBars)
    tensorrt: bool = False
    trt_precision: Precision | None = None  # default: the lowest precision exported
    max_batch: int = 32
    opt_batch: int | None = None  # the batch TensorRT tunes for: the scorer's --batch-size; None: max_batch
    device_id: int = 0  # the CUDA device the engine is built on
    workspace_gb: float = 4.0
    timing_cache: Path | None = None  # default: one per GPU + TensorRT version in ~/.cache/fracture-batch
    # ORT graph optimisation of the int8 file (quant_pre_process); see quantize.py.
    preprocess_for_quant: bool = True

    def __post_init__(self) -> None:
        if self.calib_n < 1 or self.parity_n < 1:
            raise ValueError("calib_n and parity_n must be >= 1")
        if self.max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if self.opt_batch is not None and not 1 <= self.opt_batch <= self.max_batch:
            raise ValueError(f"--opt-batch {self.opt_batch} must be within 1..--max-batch {self.max_batch}")
