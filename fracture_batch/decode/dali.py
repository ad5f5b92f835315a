"""NVIDIA DALI preprocessing: encoded files -> normalised (N, 3, S, S) batches.

Small pipelines share one resize + normalise graph built from the model spec:

- ``encoded``: the file bytes of JPEG/PNG/TIFF/BMP go in through ``fn.external_source``
  (so the runner controls file order and which files are in a batch), are decoded by
  ``fn.decoders.image`` to GRAY and EXIF-rotated: 16-bit PNG/TIFF at ``UINT16`` (depth
  kept), 8-bit files at ``UINT8`` in a twin pipeline (cheaper; same values once scaled);
- ``raw``: pixels DALI cannot decode, DICOM above all, arrive already decoded by the
  Python decoders (pydicom per the pixel contract) as float32 [0, 1] and get the very
  same resize and normalisation.

Resize/normalise mirror ``preprocess.to_model_input``: squash to S x S (or shorter side
to ``resize_size`` then a centre S x S crop, the crop's source box computed on the
host with the Python rule) with an antialiased linear filter, gray replicated to three
channels, ``(x - mean) / std``. The two families differ only at the outermost pixel rows
and columns (PIL renormalises the truncated filter at the border, DALI clamps to the
edge) and in colour-to-gray rounding (PIL rounds luminance to 8 bits); tests/test_dali.py
states the bound.

Per-file errors: a DALI batch fails as a whole on one bad file and the pipeline object is
then unusable, so every file's header is checked first (``decode.probe_image``: the
``--max-pixels`` limit, TIFF page count, a readable header), and if a batch still fails
the pipeline is rebuilt and that batch's files go one by one through the Python decoders
into the ``raw`` pipeline: one bad file gives one error row.

On CPU the pipelines run with ``device_id=None`` (no CUDA needed). With
``device="cuda"`` the decoder is ``mixed`` (nvJPEG / nvJPEG2000), resize and normalise run
on the GPU, and the batch is returned as a torch CUDA tensor filled device-to-device
(``feed_ndarray``), without a host round trip.

Cost per image to a normalised 224 px tensor, measured as process CPU time (all threads;
robust on this shared 2-core VM where wall-clock rates swung 2x between runs; best of 3,
1 DALI thread, batch 8): 500x600 8-bit JPEG: Python 3.6-4.1 ms, DALI CPU 2.7-2.9 ms;
2000x2500 16-bit PNG: Python 111-125 ms, DALI CPU 93 ms (PNG inflate dominates both).
DALI CPU is ~1.2-1.4x cheaper but costs ~0.6 s import and a pipeline per decode thread;
``resolve_decoder("auto")`` picks DALI on CUDA, and on CPU only with
``prefer_dali_on_cpu`` (the runner's choice; ``measure_throughput`` reruns wall-clock).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fracture_batch.decode import (
    DEFAULT_MAX_PIXELS, DICOM_SUFFIXES, Decoded, DecodeError, decode_file, looks_like_dicom, probe_image,
)
from fracture_batch.model import preprocess
from fracture_batch.decode.select import has_dali
from fracture_batch.decode.types import IdentifierMode
from fracture_batch.model.spec import ModelSpec, ResizeMode

log = logging.getLogger(__name__)

DALI_FORMATS = {"jpeg", "png", "tiff", "bmp"}
# Larger files are not read into memory for DALI: radiographs are a few MB to a few tens of MB.
DALI_MAX_FILE_BYTES = 256 << 20
ENCODED8, ENCODED16, RAW = "encoded8", "encoded16", "raw"  # the three pipelines
# PIL modes whose pixels DALI's UINT16 gray decode reproduces (float/32-bit TIFFs go raw).
DALI_MODES = {"L", "P", "RGB", "RGBA", "LA", "CMYK", "YCbCr", "I;16", "I;16B", "I;16L", "I;16N", "1"}


@dataclass
class PreprocessedBatch:
    """One batch: ``tensors[i]`` is item i's model input (zeros where ``errors[i]``)."""

    tensors: Any  # np.ndarray (N, 3, S, S) float32, or torch CUDA tensor on device="cuda"
    errors: list[str | None]
    infos: list[Decoded | None]  # format / size / bit depth / DICOM columns; pixels empty
    seconds: float = 0.0
    fallbacks: int = 0  # files DALI rejected in a batch and the Python path decoded
    counts: dict[str, int] = field(default_factory=dict)
    ready: Any = None  # device="cuda": torch.cuda.Event recorded on the preprocessor's stream after the batch


