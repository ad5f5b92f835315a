"""Fuzzing machinery shared by tests/test_fuzz.py (hypothesis, short) and
tests/tools/fuzz_longrun.py (random, time-bounded): mutations of valid seed files and a
guarded child process that runs discovery + decoding on each mutant.

The contract checked for every input: discovery gives it exactly one ``InputFile``, and
then either the file is refused with a readable message (a discovery error or a
``DecodeError``: an error row) or it decodes to finite float32 gray in [0, 1] whose
shape matches the reported width/height, and preprocesses to a finite model input.
Anything else is a bug: another exception type, a crash of the process (a native
decoder fault), a hang (no answer within the timeout), or a decode that blows memory.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import resource
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from support import hostile_inputs as hi

# Interesting integers for header fields: boundaries of 8/16/32-bit, signed and not.
INTERESTING = (0, 1, 2, 3, 7, 8, 16, 0x7F, 0x80, 0xFF, 0x100, 0x3FFF, 0x7FFF, 0x8000, 0xFFFF, 0x10000,
               0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)
CHILD_ADDRESS_SPACE = 6 << 30  # a decode asking for more than this is a bomb, not a radiograph
DEFAULT_TIMEOUT_S = 20.0  # a hang, not a slow machine: normal mutants decode in milliseconds
SLOW_S = 10.0  # any single mutant slower than this is a stall (generous: 2 loaded cores)
MEMORY_BOMB_MB = 2500  # peak RSS growth one mutant may cause (a 100 MP float32 image is 400 MB)
Choose = Callable[[int], int]  # choose(n) -> an int in [0, n)


@dataclass(frozen=True)
class Outcome:
    kind: str  # "ok" | "error_row" | "bug" | "hang" | "crash"
    detail: str = ""
    seconds: float = 0.0
    rss_mb: float = 0.0

    @property
    def acceptable(self) -> bool:
        return self.kind in ("ok", "error_row")


# ---- mutations -----------------------------------------------------------------------------
def mutate(name: str, data: bytes, choose: Choose, seeds: dict[str, bytes]) -> tuple[bytes, list[str]]:
    """Apply 1-4 random mutations; returns (bytes, description of each step)."""
    buf = bytearray(data)
    steps: list[str] = []
    for _ in range(1 + choose(4)):
        op = choose(8)
        n = len(buf)
        if op == 0 and n:
            pos, bit = choose(n), choose(8)
            buf[pos] ^= 1 << bit
            steps.append(f"flip byte {pos} bit {bit}")
        elif op == 1 and n:
            pos, value = choose(n), (0x00, 0xFF, 0x7F, 0x80)[choose(4)] if choose(2) else choose(256)
            buf[pos] = value
            steps.append(f"set byte {pos}={value}")
        elif op == 2 and n:
            cut = choose(n)
            del buf[cut:]
            steps.append(f"truncate at {cut}")
        elif op == 3 and n:
            start = choose(n)
            length = 1 + choose(64)
            del buf[start : start + length]
            steps.append(f"delete {length} at {start}")
        elif op == 4:
            pos = choose(n + 1)
            extra = bytes(choose(256) for _ in range(1 + choose(16)))
            buf[pos:pos] = extra
            steps.append(f"insert {len(extra)} random at {pos}")
        elif op == 5:
            fields = hi.fields_for(name, bytes(buf))
            if fields:
                off, size, endian, field_name = fields[choose(len(fields))]
                value = _field_value(buf, off, size, endian, choose) & ((1 << (8 * size)) - 1)
                buf[off : off + size] = value.to_bytes(size, "little" if endian == "<" else "big")
                steps.append(f"field {field_name}@{off}={value}")
        elif op == 6:
            donor_name = sorted(seeds)[choose(len(seeds))]
            donor = seeds[donor_name]
            start = choose(len(donor))
            piece = donor[start : start + 1 + choose(128)]
            pos = choose(n + 1)
            buf[pos : pos + (choose(len(piece) + 1))] = piece
            steps.append(f"splice {len(piece)} from {donor_name}@{start} at {pos}")
        elif op == 7 and n:
            start = choose(n)
            piece = bytes(buf[start : start + 1 + choose(48)])
            times = 1 + choose(64)
            buf[start:start] = piece * times
            steps.append(f"repeat {len(piece)} bytes x{times} at {start}")
    if name.endswith(".png") and choose(2):
        buf = bytearray(hi.png_fix_crcs(bytes(buf)))  # get past CRC checks to the parser
        steps.append("fix PNG CRCs")
    return bytes(buf), steps


def _field_value(buf: bytearray, off: int, size: int, endian: str, choose: Choose) -> int:
    current = int.from_bytes(buf[off : off + size], "little" if endian == "<" else "big")
    kind = choose(3)
    if kind == 0:
        return INTERESTING[choose(len(INTERESTING))]
    if kind == 1:
        return current + (-1, 1, 2, -2)[choose(4)]
    return current * (2, 16, 256, 65536)[choose(4)]


# ---- the guarded child -----------------------------------------------------------------------
def _child_main(conn, workdir: str) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    # A decoder that trusts a bogus header gets MemoryError instead of taking the machine.
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_ADDRESS_SPACE, CHILD_ADDRESS_SPACE))
    import logging
    import warnings

    # Decoders warn and log about every corrupt mutant (native ones straight to fd 2);
    # the verdict is in the Outcome. FUZZ_CHILD_STDERR=1 keeps their output for debugging.
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    if not os.environ.get("FUZZ_CHILD_STDERR"):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    from fracture_batch.model.spec import ModelSpec

    spec = ModelSpec(arch="resnet18", input_size=32)
    dali = None
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        data, suffix, mode = msg
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        try:
            if mode.startswith("selftest-"):
                _selftest(mode)
            if mode == "dali":
                if dali is None:
                    from fracture_batch.decode.dali import DaliPreprocessor

                    dali = DaliPreprocessor(spec, batch_size=1, num_threads=1)
                kind, detail = _check_dali(dali, workdir, data, suffix)
            else:
                kind, detail = _check_python(spec, workdir, data, suffix)
        except Exception:
            kind, detail = "bug", traceback.format_exc(limit=8)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        conn.send(Outcome(kind, detail, time.perf_counter() - t0, (after - before) / 1024))


def _selftest(mode: str) -> None:
    """Deliberate failures, so tests can prove the guard reports each kind."""
    if mode == "selftest-hang":
        time.sleep(3600)
    if mode == "selftest-crash":
        os.abort()
    raise RuntimeError("selftest: an exception that is not a DecodeError")


def _place(workdir: str, data: bytes, suffix: str) -> Path:
    d = Path(workdir) / "in"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    p = d / f"mutant{suffix}"
    p.write_bytes(data)
    return p


def _discover_one(workdir: str, data: bytes, suffix: str):
    from fracture_batch.scoring.discover import DiscoveryStats, iter_inputs

    p = _place(workdir, data, suffix)
    stats = DiscoveryStats()
    files = list(iter_inputs([p.parent], stats=stats))
    if len(files) != 1 or files[0].path != str(p):
        raise AssertionError(f"discovery gave {files} (skipped {stats.skipped}) for one regular file")
    return files[0]


def _check_python(spec, workdir: str, data: bytes, suffix: str) -> tuple[str, str]:
    import numpy as np

    from fracture_batch.decode import DecodeError, decode_file
    from fracture_batch.model.preprocess import to_model_input

    f = _discover_one(workdir, data, suffix)
    if f.error:
        return _error_row(f.error)
    try:
        d = decode_file(f.path)
    except DecodeError as exc:
        return _error_row(str(exc))
    px = d.pixels
    problems = []
    if px.dtype != np.float32 or px.ndim != 2:
        problems.append(f"pixels {px.dtype} {px.shape}, expected float32 2-D")
    elif px.shape != (d.height, d.width):
        problems.append(f"pixels {px.shape} but reported {d.width}x{d.height}")
    elif px.size and not (np.isfinite(px).all() and px.min() >= 0.0 and px.max() <= 1.0):
        problems.append(f"pixels outside [0, 1] or not finite: {np.nanmin(px)}..{np.nanmax(px)}")
    if not problems:
        t = to_model_input(px, spec)
        if t.shape != (3, spec.input_size, spec.input_size) or not np.isfinite(t).all():
            problems.append(f"model input {t.shape} finite={np.isfinite(t).all()}")
    if not problems:
        problems += _check_reduced(f.path, d)
    return ("bug", "; ".join(problems)) if problems else ("ok", f"{d.format} {d.width}x{d.height}")


# An 8 px input with ratio 1 engages every reduced path on the small seeds (32 x 32 JPEG
# 2000 / HTJ2K: 2 levels dropped; JPEG: DCT 1/4; others: box means).
REDUCE_SPEC_KW = dict(arch="resnet18", input_size=8, reduce_min_ratio=1.0)


def _check_reduced(path: str, full) -> list[str]:
    """A file that decodes in full must also decode for the model by the reduction rule
    (its fast paths fall back to the full decode), to a finite tensor, same size reported."""
    import numpy as np

    from fracture_batch.decode import DecodeError, decode_for_model
    from fracture_batch.model.spec import ModelSpec

    spec = ModelSpec(**REDUCE_SPEC_KW)
    try:
        t, d = decode_for_model(path, spec)
    except DecodeError as exc:
        return [f"full decode ok but reduced decode refused: {exc}"]
    problems = []
    if t.shape != (3, 8, 8) or not np.isfinite(t).all():
        problems.append(f"reduced model input {t.shape} finite={np.isfinite(t).all()}")
    if (d.width, d.height) != (full.width, full.height):
        problems.append(f"reduced decode reports {d.width}x{d.height}, full {full.width}x{full.height}")
    return problems


def _check_dali(dali, workdir: str, data: bytes, suffix: str) -> tuple[str, str]:
    import numpy as np

    f = _discover_one(workdir, data, suffix)
    if f.error:
        return _error_row(f.error)
    batch = dali.run([(f.path, data)])
    if batch.errors[0] is not None:
        return _error_row(batch.errors[0])
    t = np.asarray(batch.tensors)
    if t.shape[1:] != (3, dali.spec.input_size, dali.spec.input_size) or not np.isfinite(t).all():
        return "bug", f"DALI tensor {t.shape} finite={np.isfinite(t).all()}"
    return "ok", "dali"


def _error_row(message: str) -> tuple[str, str]:
    if not isinstance(message, str) or not message.strip():
        return "bug", f"error row without a readable message: {message!r}"
    return "error_row", message


class GuardedDecoder:
    """A child process that decodes mutants; restarted after a hang or a crash."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.timeout_s = timeout_s
        self._ctx = mp.get_context("spawn")  # clean interpreter: no inherited threads/locks
        self._workdir = tempfile.mkdtemp(prefix="fuzz-")
        self._proc = None
        self._conn = None

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_child_main, args=(child, self._workdir), daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent

    def run(self, data: bytes, suffix: str, mode: str = "python") -> Outcome:
        if self._proc is None or not self._proc.is_alive():
            self._start()
        t0 = time.perf_counter()
        try:
            self._conn.send((data, suffix, mode))
            # The first call also pays the child's imports (and DALI's pipeline build).
            if self._conn.poll(self.timeout_s):
                return self._conn.recv()
            outcome = Outcome("hang", f"no answer within {self.timeout_s:g}s", time.perf_counter() - t0)
        except (EOFError, OSError):
            code = self._proc.exitcode if self._proc is not None else None
            outcome = Outcome("crash", f"decoder process died (exit code {code})", time.perf_counter() - t0)
        self._kill()
        return outcome

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(timeout=5)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.send(None)
                self._proc.join(timeout=5)
            except OSError:
                pass
        self._kill()
        shutil.rmtree(self._workdir, ignore_errors=True)


def judge(outcome: Outcome) -> str | None:
    """Why an outcome breaks the contract, or None."""
    if not outcome.acceptable:
        return f"{outcome.kind}: {outcome.detail}"
    if outcome.seconds > SLOW_S:
        return f"stall: {outcome.seconds:.1f}s for one file ({outcome.kind})"
    if outcome.rss_mb > MEMORY_BOMB_MB:
        return f"memory: peak RSS grew {outcome.rss_mb:.0f} MB for one file"
    return None


def save_finding(directory: Path, name: str, data: bytes, reason: str) -> Path:
    """Keep a failing mutant (and why) for tests/fuzz_regressions/."""
    import hashlib

    directory.mkdir(parents=True, exist_ok=True)
    stem, suffix = name.rsplit(".", 1)
    path = directory / f"{stem}-{hashlib.sha256(data).hexdigest()[:10]}.{suffix}"
    path.write_bytes(data)
    path.with_name(path.name + ".why.txt").write_text(reason + "\n")
    return path
