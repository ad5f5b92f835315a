"""How many decode workers and inference threads a run uses on this machine."""
from __future__ import annotations

from dataclasses import dataclass

from fracture_batch.machine import cpu_count


@dataclass(frozen=True)
class Threads:
    decode_workers: int
    intra_op: int


def resolve_threads(decode_workers: int = 0, intra_op: int = 0, cores: int | None = None) -> Threads:
    """Decode workers and inference threads.

    Default: inference gets every core and half the cores (at least 2) decode, sharing
    them. That is more runnable threads than cores, on purpose: onnxruntime's workers do
    not spin-wait (the backend turns spinning off) and each decode child is single
    threaded (OMP/BLAS = 1), so the OS hands a core to whichever stage has work. A strict
    split leaves a core idle whenever its stage waits: measured on 2 cores with
    ``fracture-batch score`` (600 small images, int8 ResNet50; benchmarks/README.md,
    "Decode/inference thread split"), one decode process + one inference thread gave 75-80 images/s, 1 + 2 and 2 + 2 91-103;
    on 12-bit ~2000x2500 archives, where decoding bounds, two decode workers gave 15.2
    images/s against 9.3-13.8 with one, hence at least two. Memory: a decode worker holds ~100 MB for a typical
    radiograph, up to ~1 GB for an image at --max-pixels.
    An explicit value for either side is used as given.
    """
    cores = cores or cpu_count()
    if decode_workers <= 0:
        decode_workers = max(2, cores // 2)
    if intra_op <= 0:
        intra_op = cores
    return Threads(decode_workers, intra_op)