def _resize_normalise(img, spec: ModelSpec, scale: float, roi_start=None, roi_end=None):
    """HWC (C=1) image node -> CHW float normalised node, as preprocess.to_model_input."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types

    s = spec.input_size
    common = dict(antialias=True, interp_type=types.INTERP_LINEAR, dtype=types.FLOAT)
    if spec.resize_mode is ResizeMode.SQUASH:
        img = fn.resize(img, size=[s, s], mode="stretch", **common)
    else:
        # Only the crop's source box is resampled (preprocess.crop_source_box): the same
        # pixels as resize-then-slice, without a huge intermediate for extreme aspect ratios.
        img = fn.resize(img, size=[s, s], roi_start=roi_start, roi_end=roi_end, roi_relative=False,
                        mode="stretch", **common)
    img = fn.cat(img, img, img, axis=2)
    return fn.crop_mirror_normalize(
        img,
        mean=[m * scale for m in spec.mean],
        std=[v * scale for v in spec.std],
        output_layout="CHW",
        dtype=types.FLOAT,
    )


def _geometry_inputs(spec: ModelSpec):
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types

    if spec.resize_mode is ResizeMode.SQUASH:
        return None, None
    roi_start = fn.external_source(name="roi_start", dtype=types.FLOAT, ndim=1)
    roi_end = fn.external_source(name="roi_end", dtype=types.FLOAT, ndim=1)
    return roi_start, roi_end


def _encoded_graph(spec: ModelSpec, gpu: bool, sixteen_bit: bool):
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types

    data = fn.external_source(name="data", dtype=types.UINT8, ndim=1)
    roi_start, roi_end = _geometry_inputs(spec)
    # The ROI stays on the CPU: DALI argument inputs always do, whatever the data's device.
    # 16-bit files decode to UINT16 (depth kept); 8-bit ones to UINT8, which is cheaper and
    # gives the same values after scaling (x / 255 == 257 x / 65535).
    dtype, scale = (types.UINT16, 65535.0) if sixteen_bit else (types.UINT8, 255.0)
    img = fn.decoders.image(data, device="mixed" if gpu else "cpu", output_type=types.GRAY, dtype=dtype)
    return _resize_normalise(img, spec, scale, roi_start, roi_end)


def _raw_graph(spec: ModelSpec, gpu: bool):
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types

    img = fn.external_source(name="data", dtype=types.FLOAT, ndim=3, layout="HWC")
    roi_start, roi_end = _geometry_inputs(spec)
    if gpu:
        img = img.gpu()
    return _resize_normalise(img, spec, 1.0, roi_start, roi_end)


def resize_roi(width: int, height: int, spec: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """Resize ROI (start (top, left), end (bottom, right)) from preprocess.crop_source_box."""
    left, top, right, bottom = preprocess.crop_source_box(width, height, spec)
    return np.array([top, left], np.float32), np.array([bottom, right], np.float32)


def _png_chunks_fit(data: bytes) -> bool:
    """Every PNG chunk up to IEND lies inside the file. DALI's PNG decoder allocates what
    a chunk claims: a 77-byte file whose IDAT length says 4 GB took 4 GB and ~8 s there
    (found by tests/test_fuzz.py; tests/fuzz_regressions/png-idat-claims-4gb.png)."""
    pos = 8
    while pos + 12 <= len(data):
        end = pos + 12 + int.from_bytes(data[pos : pos + 4], "big")
        if end > len(data):
            return False
        if data[pos + 4 : pos + 8] == b"IEND":
            return True
        pos = end
    return False


def _jpeg_exif_fits(data: bytes) -> bool:
    """Every IFD of a JPEG's EXIF block lies inside its APP1 segment. DALI's EXIF reader
    trusts the entry count: IFD0 claiming 32,513 entries in a 34-byte segment made it read
    past the buffer and crash the process (SIGSEGV; tests/fuzz_regressions/jpeg-exif-ifd-
    count-segfault.jpg)."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker, length = data[pos + 1], int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in (0xD9, 0xDA):
            return True
        segment = data[pos + 4 : pos + 2 + length]
        if marker == 0xE1 and segment[:6] == b"Exif\0\0" and not _tiff_ifds_fit(segment[6:]):
            return False
        pos += 2 + length
    return True


def _tiff_ifds_fit(tiff: bytes, max_ifds: int = 8) -> bool:
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return False
    order = "little" if tiff[:2] == b"II" else "big"
    offset, seen = int.from_bytes(tiff[4:8], order), set()
    while offset and offset not in seen and len(seen) < max_ifds:
        seen.add(offset)
        if offset + 2 > len(tiff):
            return False
        end = offset + 2 + 12 * int.from_bytes(tiff[offset : offset + 2], order)
        if end + 4 > len(tiff):
            return False
        offset = int.from_bytes(tiff[end : end + 4], order)
    return True


