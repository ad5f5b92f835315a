"""Decoder selection: which decoder family turns files into model inputs.

``--decoder auto|dali|python``. ``has_dali()`` says whether NVIDIA DALI can be used
here and, when not, why (with an install hint); ``resolve_decoder`` turns ``auto``
into a concrete choice.
"""
from __future__ import annotations

import functools
import logging
import os

from fracture_batch.decode.types import DecoderKind

log = logging.getLogger(__name__)

DALI_INSTALL_HINT = "pip install nvidia-dali-cuda130  (CPU pipelines work without a GPU)"


@functools.lru_cache(maxsize=1)
def has_dali() -> tuple[bool, str]:
    """(usable, reason). Importing DALI is slow-ish and may fail on odd platforms."""
    # DALI's CPU decoders print every bad file to stderr through OpenCV's logger; each of
    # those files already becomes an error row with a readable message. A user's own
    # OPENCV_LOG_LEVEL wins.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
    try:
        import nvidia.dali  # noqa: F401
        import nvidia.dali.fn  # noqa: F401
    except Exception as exc:  # ImportError, or a broken native library (OSError)
        return False, f"NVIDIA DALI is not importable ({exc.__class__.__name__}: {exc}); {DALI_INSTALL_HINT}"
    return True, f"NVIDIA DALI {nvidia.dali.__version__}"


def resolve_decoder(kind: DecoderKind | str, *, device: str = "cpu", prefer_dali_on_cpu: bool = False) -> DecoderKind:
    """Concrete decoder family for ``kind`` on ``device``.

    ``auto`` picks DALI on a CUDA device (GPU decode + resize, no host round trip) and,
    on CPU, DALI only when ``prefer_dali_on_cpu`` (the lead sets this from measured
    throughput; see dali_pipeline's module docstring for the numbers). ``dali`` when DALI
    is missing is an error, not a silent fallback.
    """
    kind = DecoderKind(kind)
    ok, reason = has_dali()
    if kind is DecoderKind.DALI:
        if not ok:
            raise RuntimeError(reason)
        return kind
    if kind is DecoderKind.PYTHON:
        return kind
    if kind is DecoderKind.NVIMGCODEC:
        from fracture_batch.decode.gpu_dicom import has_nvimgcodec

        usable, why = has_nvimgcodec()
        if not usable:
            raise RuntimeError(why)
        return kind
    if ok and (device.startswith("cuda") or prefer_dali_on_cpu):
        return DecoderKind.DALI
    if not ok:
        log.info("decoder auto: using the Python decoders (%s)", reason)
    return DecoderKind.PYTHON
