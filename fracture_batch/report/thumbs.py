"""Thumbnails and class-activation overlays for the triage report, as data URIs.

Thumbnails go through ``fracture_batch.decode.decode_file``, so they are windowed per
the pixel contract (DICOM modality LUT, first VOI window, MONOCHROME1 inverted after
it, 16-bit data by its real depth): what a reader sees is what the model was given.

Overlays (``--checkpoint``) are Grad-CAM maps from captum (``LayerGradCam`` on the last
convolutional stage, the positive class as target) drawn on the model's own input view
(the image resized per the spec). They show where the model looked, not a localisation:
a coarse 7 x 7 map for ResNet50 at 224 px, upsampled.
"""
from __future__ import annotations

import base64
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fracture_batch.decode import decode_file
from fracture_batch.model.spec import ModelSpec

log = logging.getLogger(__name__)

CAM_INSTALL_HINT = "class-activation overlays need captum: pip install 'fracture-batch[report]'"


def has_captum() -> tuple[bool, str]:
    try:
        import captum.attr  # noqa: F401
    except ImportError:
        return False, CAM_INSTALL_HINT
    return True, "captum"


def data_uri(image, fmt: str = "JPEG") -> str:
    buf = io.BytesIO()
    if fmt == "JPEG":
        image.save(buf, format="JPEG", quality=85)
    else:
        image.save(buf, format=fmt)
    mime = "image/jpeg" if fmt == "JPEG" else f"image/{fmt.lower()}"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def gray_image(gray01: np.ndarray, max_side: int):
    """float [0, 1] gray -> 8-bit PIL image, longest side ``max_side``."""
    from PIL import Image

    img = Image.fromarray(np.rint(np.clip(gray01, 0, 1) * 255).astype(np.uint8), mode="L")
    scale = max_side / max(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.LANCZOS, reducing_gap=3.0)
    return img


@dataclass
class Thumb:
    uri: str | None
    overlay: str | None = None
    error: str | None = None


class ThumbMaker:
    """Decodes a view once; makes its thumbnail and (with a model) its overlay."""

    def __init__(self, *, max_side: int = 200, max_pixels: int = 100_000_000, cam=None):
        self.max_side, self.max_pixels, self.cam = max_side, max_pixels, cam

    def make(self, path: str) -> Thumb:
        try:
            decoded = decode_file(path, max_pixels=self.max_pixels)
        except Exception as exc:  # a file may have changed since scoring: say so on the report
            return Thumb(None, error=f"cannot decode for the thumbnail: {exc}")
        small = gray_image(decoded.pixels, self.max_side)
        thumb = Thumb(data_uri(small))
        if self.cam is not None:
            try:
                thumb.overlay = self.cam.overlay(decoded.pixels, small)
            except Exception as exc:  # the overlay is an extra: the thumbnail still shows
                log.warning("no class-activation overlay for %s: %s", path, exc)
        return thumb


class GradCam:
    """captum LayerGradCam on a torch checkpoint's last convolutional stage."""

    def __init__(self, checkpoint: str | Path):
        ok, hint = has_captum()
        if not ok:
            raise RuntimeError(hint)
        import torch
        from captum.attr import LayerGradCam

        from fracture_batch.model.checkpoint import load_checkpoint

        self.torch = torch
        self.model, self.spec = load_checkpoint(checkpoint)
        self.model.eval()
        layer = getattr(self.model, "layer4", None)
        if layer is None:
            raise RuntimeError(f"{checkpoint}: no layer4 (a ResNet) to take class activations from")
        self.gradcam = LayerGradCam(self.model, layer)

    def activation(self, gray01: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(model view in [0, 1], activation map in [0, 1]), both S x S."""
        from captum.attr import LayerAttribution

        from fracture_batch.model.preprocess import resize_gray, to_model_input

        view = resize_gray(gray01, self.spec)
        x = self.torch.from_numpy(to_model_input(gray01, self.spec))[None].requires_grad_(True)
        attr = self.gradcam.attribute(x, target=self.spec.positive_index, relu_attributions=True)
        up = LayerAttribution.interpolate(attr, (self.spec.input_size,) * 2, interpolate_mode="bilinear")
        cam = up.detach().numpy()[0, 0]
        top = float(cam.max())
        return np.clip(view, 0, 1), (cam / top if top > 0 else cam)

    def overlay(self, gray01: np.ndarray, thumb) -> str:
        """The map blended onto the thumbnail (the whole image is what a squash-resize model
        sees), or onto the model's centre crop for a crop-resize spec."""
        from matplotlib import colormaps
        from PIL import Image

        from fracture_batch.model.spec import ResizeMode

        view, cam = self.activation(gray01)
        if self.spec.resize_mode is ResizeMode.SQUASH:
            base = np.asarray(thumb, dtype=np.float32) / 255.0
        else:
            side = max(thumb.size)
            base = np.asarray(Image.fromarray(view, mode="F").resize((side, side), Image.Resampling.BILINEAR))
        h, w = base.shape
        cam = np.clip(np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize(
            (w, h), Image.Resampling.BILINEAR)), 0, 1)
        rgb = np.repeat(np.clip(base, 0, 1)[..., None], 3, axis=2)
        heat = colormaps["jet"](cam)[..., :3]
        alpha = 0.45 * cam[..., None]  # cold regions keep the radiograph visible
        mix = (1 - alpha) * rgb + alpha * heat
        return data_uri(Image.fromarray(np.rint(mix * 255).astype(np.uint8), mode="RGB"))

    def matches(self, spec: ModelSpec) -> bool:
        """Whether the checkpoint holds the weights the run was scored with."""
        return bool(spec.weights_sha256) and spec.weights_sha256 == self.spec.weights_sha256
