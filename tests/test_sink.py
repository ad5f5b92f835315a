"""Parquet sink: atomic parts, resume index, lock, probes, disk full."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fracture_batch.scoring import resume, sink
from fracture_batch.scoring.rows import REQUIRED_COLUMNS, RowContext, error_row, ok_row, rows_to_table, schema
from fracture_batch.model.spec import SPEC_METADATA_KEY, ModelSpec

SPEC = ModelSpec(arch="resnet18", input_size=64)
CTX = RowContext(SPEC, "ab" * 32)


def _table(paths: list[str]) -> pa.Table:
    rows = [ok_row(p, os.path.basename(p), 0.7, "fractured", CTX) for p in paths[:-1]]
    rows.append(error_row(paths[-1], "bad", "corrupt", CTX))
    return rows_to_table(rows, schema(SPEC))


def test_rows_schema_has_required_columns_and_spec():
    t = _table(["/a/1.png", "/a/2.png"])
    assert t.column_names[: len(REQUIRED_COLUMNS)] == list(REQUIRED_COLUMNS)
    assert ModelSpec.from_json(t.schema.metadata[SPEC_METADATA_KEY.encode()]) == SPEC
    assert t.column("status").to_pylist() == ["ok", "error"]
    assert t.column("prob_fractured").to_pylist()[1] is None
    assert t.column("error").to_pylist() == [None, "corrupt"]


def test_part_is_committed_atomically_and_readable(tmp_path):
    w = sink.PartWriter(tmp_path, "run1")
    p = w.write(_table(["/a/1.png", "/a/2.png"]))
    assert p.name == "part-run1-00000.parquet" and sink.committed_parts(tmp_path) == [p]
    assert not list(tmp_path.glob(sink.TMP_PREFIX + "*"))
    t = pq.read_table(p)
    assert t.num_rows == 2 and SPEC_METADATA_KEY.encode() in t.schema.metadata


def test_disk_full_keeps_committed_parts_and_says_so(tmp_path, monkeypatch):
    w = sink.PartWriter(tmp_path, "run1")
    first = w.write(_table(["/a/1.png", "/a/2.png"]))

    def full(table, tmp):
        Path(tmp).write_bytes(b"half a part")  # a partial temp file is left behind by the failure
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(w, "_write_file", full)
    with pytest.raises(sink.DiskFullError, match="disk full while writing part .*committed parts are intact"):
        w.write(_table(["/a/3.png", "/a/4.png"]))
    assert sink.committed_parts(tmp_path) == [first]
    assert not list(tmp_path.glob(sink.TMP_PREFIX + "*"))  # the half-written temp is removed
    assert pq.read_table(first).num_rows == 2


def test_resume_index_streams_paths_from_parts(tmp_path):
    w = sink.PartWriter(tmp_path, "r")
    paths = [f"/data/{i}.png" for i in range(50)]
    for i in range(0, 50, 10):
        w.write(_table(paths[i:i + 10]))
    (tmp_path / (sink.TMP_PREFIX + "r-99999.parquet")).write_bytes(b"garbage")  # never read
    index = resume.ResumeIndex.from_parts(sink.committed_parts(tmp_path), batch_rows=7)
    assert len(index) == 50
    assert all(p in index for p in paths)
    assert "/data/50.png" not in index and "/data/1.pn" not in index
    assert "/x" not in resume.ResumeIndex()


def test_stale_temp_parts_are_removed(tmp_path):
    (tmp_path / (sink.TMP_PREFIX + "old-00000.parquet")).write_bytes(b"x")
    assert sink.remove_stale_temp(tmp_path) == 1
    assert list(tmp_path.iterdir()) == []


def test_overwrite_clears_only_our_files(tmp_path):
    sink.PartWriter(tmp_path, "r").write(_table(["/a/1.png"]))
    sink.write_success(tmp_path, {"ok": 1})
    (tmp_path / "notes.txt").write_text("user file")
    assert sink.clear_output(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_lock_is_exclusive_and_released(tmp_path):
    held = sink.acquire_lock(tmp_path)
    with pytest.raises(sink.OutputLockedError, match="another fracture-batch run is writing"):
        sink.acquire_lock(tmp_path)
    held.release()
    sink.acquire_lock(tmp_path).release()


def test_prepare_output_dir_creates_and_probes(tmp_path):
    out = sink.prepare_output_dir(tmp_path / "out")
    assert out.is_dir() and list(out.iterdir()) == []  # the probe cleans up after itself
    with pytest.raises(sink.SinkError, match="parent directory .* does not exist"):
        sink.prepare_output_dir(tmp_path / "missing" / "out")
    (tmp_path / "file").write_text("x")
    with pytest.raises(sink.SinkError, match="not a directory"):
        sink.prepare_output_dir(tmp_path / "file")


def test_prepare_output_dir_read_only_simulated(tmp_path, monkeypatch):
    # Root ignores mode bits, so a chmod 555 directory would still be writable here:
    # the kernel's answer for a read-only mount (EROFS) is injected at the probe.
    real_open = os.open

    def ro_open(path, flags, *a, **k):
        if ".write-probe-" in os.fspath(path):
            raise OSError(errno.EROFS, "Read-only file system", os.fspath(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(sink.os, "open", ro_open)
    with pytest.raises(sink.SinkError, match="not writable: Read-only file system"):
        sink.prepare_output_dir(tmp_path)


def test_prepare_output_dir_on_a_real_read_only_filesystem():
    # /sys is mounted read-only for everyone, root included, on this machine and in CI.
    if os.access("/sys", os.W_OK) and not os.path.ismount("/sys"):
        pytest.skip("/sys is not a read-only mount here")
    with pytest.raises(sink.SinkError):
        sink.prepare_output_dir("/sys/fracture-batch-out")


def test_success_roundtrip(tmp_path):
    sink.write_success(tmp_path, {"ok": 3, "backend": "onnxruntime"})
    assert sink.read_success(tmp_path) == {"ok": 3, "backend": "onnxruntime"}
    assert sink.read_success(tmp_path / "nope") is None
