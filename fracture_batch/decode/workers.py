"""The scorer's decode stage: files -> model inputs (or a readable error), never raising.

A decoder here is anything with ``decode(files: list[InputFile]) -> list[DecodeResult]``
(same order) and ``close()``; the runner's worker threads call it on one file (Python
decoders) or a whole batch (DALI). Three implementations:
- ``PythonDecoder``: ``decode.decode_file`` + ``preprocess.to_model_input`` in the calling
  thread. PIL's decoders and resampler and numpy release the GIL for most of the work;
  pydicom's parsing does not. No hard timeout: a thread cannot be stopped.
- ``ProcessDecoder``: the same functions in one dedicated child process per worker, so
  ``--decode-timeout`` is enforced by killing the child (and starting a new one) when a
  file takes too long; that file becomes an error row.
- ``DaliDecoder``: ``dali_pipeline.DaliPreprocessor`` on a whole batch (CPU pipeline, or
  ``mixed`` on a GPU where the batch stays a torch CUDA tensor), when DALI is chosen.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fracture_batch.decode import DEFAULT_MAX_PIXELS, DecodeError, decode_for_model
from fracture_batch.decode.types import IdentifierMode, InputFile, dicom_columns
from fracture_batch.model.preprocess import normalize_gray
from fracture_batch.model.spec import ModelSpec

log = logging.getLogger(__name__)


@dataclass
class DecodeResult:
    file: InputFile
    tensor: np.ndarray | None  # (3, S, S) float32, None on error
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)  # row columns: format, width, ..., dicom_*
    decode_path: str = ""  # how it was decoded, counted in _SUCCESS (device, cpu:<why>, ...)
    # A CUDA tensor's torch.cuda.Event, recorded on the producer's stream once it is written
    # (DALI mixed); the consumer waits for it on its own stream (backends.cuda_streams).
    ready: Any = None


@dataclass(frozen=True)
class DecodeOptions:
    max_pixels: int = DEFAULT_MAX_PIXELS
    identifiers: IdentifierMode = IdentifierMode.HASH  # how DICOM UIDs reach the output
    uid_salt: str = ""
    decode_reduce: str = "spec"  # ReduceOverride: the spec's reduction rule, or "off"

    def __post_init__(self) -> None:
        object.__setattr__(self, "identifiers", IdentifierMode(self.identifiers))


def decode_one(file: InputFile, spec: ModelSpec, opts: DecodeOptions, *, normalize: bool = True) -> DecodeResult:
    """Decode and preprocess one file; every failure becomes a DecodeResult with an error.
    ``normalize=False``: the tensor is the (S, S) resized gray (``decode_for_model``)."""
    if file.error:
        return DecodeResult(file, None, file.error)
    t0 = time.perf_counter()
    try:
        tensor, decoded = decode_for_model(file.path, spec, max_pixels=opts.max_pixels,
                                           identifiers=IdentifierMode(opts.identifiers), uid_salt=opts.uid_salt,
                                           reduce=False if opts.decode_reduce == "off" else None,
                                           normalize=normalize)
    except DecodeError as exc:
        return DecodeResult(file, None, str(exc), {"decode_ms": _ms(t0)})
    except MemoryError:
        return DecodeResult(file, None, "out of memory while decoding (image too large?)", {"decode_ms": _ms(t0)})
    except PermissionError:
        return DecodeResult(file, None, "permission denied: the file cannot be read", {"decode_ms": _ms(t0)})
    except OSError as exc:
        return DecodeResult(file, None, f"cannot read file: {exc.strerror or exc}", {"decode_ms": _ms(t0)})
    except Exception as exc:  # a decoder bug must not stop an overnight run: row it and go on
        log.debug("unexpected decode failure for %s", file.path, exc_info=True)
        return DecodeResult(file, None, f"unexpected decoder error ({exc.__class__.__name__}: {exc})",
                            {"decode_ms": _ms(t0)})
    return DecodeResult(file, tensor, None, _info(decoded, _ms(t0)))


def _info(decoded, decode_ms: float) -> dict[str, Any]:
    return {
        "format": decoded.format, "width": decoded.width, "height": decoded.height,
        "bit_depth": decoded.bit_depth, "decode_ms": decode_ms, **dicom_columns(decoded.meta or {}),
    }


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


class PythonDecoder:
    batch_size = 1

    def __init__(self, spec: ModelSpec, opts: DecodeOptions):
        self.spec, self.opts = spec, opts

    def decode(self, files: list[InputFile]) -> list[DecodeResult]:
        return [decode_one(f, self.spec, self.opts) for f in files]

    def close(self) -> None:
        pass


def _child_entry() -> None:
    """Child process main: ``python -c ... <read fd> <write fd>``, pickled messages over pipes."""
    from multiprocessing.connection import Connection

    rx, tx = Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False)
    spec_json, opts = rx.recv()
    spec, options = ModelSpec.from_json(spec_json), DecodeOptions(**opts)
    tx.send("ready")  # imports done: the parent's per-file timeout starts from here
    while True:
        try:
            file = rx.recv()
        except EOFError:
            return
        if file is None:
            return
        # The resized gray, not the (3, S, S) normalised tensor: a third of the bytes to
        # pickle, pipe and unpickle (the parent normalises; ProcessDecoder._receive).
        tx.send(decode_one(InputFile(*file), spec, options, normalize=False))


_STARTUP_TIMEOUT_S = 120.0
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])  # the folder holding fracture_batch/


@dataclass
class DecodeChild:
    """A decode child process that has been started and is importing its decoders; it
    learns the spec and options from the ``ProcessDecoder`` that adopts it."""

    proc: subprocess.Popen
    tx: Any  # multiprocessing.connection.Connection to the child
    rx: Any  # and back

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.tx.close()
        self.rx.close()


def spawn_decode_child() -> DecodeChild:
    """Start a fresh interpreter for ``_child_entry`` (not fork: the parent runs
    onnxruntime/OpenVINO/torch threads, and forking a multi-threaded process can deadlock the
    child; not multiprocessing's spawn either: that re-imports the caller's ``__main__``,
    which breaks scripts without an ``if __name__ == "__main__"`` guard). Returns at once:
    the interpreter start and imports (~0.15 CPU-s) run while the caller does other work."""
    from multiprocessing.connection import Connection

    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_PARENT, env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from fracture_batch.decode.workers import _child_entry; _child_entry()",
             str(to_child_r), str(from_child_w)],
            pass_fds=(to_child_r, from_child_w), env=env, stdin=subprocess.DEVNULL,
        )
    except BaseException:
        for fd in (to_child_w, from_child_r):
            os.close(fd)
        raise
    finally:
        os.close(to_child_r)
        os.close(from_child_w)
    return DecodeChild(proc, Connection(to_child_w, readable=False), Connection(from_child_r, writable=False))


class ProcessDecoder:
    """One child process decoding for one worker thread, killed and restarted on timeout.

    ``child``: one already started by ``spawn_decode_child`` (the local runner starts them
    while the model loads), used for the first start; restarts spawn their own.
    """

    # Files in flight per child: it decodes the next one while this thread receives the
    # last result, instead of idling a round trip per file (measured: 113 vs 110 images/s
    # end to end, int8, 2 cores: small, but free). Few, so the paths never fill the pipe.
    batch_size = 4

    def __init__(self, spec: ModelSpec, opts: DecodeOptions, timeout_s: float, child: DecodeChild | None = None):
        self.spec, self.opts, self.timeout_s = spec, opts, timeout_s
        self._proc: subprocess.Popen | None = None
        self._tx = self._rx = None
        self._spare = child
        self.restarts = 0

    def _start(self) -> None:
        child, self._spare = self._spare or spawn_decode_child(), None
        self._proc, self._tx, self._rx = child.proc, child.tx, child.rx
        try:
            self._tx.send((self.spec.to_json(), dataclasses.asdict(self.opts)))
        except OSError:
            pass  # the child died already: the ready check below says so
        # Start-up (interpreter + numpy/PIL/pydicom imports) must not count against a file.
        try:
            ready = self._rx.poll(_STARTUP_TIMEOUT_S) and self._rx.recv() == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            self._kill()
            raise RuntimeError(f"the decoder process did not start within {_STARTUP_TIMEOUT_S:g}s")

    def decode(self, files: list[InputFile]) -> list[DecodeResult]:
        results: list[DecodeResult | None] = [
            DecodeResult(f, None, f.error) if f.error else None for f in files]
        todo = [i for i, f in enumerate(files) if not f.error]
        while todo:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            try:
                for i in todo:
                    self._tx.send(dataclasses.astuple(files[i]))
            except OSError:  # died before reading its work: the next receive reports it
                pass
            for n, i in enumerate(todo):
                results[i] = self._receive(files[i])
                if self._proc is None:  # killed on that file: resend the rest to a new child
                    todo = todo[n + 1:]
                    break
            else:
                todo = []
        return results  # type: ignore[return-value]

    def _receive(self, file: InputFile) -> DecodeResult:
        """The child's result for ``file`` (the oldest in flight); on a timeout or a crash
        the child is killed and ``file`` gets the error row."""
        t0 = time.perf_counter()
        try:
            if self._rx.poll(self.timeout_s):
                result = self._rx.recv()
                if result.tensor is not None:  # the child sent the resized gray (_child_entry)
                    result.tensor = normalize_gray(result.tensor, self.spec).astype(np.float32, copy=False)
                return result
            msg = (f"decoding took longer than --decode-timeout={self.timeout_s:g}s; "
                   "skipped (the file may be pathological, or raise the timeout)")
        except (EOFError, OSError):
            msg = "the decoder process died on this file (crash in a native decoder?)"
        self._kill()
        self.restarts += 1
        log.warning("%s: %s", file.path, msg)
        return DecodeResult(file, None, msg, {"decode_ms": _ms(t0)})

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        for conn in (self._tx, self._rx):
            if conn is not None:
                conn.close()
        self._proc = self._tx = self._rx = None

    def close(self) -> None:
        if self._spare is not None:  # never used (no file reached this worker)
            self._spare.kill()
            self._spare = None
        if self._proc is not None and self._proc.poll() is None:
            try:
                self._tx.send(None)
                self._proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill()


class DaliDecoder:
    """A batch through DALI; files known bad at discovery never reach the pipeline."""

    def __init__(self, spec: ModelSpec, opts: DecodeOptions, *, batch_size: int, device: str, num_threads: int = 1):
        from fracture_batch.decode.dali import DaliPreprocessor

        self.batch_size = batch_size
        self._pre = DaliPreprocessor(
            spec, batch_size=batch_size, num_threads=num_threads, device=device, max_pixels=opts.max_pixels,
            identifiers=IdentifierMode(opts.identifiers), uid_salt=opts.uid_salt,
        )

    def decode(self, files: list[InputFile]) -> list[DecodeResult]:
        results: list[DecodeResult | None] = [None] * len(files)
        todo = [i for i, f in enumerate(files) if not f.error]
        for i, f in enumerate(files):
            if f.error:
                results[i] = DecodeResult(f, None, f.error)
        if todo:
            t0 = time.perf_counter()
            try:
                batch = self._pre.run([(files[i].path, None) for i in todo])
            except Exception as exc:  # the whole batch failed: each file gets the reason
                msg = f"DALI preprocessing failed for this batch ({exc.__class__.__name__}: {exc})"
                for i in todo:
                    results[i] = DecodeResult(files[i], None, msg)
                return results  # type: ignore[return-value]
            per_file_ms = _ms(t0) / len(todo)
            for j, i in enumerate(todo):
                err, info = batch.errors[j], batch.infos[j]
                extra = _info(info, per_file_ms) if info is not None else {"decode_ms": per_file_ms}
                # On a GPU the slice stays a torch CUDA tensor: no host round trip.
                tensor = None if err else batch.tensors[j]
                results[i] = DecodeResult(files[i], tensor, err, extra, ready=batch.ready)
        return results  # type: ignore[return-value]

    def close(self) -> None:
        self._pre = None


class NvImageCodecDecoder:
    """DICOM files in batches through ``gpu_dicom.DeviceDicomPreprocessor`` (nvImageCodec
    decode + torch on ``device``; tensors stay on the device), everything else through
    ``decode_one``. Each result says its ``decode_path``; the scorer counts them."""

    def __init__(self, spec: ModelSpec, opts: DecodeOptions, *, batch_size: int, device: str):
        from fracture_batch.decode.gpu_dicom import DeviceDicomPreprocessor

        self.batch_size, self.spec, self.opts = batch_size, spec, opts
        self._pre = DeviceDicomPreprocessor(spec, device=device, max_pixels=opts.max_pixels,
                                            identifiers=IdentifierMode(opts.identifiers), uid_salt=opts.uid_salt)

    def decode(self, files: list[InputFile]) -> list[DecodeResult]:
        from fracture_batch.decode import is_dicom
        from fracture_batch.decode.types import DICOM_SUFFIXES

        results: list[DecodeResult | None] = [None] * len(files)
        dicom = [i for i, f in enumerate(files)
                 if not f.error and (is_dicom(f.path) or Path(f.path).suffix.lower() in DICOM_SUFFIXES)]
        for i, f in enumerate(files):
            if i not in dicom:
                results[i] = decode_one(f, self.spec, self.opts)
                results[i].decode_path = "python"
        if dicom:
            t0 = time.perf_counter()
            try:
                batch = self._pre.run([files[i].path for i in dicom])
            except Exception as exc:  # the device failed as a whole: every file on the CPU
                log.warning("device DICOM batch failed (%s: %s); decoding on the CPU", exc.__class__.__name__, exc)
                for i in dicom:
                    results[i] = decode_one(files[i], self.spec, self.opts)
                    results[i].decode_path = "cpu:device-batch-failed"
                return results  # type: ignore[return-value]
            per_file_ms = _ms(t0) / len(dicom)
            for j, i in enumerate(dicom):
                err, info = batch.errors[j], batch.infos[j]
                extra = _info(info, per_file_ms) if info is not None else {"decode_ms": per_file_ms}
                results[i] = DecodeResult(files[i], None if err else batch.tensors[j], err, extra,
                                          decode_path=batch.paths[j] or "error")
        return results  # type: ignore[return-value]

    def close(self) -> None:
        self._pre = None
