"""Input discovery: one InputFile per file, documented skips, no loops, no double walks."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from fracture_batch.scoring import discover
from fracture_batch.scoring.discover import DiscoveryStats, iter_inputs, resolve_roots


def _touch(p: Path, data: bytes = b"x") -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def test_walks_recursively_with_relpaths(tmp_path):
    for rel in ["b/2.png", "a/1.png", "a/z/3.png", "c.png"]:
        _touch(tmp_path / rel)
    items = list(iter_inputs([tmp_path]))
    # A directory's files first, then its subdirectories depth-first in name order.
    assert [i.relpath for i in items] == ["c.png", "a/1.png", "a/z/3.png", "b/2.png"]
    assert all(os.path.isabs(i.path) and i.path.endswith(i.relpath) for i in items)
    # Deterministic: two walks agree exactly.
    assert items == list(iter_inputs([tmp_path]))


def test_nested_and_duplicate_roots_are_walked_once(tmp_path):
    _touch(tmp_path / "a" / "b" / "1.png")
    _touch(tmp_path / "a" / "2.png")
    roots = [tmp_path / "a", tmp_path / "a" / "b", str(tmp_path / "a") + "/"]
    assert resolve_roots(roots) == [str(tmp_path / "a")]
    paths = [i.path for i in iter_inputs(roots)]
    assert len(paths) == len(set(paths)) == 2


def test_a_file_root_is_an_input(tmp_path):
    f = _touch(tmp_path / "one.dcm")
    (item,) = iter_inputs([f])
    assert item.path == str(f) and item.relpath == "one.dcm" and item.error is None


def test_bad_entries_become_error_inputs(tmp_path):
    _touch(tmp_path / "empty.png", b"")
    os.symlink(tmp_path / "missing.png", tmp_path / "broken.png")
    os.symlink("self.png", tmp_path / "self.png")
    stats = DiscoveryStats()
    items = {i.relpath: i for i in iter_inputs([tmp_path], stats=stats)}
    assert items["empty.png"].error == "empty file (0 bytes)"
    assert "broken symbolic link" in items["broken.png"].error
    assert "loop" in items["self.png"].error
    assert stats.files == 3 and stats.skipped == []


def test_symlink_loop_to_ancestor_is_skipped_and_recorded(tmp_path):
    _touch(tmp_path / "d" / "1.png")
    os.symlink(tmp_path, tmp_path / "d" / "up")  # d/up -> root: infinite without the check
    stats = DiscoveryStats()
    items = list(iter_inputs([tmp_path], stats=stats))
    assert [i.relpath for i in items] == ["d/1.png"]
    assert len(stats.skipped) == 1 and "loop" in stats.skipped[0]["reason"]


def test_symlinked_sibling_directory_is_followed(tmp_path):
    _touch(tmp_path / "real" / "1.png")
    os.symlink(tmp_path / "real", tmp_path / "alias")
    rels = sorted(i.relpath for i in iter_inputs([tmp_path]))
    assert rels == ["alias/1.png", "real/1.png"]  # two paths, two rows: identity is the path


def test_unlistable_directory_is_skipped_and_recorded(tmp_path, monkeypatch):
    # Tests run as root, which ignores mode bits, so chmod 000 would not stop the walk:
    # simulate the kernel's answer by making os.scandir raise EACCES for that directory.
    _touch(tmp_path / "ok" / "1.png")
    _touch(tmp_path / "secret" / "2.png")
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path).endswith("secret"):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(discover.os, "scandir", scandir)
    stats = DiscoveryStats()
    assert [i.relpath for i in iter_inputs([tmp_path], stats=stats)] == ["ok/1.png"]
    assert stats.skipped[0]["path"].endswith("secret")
    assert "Permission denied" in stats.skipped[0]["reason"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions (covered by the simulated test)")
def test_unlistable_directory_real_permissions(tmp_path):
    _touch(tmp_path / "secret" / "2.png")
    (tmp_path / "secret").chmod(0)
    try:
        stats = DiscoveryStats()
        assert list(iter_inputs([tmp_path], stats=stats)) == []
        assert len(stats.skipped) == 1
    finally:
        (tmp_path / "secret").chmod(0o755)


def test_excluded_output_dir_and_fifo_are_not_inputs(tmp_path):
    _touch(tmp_path / "1.png")
    _touch(tmp_path / "out" / "part-x.parquet")
    os.mkfifo(tmp_path / "pipe")
    stats = DiscoveryStats()
    items = list(iter_inputs([tmp_path], exclude=[tmp_path / "out"], stats=stats))
    assert [i.relpath for i in items] == ["1.png"]
    assert [s["reason"] for s in stats.skipped] == ["not a regular file (device, FIFO or socket)"]


def test_discovery_is_lazy(tmp_path, monkeypatch):
    """The first file comes out before later directories are listed (memory flat in files)."""
    for d in range(3):
        _touch(tmp_path / f"d{d}" / "1.png")
    listed = []
    real = os.scandir
    monkeypatch.setattr(discover.os, "scandir", lambda p: (listed.append(os.fspath(p)), real(p))[1])
    it = iter_inputs([tmp_path])
    next(it)
    assert len(listed) == 2  # root and d0 only
