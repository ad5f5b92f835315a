"""The model spec: the one source of truth for using a trained model.

It travels with every artifact (checkpoint, ONNX ``metadata_props``, TensorRT
sidecar, Parquet schema metadata), so preprocessing, the probability rule and the
decision threshold can never drift between training, export and scoring.
It holds plain types only so ``torch.load(..., weights_only=True)`` can read it.
"""
from __future__ import annotations

import dataclasses
import enum
import json
import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

SPEC_METADATA_KEY = "fracture_batch.model_spec"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ResizeMode(str, enum.Enum):
    """How a radiograph of any aspect ratio becomes the square model input."""

    # Whole image squashed to input_size x input_size: nothing at the border is cropped
    # away (a fracture near the film edge still reaches the model).
    SQUASH = "squash"
    # torchvision's classic eval rule: shorter side to resize_size, centre crop input_size.
    SHORTER_SIDE_CENTER_CROP = "shorter_side_center_crop"


class DecodeReduce(str, enum.Enum):
    """Whether decoders may skip pixels the final resize would average away.

    ``auto``: a file larger than ``reduce_min_ratio`` x the resize target per side is
    decoded at reduced resolution where its codec allows it (JPEG 2000 / HTJ2K resolution
    levels, JPEG DCT scaling 1/2..1/8) or pre-reduced by an integer box mean (every other
    codec, uncompressed data, PNG/TIFF/BMP), and the final antialiased resize maps the
    reduced pixels back onto the full image's geometry (``fracture_batch.decode.reduce``).
    ``off``: every pixel decoded, one antialiased resize (the rule before issue 13).
    """

    OFF = "off"
    AUTO = "auto"


class ThresholdMethod(str, enum.Enum):
    """How the decision threshold was chosen on the validation split."""

    TARGET_SENSITIVITY = "target_sensitivity"
    YOUDEN = "youden"
    DEFAULT = "default"  # 0.5 on the calibrated probability (argmax)


MIN_INPUT_SIZE, MAX_INPUT_SIZE = 8, 4096  # bounds on input_size / resize_size (pixels)


@dataclass(frozen=True)
class ModelSpec:
    class_names: tuple[str, ...] = ("fractured", "not_fractured")
    positive_class: str = "fractured"
    arch: str = "resnet50"
    input_size: int = 224
    resize_mode: ResizeMode = ResizeMode.SQUASH
    resize_size: int = 256  # used by SHORTER_SIDE_CENTER_CROP only
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # Reduced-resolution decoding (see DecodeReduce). A spec written before the field
    # existed loads with the defaults: its tensors move by at most the parity figures of
    # README "Archives are DICOM" (probabilities within 0.01 on the archive corpus).
    decode_reduce: DecodeReduce = DecodeReduce.AUTO
    # Decoded pixels kept per output pixel, per side, at least: 2 keeps the final
    # antialiased resize averaging >= 2 x 2 decoded pixels per output pixel (measured:
    # JPEG 2000 at 2.3x mean |diff| 0.002 of the normalised tensor; at 1.1x 0.005).
    reduce_min_ratio: float = 2.0
    # Grayscale radiographs are replicated to the 3 channels an ImageNet backbone expects.
    gray_to_rgb: str = "replicate"
    threshold: float = 0.5
    threshold_method: ThresholdMethod = ThresholdMethod.DEFAULT
    threshold_detail: str = ""
    temperature: float = 1.0
    pretrained: str = "none"
    data_fingerprint: str = ""
    weights_sha256: str = ""
    versions: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.positive_class not in self.class_names:
            raise ValueError(f"positive_class {self.positive_class!r} not in {self.class_names}")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")
        # A spec may come from another site's model file, and these sizes decide how much
        # memory every decoded image takes: 60,000 would mean 14 GB per input tensor.
        for name in ("input_size", "resize_size"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or not MIN_INPUT_SIZE <= value <= MAX_INPUT_SIZE:
                raise ValueError(f"{name} must be an integer in [{MIN_INPUT_SIZE}, {MAX_INPUT_SIZE}], got {value!r}")
        if not (isinstance(self.reduce_min_ratio, numbers.Real) and 1.0 <= self.reduce_min_ratio <= 64.0):
            raise ValueError(f"reduce_min_ratio must be in [1, 64], got {self.reduce_min_ratio!r}")
        if not 0.0 <= self.threshold <= 1.0:  # NaN fails too
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold!r}")

    @property
    def positive_index(self) -> int:
        return self.class_names.index(self.positive_class)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def replace(self, **changes: Any) -> "ModelSpec":
        return dataclasses.replace(self, **changes)

    # ---- serialisation: plain JSON types only ------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, enum.Enum):
                v = v.value
            elif isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, Mapping):
                v = dict(v)
            out[f.name] = v
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        for name in ("class_names", "mean", "std"):
            if name in kw:
                kw[name] = tuple(kw[name])
        if "resize_mode" in kw:
            kw["resize_mode"] = ResizeMode(kw["resize_mode"])
        if "threshold_method" in kw:
            kw["threshold_method"] = ThresholdMethod(kw["threshold_method"])
        if "decode_reduce" in kw:
            kw["decode_reduce"] = DecodeReduce(kw["decode_reduce"])
        return cls(**kw)

    @classmethod
    def from_json(cls, text: str | bytes) -> "ModelSpec":
        return cls.from_dict(json.loads(text))

    # ---- the probability and decision rule, used by every backend ----------------
    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated P(positive class) from raw logits of shape (N, num_classes)."""
        z = np.asarray(logits, dtype=np.float64) / self.temperature
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        p = e / e.sum(axis=1, keepdims=True)
        return p[:, self.positive_index].astype(np.float32)

    def labels(self, prob_positive: np.ndarray) -> list[str]:
        negative = next(c for c in self.class_names if c != self.positive_class)
        return [self.positive_class if p >= self.threshold else negative for p in prob_positive]
