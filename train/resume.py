"""The per-epoch resume checkpoint ``last.pt`` and reproducibility switches.

``last.pt`` holds plain types and tensors only (RNG states as tensors/lists), so it loads
with ``torch.load(weights_only=True)`` like every other checkpoint of the project. It is
written to a temporary name and renamed, so a kill while saving leaves the previous one.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

RESUME_FORMAT = 1
LAST_NAME = "last.pt"


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(device: str, deterministic: bool = False) -> bool:
    """Reproducibility vs speed for this run; -> the previous deterministic-algorithms setting.

    CPU: deterministic kernels always (bit-identical reruns; they cost little there).
    CUDA: by default cuDNN benchmarks the convolution algorithms per shape and keeps the
    fastest (``cudnn.benchmark``; fixed 224 px batches, so it is measured once), and
    non-deterministic kernels are allowed. ``deterministic`` (``--deterministic``) asks
    for repeatable GPU runs instead: deterministic algorithms (warn-only, so an op without
    a deterministic kernel warns rather than stops the run; cuBLAS also needs
    CUBLAS_WORKSPACE_CONFIG=:4096:8), ``cudnn.deterministic`` and no benchmarking.
    """
    import torch

    prev = torch.are_deterministic_algorithms_enabled()
    if device == "cpu":
        torch.use_deterministic_algorithms(True)
        return prev
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    return prev


def rng_state() -> dict[str, Any]:
    import torch

    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def save_resume_state(run_dir: Path, state: dict[str, Any]) -> Path:
    import torch

    path = Path(run_dir) / LAST_NAME
    tmp = path.with_suffix(".pt.tmp")
    torch.save({"format": RESUME_FORMAT, **state, "rng": rng_state()}, tmp)
    tmp.replace(path)
    return path


def load_resume_state(run_dir: Path) -> dict[str, Any]:
    import torch

    path = Path(run_dir) / LAST_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"nothing to resume in {run_dir}: no {LAST_NAME} (a run writes it after its first epoch)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != RESUME_FORMAT:
        raise ValueError(f"{path}: unknown resume format {state.get('format')!r}")
    return state
