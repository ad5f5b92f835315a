"""Optional NVIDIA DALI training input pipeline (``--loader dali``).

On a GPU the files are decoded by nvJPEG/nvJPEG2000 (``mixed``) and cropped, rotated,
jittered and normalised on the device, so the CPU only reads bytes: the way to keep a
GPU fed from 2 cores. Without CUDA the same graph runs on DALI's CPU operators (used by
the tests). Evaluation stays on the PyTorch loader with the scorer's exact
preprocessing (``to_model_input``), so metrics do not depend on this choice.

The augmentation mirrors ``data.create_train_transform``: random resized crop (area
0.75-1, aspect 0.8-1.25), rotation within ±10°, brightness/contrast ×0.8-1.2, horizontal
flip, gray replicated to 3 channels, the spec's mean/std. Files DALI cannot decode
(DICOM) are refused up front; files whose header is unreadable are skipped and reported
before the epoch starts, since one bad file fails a whole DALI batch.
"""
from __future__ import annotations

import logging
from typing import Any, Iterator, Sequence

from fracture_batch.decode import DecodeError, is_dicom, probe_image
from fracture_batch.model.spec import ModelSpec
from train.data import Sample

log = logging.getLogger(__name__)


def usable_samples(samples: Sequence[Sample]) -> tuple[list[Sample], list[str]]:
    """-> (files DALI can take, messages for the skipped ones). DICOM is an error."""
    good, bad = [], []
    for s in samples:
        if is_dicom(s.path) or s.path.suffix.lower() in (".dcm", ".dicom"):
            raise ValueError(f"--loader dali cannot decode DICOM ({s.relpath}); use --loader torch")
        try:
            probe_image(s.path)
        except DecodeError as exc:
            bad.append(f"{s.relpath}: {exc}")
            continue
        good.append(s)
    return good, bad


def _pipeline(files: list[str], labels: list[int], spec: ModelSpec, device_id: int | None, batch_size: int,
              num_threads: int, seed: int):
    from nvidia.dali import pipeline_def
    import nvidia.dali.fn as fn
    import nvidia.dali.math as dmath
    import nvidia.dali.types as types

    s = spec.input_size

    gpu = device_id is not None

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed)
    def pipe():
        # pad_last_batch: the reader's last batch of an epoch is padded (and dropped by the
        # iterator) instead of running into the next epoch's files, so every epoch sees each
        # file at most once and starts at an epoch boundary after reset().
        data, label = fn.readers.file(files=files, labels=labels, random_shuffle=True, pad_last_batch=True,
                                      name="reader")
        # UINT16 for every file: 16-bit depth kept, 8-bit values scaled by 257 (same [0, 1]).
        img = fn.decoders.image(data, device="mixed" if gpu else "cpu", output_type=types.GRAY,
                                dtype=types.UINT16)
        img = fn.random_resized_crop(img, size=[s, s], random_area=[0.75, 1.0],
                                     random_aspect_ratio=[0.8, 1.25], antialias=True, dtype=types.FLOAT)
        img = img * (1.0 / 65535.0)
        img = fn.rotate(img, angle=fn.random.uniform(range=(-10.0, 10.0)), keep_size=True, fill_value=0.0)
        img = fn.brightness_contrast(img, brightness=fn.random.uniform(range=(0.8, 1.2)),
                                     contrast=fn.random.uniform(range=(0.8, 1.2)), contrast_center=0.5)
        img = dmath.clamp(img, 0.0, 1.0)
        img = fn.cat(img, img, img, axis=2)
        img = fn.crop_mirror_normalize(img, mean=list(spec.mean), std=list(spec.std),
                                       mirror=fn.random.coin_flip(), output_layout="CHW", dtype=types.FLOAT)
        return img, label

    p = pipe()
    p.build()
    return p


class DaliTrainLoader:
    """Iterable of ``{"x", "y", "index", "bad"}`` batches like the PyTorch loader's.

    One DALI iterator for the whole run, built with the pipeline and ``reset()`` at each
    new epoch (DALI's iterator API: iterating a finished iterator again needs reset; a
    fresh iterator per epoch over the same pipeline would start on batches the pipeline
    had already prefetched past the epoch's end)."""

    def __init__(self, samples: Sequence[Sample], spec: ModelSpec, *, batch_size: int, seed: int,
                 num_threads: int = 2, device: str = "cpu"):
        from fracture_batch.decode.select import has_dali

        ok, why = has_dali()
        if not ok:
            raise RuntimeError(why)
        self.samples, self.bad = usable_samples(samples)
        if len(self.samples) < batch_size:
            raise ValueError(f"--loader dali needs at least one full batch ({batch_size}) of readable files")
        device_id = None
        if device.startswith("cuda"):
            device_id = int(device.split(":", 1)[1]) if ":" in device else 0
        self.pipe = _pipeline([str(s.path) for s in self.samples], [s.label for s in self.samples], spec,
                              device_id, batch_size, num_threads, seed)
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        self._it = DALIGenericIterator([self.pipe], ["x", "y"], reader_name="reader",
                                       last_batch_policy=LastBatchPolicy.DROP)
        self.epochs = 0

    def __len__(self) -> int:
        return len(self.samples) // self.pipe.max_batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import torch

        if self.epochs:
            self._it.reset()
        self.epochs += 1
        first = True
        for out in self._it:
            batch = out[0]
            y = batch["y"].reshape(-1).long()
            yield {"x": batch["x"], "y": y, "index": torch.full_like(y, -1),
                   "bad": self.bad if first else []}
            first = False
