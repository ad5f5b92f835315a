"""train/dali_loader.py on DALI's CPU pipeline: one iterator, reset() per epoch, clean epochs."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fracture_batch.decode.select import has_dali
from fracture_batch.model.spec import ModelSpec

pytestmark = pytest.mark.skipif(not has_dali()[0], reason="NVIDIA DALI not installed")


def test_epochs_are_whole_and_distinct_over_one_reset_iterator(tmp_path, monkeypatch):
    from nvidia.dali.plugin import pytorch as dali_torch

    from train.dali_loader import DaliTrainLoader
    from train.data import Sample

    samples = []
    for i in range(10):  # the label is the file's id, so each batch says which files it holds
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.full((40, 48), 20 * i, np.uint8)).save(p)
        samples.append(Sample(p, p.name, i, p.stat().st_size))
    made = []

    class Counting(dali_torch.DALIGenericIterator):
        def __init__(self, *a, **k):
            made.append(1)
            super().__init__(*a, **k)

    monkeypatch.setattr(dali_torch, "DALIGenericIterator", Counting)
    loader = DaliTrainLoader(samples, ModelSpec(input_size=32), batch_size=4, seed=1, num_threads=1)
    assert len(loader) == 2
    epochs = [[int(v) for b in loader for v in b["y"]] for _ in range(4)]
    # A new iterator per epoch over the same pipeline (the old code) gave 8 files per epoch
    # but with repeats by the 4th: batches ran across the epoch boundary.
    for ids in epochs:
        assert len(ids) == 8 and len(set(ids)) == 8, epochs
    assert len({tuple(e) for e in epochs}) > 1  # reshuffled between epochs
    assert made == [1] and loader.epochs == 4
