"""Progress that reads well on a terminal and in a log file.

On a terminal: a tqdm bar. Anywhere else (a log file, CI, cron, a pipe): one plain line
every ``step`` percent (5 by default) and a last line at the end, instead of the
thousands of carriage-return frames a tqdm bar writes into a file. With an unknown
total, a line every ``interval`` seconds.

``quiet_output()`` keeps third-party chatter (libraries that ``print`` to stdout, C
libraries writing to the standard streams) out of the user's output: it goes to this
module's logger at DEBUG, shown with ``fracture-batch -v``.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import time
from typing import IO, Iterable, Iterator, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


def is_terminal(stream: IO | None = None) -> bool:
    stream = stream if stream is not None else sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class LineProgress:
    """tqdm's small interface (update, total, n, close, iteration) as plain lines."""

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", *, step: float = 5.0,
                 interval: float = 30.0, min_interval: float = 1.0, file: IO | None = None):
        self.total, self.desc, self.unit = total, desc, unit
        # min_interval: a step reached within a second of the last line is not printed
        # (a 2-second stage is not 20 lines); the last line always is.
        self.step, self.interval, self.min_interval = step, interval, min_interval
        self.file = file if file is not None else sys.stderr
        self.n = 0
        self._start = self._last_time = time.monotonic()
        self._next_pct = step
        self._closed = False

    def _line(self, final: bool = False) -> None:
        elapsed = time.monotonic() - self._start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        if self.total:
            pct = 100.0 * self.n / self.total
            eta = (self.total - self.n) / rate if rate > 0 else 0.0
            text = (f"{self.desc}: {pct:3.0f}% {self.n}/{self.total} {self.unit} "
                    f"[{_clock(elapsed)}, {rate:.1f} {self.unit}/s" + ("]" if final else f", {_clock(eta)} left]"))
        else:
            text = f"{self.desc}: {self.n} {self.unit} [{_clock(elapsed)}, {rate:.1f} {self.unit}/s]"
        print(text, file=self.file, flush=True)
        self._last_time = time.monotonic()

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.total:
            pct = 100.0 * self.n / self.total
            if pct >= self._next_pct and self.n < self.total:
                if time.monotonic() - self._last_time >= self.min_interval:
                    self._line()
                while self._next_pct <= pct:
                    self._next_pct += self.step
        elif time.monotonic() - self._last_time >= self.interval:
            self._line()

    def refresh(self) -> None:
        pass

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.n:
                self._line(final=True)

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m:02d}:{s:02d}" if m < 60 else f"{m // 60}:{m % 60:02d}:{s:02d}"


def create_progress(total: int | None = None, desc: str = "", unit: str = "it", *, enabled: bool = True,
                    leave: bool = False, file: IO | None = None, step: float = 5.0):
    """A tqdm bar on a terminal, a ``LineProgress`` elsewhere, a silent one when disabled."""
    stream = file if file is not None else sys.stderr
    if not enabled:
        return _Silent()
    if is_terminal(stream):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, leave=leave, file=stream, dynamic_ncols=True)
    return LineProgress(total, desc, unit, file=stream, step=step)


class _Silent(LineProgress):
    def __init__(self):
        super().__init__(None, "", file=io.StringIO(), step=float("inf"), interval=float("inf"))

    def close(self) -> None:
        self._closed = True


def track(items: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it", *,
          enabled: bool = True, step: float = 5.0) -> Iterator[T]:
    """``for x in track(loader, len(loader), "train"):`` with ``create_progress``'s rule."""
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    bar = create_progress(total, desc, unit, enabled=enabled, step=step)
    try:
        for x in items:
            yield x
            bar.update(1)
    finally:
        bar.close()


@contextlib.contextmanager
def quiet_output(what: str = "third-party output", *, fd_level: bool = True) -> Iterator[None]:
    """Send whatever is printed to stdout inside the block to the DEBUG log.

    Python-level ``print``s are caught with ``redirect_stdout``; with ``fd_level`` file
    descriptor 1 is pointed at a temporary file too, which catches C libraries printing
    to it directly. stderr is left alone: warnings and our own log lines stay visible.
    Other threads' stdout output in the meantime is captured too, so use it around
    single-threaded steps such as export calibration.
    """
    buf = io.StringIO()
    saved: list[tuple[int, int]] = []
    tmp = tempfile.TemporaryFile(mode="w+b") if fd_level else None
    try:
        if tmp is not None:
            try:
                sys.stdout.flush()
                saved.append((1, os.dup(1)))
                os.dup2(tmp.fileno(), 1)
            except (OSError, ValueError):  # no descriptor 1 (an embedded interpreter)
                pass
        with contextlib.redirect_stdout(buf):
            yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)
        text = buf.getvalue()
        if tmp is not None:
            tmp.seek(0)
            text += tmp.read().decode("utf-8", "replace")
            tmp.close()
        if text.strip():
            log.debug("%s:\n%s", what, text.rstrip())
