"""The scorer's DALI preprocessing (``dali_pipeline.DaliPreprocessor``) as a timed batch
call, and why it cannot run here when it cannot. DALI rows measure decode + resize +
normalise (the pipeline does all three), so compare them with ``python+preprocess``.
DICOM files are decoded by pydicom inside the pipeline's ``raw`` route (DALI has no
DICOM decoder), so their DALI rows are pydicom decode + DALI resize."""
from __future__ import annotations

from pathlib import Path
from typing import Callable


def dali_skip_reason(decoder: str, fmt: str = "") -> str:
    from fracture_batch.decode.select import has_dali

    ok, why = has_dali()
    if not ok:
        return why
    try:
        import fracture_batch.decode.dali  # noqa: F401
    except ImportError as exc:
        return f"the scorer's DALI pipeline is not available ({exc})"
    if decoder == "dali-gpu":
        from fracture_batch.backends import has_cuda

        ok, why = has_cuda()
        if not ok:
            return f"DALI mixed (nvJPEG) decoding needs a CUDA GPU: {why}"
    return ""


def dali_decoder(files: list[Path], *, device: str, threads: int, input_size: int) -> Callable[[], object]:
    from fracture_batch.decode.dali import DaliPreprocessor
    from fracture_batch.model.spec import ModelSpec

    spec = ModelSpec(input_size=input_size)
    dev = "cuda" if device == "gpu" else "cpu"
    pre = DaliPreprocessor(spec, batch_size=len(files), num_threads=threads, device=dev)
    items = [(p, p.read_bytes()) for p in files]  # file reads outside the timed call

    def run() -> object:
        batch = pre.run(items)
        bad = [e for e in batch.errors if e]
        if bad:
            raise RuntimeError(f"DALI failed on {len(bad)} file(s): {bad[0]}")
        if dev == "cuda":
            import torch

            torch.cuda.synchronize()  # the batch is a CUDA tensor: wait for it
        return batch

    return run
