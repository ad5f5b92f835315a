"""The scorer's DALI decode stage (``decode_stage_dali.DaliDecoder``) as a timed batch
call, and why it cannot run here when it cannot. DALI rows measure decode + resize +
normalise (the pipeline does all three), so compare them with ``python+preprocess``."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

# DALI's image decoder handles JPEG/PNG (and JPEG 2000 on GPU); DICOM goes through pydicom.
DALI_FORMATS = {"dali-cpu": ("jpeg8", "png8", "png16"), "dali-gpu": ("jpeg8", "png8", "png16")}


def dali_skip_reason(decoder: str, fmt: str) -> str:
    from fracture_batch.decoders import has_dali

    ok, why = has_dali()
    if not ok:
        return why
    try:
        import fracture_batch.decode_stage_dali  # noqa: F401
    except ImportError as exc:
        return f"the scorer's DALI stage is not available ({exc})"
    if fmt not in DALI_FORMATS.get(decoder, ()):
        return f"{fmt} is not decoded by DALI in the scorer (DICOM goes through pydicom)"
    if decoder == "dali-gpu":
        try:
            import torch

            if not torch.cuda.is_available():
                return "DALI mixed (GPU) decoding needs a CUDA device; none is visible"
        except ImportError:
            return "torch not importable to probe CUDA"
    return ""


def dali_decoder(files: list[Path], *, device: str, threads: int, input_size: int) -> Callable[[], object]:
    from fracture_batch.decode_stage import DecodeOptions
    from fracture_batch.decode_stage_dali import DaliDecoder
    from fracture_batch.discover import InputFile
    from fracture_batch.spec import ModelSpec

    spec = ModelSpec(input_size=input_size)
    inputs = [InputFile(str(p), p.name, p.stat().st_size) for p in files]
    dec = DaliDecoder(spec, DecodeOptions(), batch_size=len(inputs), device="cuda" if device == "gpu" else "cpu")

    def run() -> object:
        results = dec.decode(inputs)
        bad = [r.error for r in results if r.error]
        if bad:
            raise RuntimeError(f"DALI failed on {len(bad)} file(s): {bad[0]}")
        return results

    return run