class DaliPreprocessor:
    """Decode + resize + normalise batches with DALI; one instance per decode thread."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        batch_size: int = 32,
        num_threads: int = 1,
        device: str = "cpu",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        identifiers: IdentifierMode = IdentifierMode.HASH,
        uid_salt: str = "",
    ) -> None:
        ok, reason = has_dali()
        if not ok:
            raise RuntimeError(reason)
        self.spec, self.batch_size, self.num_threads = spec, batch_size, num_threads
        self.device, self.max_pixels = device, max_pixels
        self.identifiers, self.uid_salt = IdentifierMode(identifiers), uid_salt
        self.gpu = device.startswith("cuda")
        self.device_id = (int(device.split(":")[1]) if ":" in device else 0) if self.gpu else None
        self._pipes: dict[str, Any] = {}
        # On a GPU every copy out of DALI and the batch assembly run on this preprocessor's own
        # stream (one per decode thread), never the legacy default stream; the batch carries an
        # event recorded there, which the consumer's stream waits for (backends/cuda_streams.py).
        self._stream = None
        if self.gpu:
            import torch

            self._stream = torch.cuda.Stream(device=f"cuda:{self.device_id}")

    # ---- pipelines ----------------------------------------------------------------------
    def _pipe(self, kind: str):
        if kind not in self._pipes:
            from nvidia.dali import pipeline_def

            @pipeline_def
            def build():
                if kind == RAW:
                    return _raw_graph(self.spec, self.gpu)
                return _encoded_graph(self.spec, self.gpu, sixteen_bit=kind == ENCODED16)

            # Synchronous execution: each run() consumes exactly the batch just fed, so
            # the caller keeps file order and knows which batch failed.
            pipe = build(
                batch_size=self.batch_size, num_threads=self.num_threads, device_id=self.device_id,
                prefetch_queue_depth=1, exec_pipelined=False, exec_async=False,
            )
            pipe.build()
            self._pipes[kind] = pipe
        return self._pipes[kind]

    def _run(self, kind: str, data: list, geometry: list[tuple[int, int]]):
        pipe = self._pipe(kind)
        pipe.feed_input("data", data)
        if self.spec.resize_mode is not ResizeMode.SQUASH:
            geo = [resize_roi(w, h, self.spec) for w, h in geometry]
            pipe.feed_input("roi_start", [g[0] for g in geo])
            pipe.feed_input("roi_end", [g[1] for g in geo])
        (out,) = pipe.run()
        # Copy out now: DALI reuses its output buffers on the next run.
        return self._take(out)

    def _take(self, tl):
        if not self.gpu:
            return np.array(tl.as_array(), copy=True)
        import torch
        from nvidia.dali.plugin.pytorch import feed_ndarray

        s = self.spec.input_size
        with torch.cuda.device(self._stream.device), torch.cuda.stream(self._stream):
            part = torch.empty((len(tl), 3, s, s), dtype=torch.float32, device=f"cuda:{self.device_id}")
            # Enqueued on our stream, after DALI's own work on its output (copy_to_external).
            feed_ndarray(tl.as_tensor(), part, cuda_stream=self._stream)
        return part  # filled device-to-device, never through host memory

    def _drop(self, kind: str) -> None:
        # After an operator error DALI marks the pipeline invalid: build a new one next time.
        self._pipes.pop(kind, None)

    # ---- public ------------------------------------------------------------------------------
    def run(self, items: Sequence[tuple[str | Path, bytes | None]]) -> PreprocessedBatch:
        """Preprocess ``items`` (path, file bytes or None to read) in order."""
        t0 = time.perf_counter()
        n = len(items)
        errors: list[str | None] = [None] * n
        infos: list[Decoded | None] = [None] * n
        routes: dict[str, list[tuple[int, np.ndarray]]] = {ENCODED8: [], ENCODED16: [], RAW: []}
        for i, (path, data) in enumerate(items):
            try:
                route, payload, infos[i] = self._classify(Path(path), data)
            except DecodeError as exc:
                errors[i] = str(exc)
                continue
            routes[route].append((i, payload))
        results: list[tuple[list[int], Any]] = []
        fallbacks = 0
        for kind in (ENCODED8, ENCODED16):
            for chunk in self._chunks(routes[kind]):
                try:
                    results.append(self._run_chunk(kind, chunk, infos))
                except Exception as exc:  # DALI raises RuntimeError("Critical error in pipeline ...")
                    self._drop(kind)
                    log.info("DALI batch failed (%s); decoding its %d files one by one", str(exc).splitlines()[0], len(chunk))
                    fallbacks += len(chunk)
                    for i, _ in chunk:
                        try:
                            routes[RAW].append((i, self._python_pixels(Path(items[i][0]), i, infos)))
                        except DecodeError as err:
                            errors[i], infos[i] = str(err), None
        for chunk in self._chunks(routes[RAW]):
            try:
                results.append(self._run_chunk(RAW, chunk, infos))
            except Exception:  # not expected (pixels are plain arrays); isolate it anyway
                self._drop(RAW)
                for one in chunk:
                    try:
                        results.append(self._run_chunk(RAW, [one], infos))
                    except Exception as exc:
                        self._drop(RAW)
                        errors[one[0]], infos[one[0]] = f"resize/normalise failed: {str(exc).splitlines()[0]}", None
        counts = {"dali_decoded": len(routes[ENCODED8]) + len(routes[ENCODED16]) - fallbacks,
                  "python_decoded": len(routes[RAW]), "errors": sum(e is not None for e in errors)}
        tensors, ready = self._assemble(n, results)
        return PreprocessedBatch(tensors, errors, infos, time.perf_counter() - t0, fallbacks, counts, ready)

    def _chunks(self, entries: list) -> list[list]:
        return [entries[k : k + self.batch_size] for k in range(0, len(entries), self.batch_size)]

    def _run_chunk(self, kind: str, chunk: list[tuple[int, np.ndarray]], infos: list) -> tuple[list[int], Any]:
        geometry = [(infos[i].width, infos[i].height) for i, _ in chunk]
        return [i for i, _ in chunk], self._run(kind, [p for _, p in chunk], geometry)

    def _classify(self, path: Path, data: bytes | None) -> tuple[str, np.ndarray, Decoded]:
        if data is None:
            try:
                if path.stat().st_size > DALI_MAX_FILE_BYTES:
                    # Not read whole into memory (a 3 GB backup file in the archive took 3.4 GB
                    # and 12 s here): the Python decoders read headers from disk and stream.
                    holder: list[Decoded | None] = [None]
                    return RAW, self._python_pixels(path, 0, holder), holder[0]
                data = path.read_bytes()
            except OSError as exc:
                raise DecodeError(f"cannot read file: {exc.strerror or exc}") from None
        if looks_like_dicom(data[:132]) or path.suffix.lower() in DICOM_SUFFIXES:
            holder = [None]
            pixels = self._python_pixels(path, 0, holder)
            return RAW, pixels, holder[0]
        try:
            info = probe_image(path, data, max_pixels=self.max_pixels)
        except DecodeError:
            info = None  # the Python decoders read some layouts PIL's header parser cannot
        if info is not None and info.format == "png" and not _png_chunks_fit(data):
            info = None  # to the Python decoders, which read only what is there
        if info is not None and info.format == "jpeg" and not _jpeg_exif_fits(data):
            info = None  # to the Python decoders: PIL reads a corrupt EXIF block safely
        if info is not None and info.format in DALI_FORMATS and info.meta.get("pil_mode") in DALI_MODES:
            return (ENCODED16 if info.bit_depth == 16 else ENCODED8), np.frombuffer(data, np.uint8), info
        holder = [None]
        pixels = self._python_pixels(path, 0, holder)
        return RAW, pixels, holder[0]

    def _python_pixels(self, path: Path, i: int, infos: list) -> np.ndarray:
        d = decode_file(path, max_pixels=self.max_pixels, identifiers=self.identifiers, uid_salt=self.uid_salt)
        infos[i] = Decoded(np.empty((0, 0), np.float32), d.format, d.width, d.height, d.bit_depth, d.meta)
        return np.ascontiguousarray(d.pixels[:, :, None])

    def _assemble(self, n: int, results: list[tuple[list[int], Any]]):
        s = self.spec.input_size
        if not self.gpu:
            out = np.zeros((n, 3, s, s), np.float32)
            for idx, part in results:
                out[idx] = part
            return out, None
        import torch

        with torch.cuda.device(self._stream.device), torch.cuda.stream(self._stream):
            out = torch.zeros((n, 3, s, s), dtype=torch.float32, device=f"cuda:{self.device_id}")
            for idx, part in results:
                out[torch.as_tensor(idx, device=out.device)] = part
            ready = torch.cuda.Event()
            ready.record(self._stream)
        return out, ready


def measure_throughput(paths: Sequence[Path], spec: ModelSpec, *, repeats: int = 3, batch_size: int = 16, num_threads: int = 1) -> dict[str, float]:
    """Images/s of DALI CPU vs the Python path on ``paths`` (best of ``repeats``)."""
    from fracture_batch.decode import decode_for_model

    items = [(p, Path(p).read_bytes()) for p in paths]
    dali = DaliPreprocessor(spec, batch_size=batch_size, num_threads=num_threads)
    dali.run(items[:batch_size])  # warm-up: pipeline build, allocations
    best_dali = best_py = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for k in range(0, len(items), batch_size):
            dali.run(items[k : k + batch_size])
        best_dali = min(best_dali, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for p in paths:
            decode_for_model(p, spec)
        best_py = min(best_py, time.perf_counter() - t0)
    return {"dali_images_per_s": len(paths) / best_dali, "python_images_per_s": len(paths) / best_py}
