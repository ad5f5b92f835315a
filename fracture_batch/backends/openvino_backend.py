"""OpenVINO backend (CPU): runs the ONNX files export writes, int8 Q/DQ and fp32 alike.

Why it exists: on an Intel Xeon with AMX, OpenVINO runs the int8 Q/DQ graph on AMX int8
tiles and the fp32 graph in bf16 on AMX, where onnxruntime's CPU EP does neither
(README "CPU backends" has the figures). Precision: an int8 file is int8 whatever the
hint; ``InferencePrecision`` decides the arithmetic of everything else (``bf16`` only
where the CPU has AMX or AVX512-BF16; ``auto`` = bf16 for a fp32 file there, f32 for an
int8 file, measured as fast as bf16 for the few non-quantised ops).

Throughput: the THROUGHPUT hint makes one stream per core group, and ``submit`` splits a
batch over one infer request per stream, so the streams run in parallel; the local runner
submits the next batch before collecting this one (``IN_FLIGHT``), so a stream that
finishes its chunk starts on the next batch instead of waiting for Python. The compiled
model is cached (``CACHE_DIR``), so a second start-up skips compilation (README figures:
~1 s compile -> ~0.1 s load for ResNet50 int8).
"""
from __future__ import annotations

import enum
import logging
import os
from pathlib import Path

import numpy as np

from fracture_batch.backends.base import BackendError, BackendKind, BackendOptions, DeviceKind, check_input, to_numpy

log = logging.getLogger(__name__)

OPENVINO_INSTALL_HINT = "pip install 'fracture-batch[openvino]'"
# Flags under which OpenVINO's CPU plugin has native bf16 kernels (else it emulates).
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
IN_FLIGHT = 2  # batches a runner may have submitted and not yet collected (OpenVinoBackend.submit)


class InferencePrecision(str, enum.Enum):
    """OpenVINO's INFERENCE_PRECISION_HINT for the ops a file does not quantise."""

    AUTO = "auto"
    F32 = "f32"
    BF16 = "bf16"


def has_openvino() -> tuple[bool, str]:
    try:
        import openvino
    except Exception as exc:
        return False, f"openvino is not importable ({exc.__class__.__name__}: {exc}); {OPENVINO_INSTALL_HINT}"
    return True, f"openvino {openvino.__version__.split('-')[0]}"


def cpu_has_bf16() -> bool:
    from fracture_batch.machine import cpu_info

    return any(f in cpu_info()["cpu_flags"] for f in BF16_FLAGS)


def is_int8_file(path: str | Path, metadata: dict[str, str] | None = None) -> bool:
    """A Q/DQ file from export (model.int8.onnx / model.int8.trt.onnx) by its metadata or name."""
    from fracture_batch.model.onnx_meta import VARIANT_METADATA_KEY, read_metadata

    if metadata is None:
        try:
            metadata = read_metadata(path)
        except Exception:
            metadata = {}
    return metadata.get(VARIANT_METADATA_KEY, "").startswith("int8") or ".int8" in Path(path).name


def resolve_precision(path: str | Path, precision: InferencePrecision | str, int8: bool | None = None) -> InferencePrecision:
    precision = InferencePrecision(precision)
    if precision is InferencePrecision.BF16 and not cpu_has_bf16():
        raise BackendError("--inference-precision bf16 needs a CPU with AMX or AVX512-BF16 (this one has neither); "
                           "use f32 or auto")
    if precision is not InferencePrecision.AUTO:
        return precision
    if (is_int8_file(path) if int8 is None else int8) or not cpu_has_bf16():
        return InferencePrecision.F32
    return InferencePrecision.BF16


