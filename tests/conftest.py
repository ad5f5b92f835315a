"""Suite-wide settings: GPU tests skip with a reason when CUDA is absent."""
from __future__ import annotations

import os

import pytest

# Tests run on 2 cores; several spawn subprocesses. One intra-op thread per test
# process keeps them from oversubscribing the machine (timings are not asserted).
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _cuda_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch not installed"
    if not torch.cuda.is_available():
        return "no CUDA device on this machine (GPU-only path; run benchmarks/gpu_acceptance.py on a GPU host)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _cuda_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(checkpoint, ONNX) of a tiny resnet18 at 64 px, built once per session (support/modelgen.py)."""
    from support import modelgen

    return modelgen.tiny_models(tmp_path_factory)
