"""Input discovery: walk input roots recursively, lazily, one ``InputFile`` per file.

What becomes a row and what is skipped (documented in the README):
- every regular file under a root (or a root that is itself a file) is an input and gets
  exactly one row, whatever its content: non-images become error rows at decode time;
- a zero-byte file or a broken symbolic link is an input whose row is an error
  (``InputFile.error`` is set here, so the decoder never opens it);
- a symbolic link to a directory is followed, unless it points back to one of its own
  ancestors (a loop): that link is skipped and recorded in ``DiscoveryStats.skipped``;
- a directory that cannot be listed (permissions, I/O error) has no files to give rows
  to: it is logged and recorded in ``DiscoveryStats.skipped`` (and so in ``_SUCCESS``);
- directories in ``exclude`` (the output directory when it lies under an input root)
  are not entered, so a run never scores its own output.
Files stream in the order the file system lists them (a directory's files, then its
subdirectories in name order, depth first), so memory is bounded by directory depth and
the number of subdirectories of one directory, never by the number of files, even in a
flat directory of millions.
"""
from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from fracture_batch.decode.types import InputFile  # noqa: F401 (discovery's output type)

log = logging.getLogger(__name__)


@dataclass
class DiscoveryStats:
    files: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"path", "reason"}

    def skip(self, path: str, reason: str) -> None:
        log.warning("skipped %s: %s", path, reason)
        self.skipped.append({"path": path, "reason": reason})


def resolve_roots(roots: Iterable[str | os.PathLike]) -> list[str]:
    """Absolute roots, duplicates and roots nested inside another root dropped.

    Nesting is judged on the absolute (not symlink-resolved) paths, the same identity
    rows use, so one file is never reached twice under the same path.
    """
    absolute = sorted({os.path.abspath(os.fspath(r)) for r in roots})
    kept: list[str] = []
    for r in absolute:
        if any(r == k or r.startswith(k.rstrip(os.sep) + os.sep) for k in kept):
            log.info("input %s lies inside another input root; not walked twice", r)
            continue
        kept.append(r)
    return kept


def check_roots(roots: Iterable[str]) -> None:
    """Raise FileNotFoundError for a root that does not exist (a fatal, early error)."""
    missing = [r for r in roots if not os.path.lexists(r)]
    if missing:
        raise FileNotFoundError(f"input path does not exist: {', '.join(missing)}")


def iter_inputs(
    roots: Iterable[str | os.PathLike],
    *,
    exclude: Iterable[str | os.PathLike] = (),
    stats: DiscoveryStats | None = None,
) -> Iterator[InputFile]:
    stats = stats if stats is not None else DiscoveryStats()
    excluded = {os.path.abspath(os.fspath(e)) for e in exclude}
    for root in resolve_roots(roots):
        if os.path.isdir(root):
            yield from _walk(root, excluded, stats)
        else:
            item = _file_entry(root, os.path.basename(root), stats)
            if item is not None:
                yield item


def _walk(root: str, excluded: set[str], stats: DiscoveryStats) -> Iterator[InputFile]:
    # Explicit stack of (directory path, ancestor identities) keeps depth out of the
    # Python recursion limit; ancestors (dev, inode) detect symlink loops exactly.
    root_id = _dir_id(root)
    stack: list[tuple[str, frozenset]] = [(root, frozenset({root_id}) if root_id else frozenset())]
    while stack:
        directory, ancestors = stack.pop()
        try:
            it = os.scandir(directory)
        except OSError as exc:
            stats.skip(directory, f"directory cannot be listed: {exc.strerror or exc}")
            continue
        subdirs: list[tuple[str, frozenset]] = []
        with it:
            while True:
                try:
                    entry = next(it)
                except StopIteration:
                    break
                except OSError as exc:  # e.g. an I/O error part-way through a huge directory
                    stats.skip(directory, f"directory listing failed part-way: {exc.strerror or exc}")
                    break
                path = os.path.join(directory, entry.name)
                if path in excluded:
                    continue
                try:
                    is_dir = entry.is_dir(follow_symlinks=True)
                except OSError:
                    is_dir = False
                if is_dir:
                    ident = _dir_id(path)
                    if ident is not None and ident in ancestors:
                        stats.skip(path, "symbolic link loop (points to one of its own parent directories)")
                        continue
                    subdirs.append((path, ancestors | {ident} if ident else ancestors))
                    continue
                item = _file_entry(path, os.path.relpath(path, root), stats, entry)
                if item is not None:
                    yield item
        # Only subdirectory names are held (sorted, popped in order); files stream as listed.
        subdirs.sort(key=lambda d: d[0])
        stack.extend(reversed(subdirs))


def _dir_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _file_entry(path: str, relpath: str, stats: DiscoveryStats, entry: os.DirEntry | None = None) -> InputFile | None:
    try:
        st = entry.stat(follow_symlinks=True) if entry is not None else os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            stats.files += 1
            target = _readlink(path)
            return InputFile(path, relpath, -1, f"broken symbolic link (target {target!r} does not exist)")
        return None  # vanished between listing and stat: not an input any more
    except OSError as exc:
        stats.files += 1
        if exc.errno == errno.ELOOP:
            return InputFile(path, relpath, -1, "symbolic link loop (the link points to itself)")
        return InputFile(path, relpath, -1, f"cannot read file metadata: {exc.strerror or exc}")
    if not stat.S_ISREG(st.st_mode):
        # FIFOs, sockets, devices: opening them could block forever; not inputs.
        stats.skip(path, "not a regular file (device, FIFO or socket)")
        return None
    stats.files += 1
    if st.st_size == 0:
        return InputFile(path, relpath, 0, "empty file (0 bytes)")
    return InputFile(path, relpath, st.st_size)


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def is_within(path: str | Path, parent: str | Path) -> bool:
    p, q = os.path.abspath(path), os.path.abspath(parent)
    return p == q or p.startswith(q.rstrip(os.sep) + os.sep)