def default_cache_dir() -> Path:
    """Compiled models persist across runs and output directories (they depend on the model
    bytes, the CPU and the OpenVINO version only, which OpenVINO's cache key covers)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fracture-batch" / "openvino"


class OpenVinoBackend:
    kind = BackendKind.OPENVINO
    max_batch = None

    def __init__(self, model_path: str | Path, device: DeviceKind, options: BackendOptions):
        if device is DeviceKind.CUDA:
            raise BackendError("the OpenVINO backend runs on the CPU here; use --device cpu (or auto)")
        ok, why = has_openvino()
        if not ok:
            raise BackendError(why)
        import openvino as ov

        from fracture_batch.backends.onnxruntime_backend import check_external_data
        from fracture_batch.model.onnx_meta import OnnxModelError, read_metadata, spec_from_metadata

        path = Path(model_path)
        check_external_data(path)
        try:
            metadata = read_metadata(path)
            self.spec = spec_from_metadata(metadata, source=str(path))
        except OnnxModelError as exc:
            raise BackendError(str(exc)) from None
        self.int8 = is_int8_file(path, metadata)
        self.precision = resolve_precision(path, options.inference_precision, self.int8)
        self.cache_dir = Path(options.openvino_cache_dir) if options.openvino_cache_dir else default_cache_dir()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        config = {
            "PERFORMANCE_HINT": "THROUGHPUT",
            "INFERENCE_PRECISION_HINT": self.precision.value,
            "CACHE_DIR": str(self.cache_dir),
        }
        if options.intra_op_threads > 0:
            config["INFERENCE_NUM_THREADS"] = options.intra_op_threads
        try:
            core = ov.Core()
            self.compiled = core.compile_model(str(path), "CPU", config)
        except Exception as exc:
            raise BackendError(f"OpenVINO cannot load {path}: {exc}") from None
        self.device = DeviceKind.CPU
        self.requests = max(1, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        # Plain infer requests, one per stream and batch in flight, started and waited on
        # from the caller's thread: no Python callback runs on OpenVINO's threads, so none of
        # them ever waits for the GIL. (With AsyncInferQueue's callback, destroying the
        # compiled model joined executor threads while holding the GIL and hung once another
        # pybind11 module, nvImageCodec, was loaded.) ``IN_FLIGHT`` sets of requests let the
        # runner submit batch N + 1 before it collects batch N, so the streams never wait
        # for the Python side between batches (``submit``).
        self._slots = [[self.compiled.create_infer_request() for _ in range(self.requests)]
                       for _ in range(IN_FLIGHT)]
        self._slot_jobs: list[_Job | None] = [None] * IN_FLIGHT
        self._next_slot = 0
        streams = self.compiled.get_property("NUM_STREAMS")
        threads = self.compiled.get_property("INFERENCE_NUM_THREADS")
        self.description = (f"openvino {ov.__version__.split('-')[0]} CPU, {self.precision.value} inference precision"
                            f"{' (int8 Q/DQ file)' if self.int8 else ''}, {streams} stream(s), "
                            f"{threads} thread(s), cache {self.cache_dir}")

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.submit(x).result()

    def submit(self, x: np.ndarray) -> "_Job":
        """Start inference on a batch and return at once; ``.result()`` waits for its logits.

        At most ``IN_FLIGHT`` batches run at a time: a submit that needs a slot whose batch
        is not collected yet collects it first (its result is kept for its owner)."""
        check_input(x, self.spec)
        x = to_numpy(x)
        slot = self._next_slot
        self._next_slot = (slot + 1) % IN_FLIGHT
        previous = self._slot_jobs[slot]
        if previous is not None:
            previous.result()  # its outputs are copied out before the requests are reused
        job = _Job(self._slots[slot], x, self.spec.num_classes)
        self._slot_jobs[slot] = job
        return job

    def close(self) -> None:
        for job in self._slot_jobs:
            if job is not None:
                try:
                    job.result()  # no request may still run when the compiled model goes
                except Exception:  # its failure was (or will be) reported by its owner
                    log.debug("OpenVINO batch failed while closing", exc_info=True)
        self._slots, self._slot_jobs = [], []
        self.compiled = None


class _Job:
    """One batch split over a set of infer requests (one chunk per stream, each >= 8 images
    so the conv kernels keep their efficiency), started at construction."""

    def __init__(self, requests: list, x: np.ndarray, num_classes: int):
        self._logits: np.ndarray | None = None
        if len(x) == 0:
            self._logits, self._running = np.empty((0, num_classes), np.float32), []
            return
        chunks = np.array_split(x, min(len(requests), max(1, len(x) // 8)))
        self._running = requests[:len(chunks)]
        for request, chunk in zip(self._running, chunks):
            request.start_async({0: np.ascontiguousarray(chunk)})

    def result(self) -> np.ndarray:
        if self._logits is None:
            out = []
            for request in self._running:
                request.wait()
                out.append(np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True))
            self._logits, self._running = np.concatenate(out), []
        return self._logits
