"""train/resume.set_deterministic: cudnn.benchmark on CUDA unless determinism is asked for.
The switches are plain torch flags, so the CUDA branch is checked here without a GPU."""
from __future__ import annotations

import pytest
import torch

from train.resume import set_deterministic


@pytest.fixture
def restore_flags():
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2], saved[3]


def test_cuda_training_benchmarks_cudnn_by_default(restore_flags):
    set_deterministic("cuda")
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    assert not torch.are_deterministic_algorithms_enabled()


def test_cuda_determinism_when_asked(restore_flags):
    set_deterministic("cuda", deterministic=True)
    assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()


def test_cpu_is_always_deterministic_and_returns_the_previous_setting(restore_flags):
    torch.use_deterministic_algorithms(False)
    assert set_deterministic("cpu") is False
    assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
