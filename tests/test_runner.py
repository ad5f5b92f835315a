"""The overlapped runner end to end on CPU: rows, resume, overwrite, refusals, disk full, timeouts."""
from __future__ import annotations

import dataclasses
import errno
import os
import threading

import numpy as np
import pyarrow.dataset as ds
import pytest

from fracture_batch.scoring import local as runner
from fracture_batch.scoring import resume, session, sink
from fracture_batch.backends import BackendError
from fracture_batch.decode.workers import DecodeOptions, ProcessDecoder
from fracture_batch.scoring.discover import InputFile
from fracture_batch.scoring.rows import REQUIRED_COLUMNS
from fracture_batch.scoring.local import ScoreConfig, score
from fracture_batch.scoring.config import DecodeIsolation
from fracture_batch.scoring.threads import resolve_threads
from fracture_batch.model.spec import SPEC_METADATA_KEY, ModelSpec

from support import modelgen


def _cfg(inputs, model, out, **kw) -> ScoreConfig:
    base = dict(decoder="python", batch_size=4, decode_workers=1, intra_op_threads=1,
                decode_isolation=DecodeIsolation.THREAD, part_rows=5, part_seconds=60.0)
    base.update(kw)
    return ScoreConfig(inputs=tuple(str(i) for i in inputs), model=str(model), out=str(out), **base)


def _snapshot(root) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


def _read(out):
    return ds.dataset(str(out), format="parquet").to_table()


def test_one_row_per_file_with_required_columns_and_spec(models, tmp_path):
    _, onnx_path = models
    good = modelgen.write_images(tmp_path / "in" / "a", 12, formats=("png", "png16", "jpeg", "bmp", "tiff"))
    bad = modelgen.write_bad_inputs(tmp_path / "in" / "bad")
    before = _snapshot(tmp_path) | _snapshot(onnx_path.parent)
    s = score(_cfg([tmp_path / "in"], onnx_path, tmp_path / "out"))
    after = _snapshot(tmp_path) | _snapshot(onnx_path.parent)
    written = {p for p in set(after) - set(before) if not p.startswith(str(tmp_path / "out"))}
    assert written == set() and all(after[p] == before[p] for p in before)  # nothing outside --out
    t = _read(tmp_path / "out")
    n_files = len(good) + len(bad) + 1  # write_bad_inputs also writes one good image
    assert t.num_rows == n_files == s.files_seen == s.scored
    assert set(REQUIRED_COLUMNS) <= set(t.column_names)
    assert len(set(t.column("path").to_pylist())) == n_files
    assert ModelSpec.from_json(t.schema.metadata[SPEC_METADATA_KEY.encode()]).input_size == modelgen.INPUT_SIZE
    by_rel = {r["relpath"]: r for r in t.to_pylist()}
    for name in ("empty.png", "truncated.png", "notes.txt", "broken.png", "self.png"):
        row = by_rel[f"bad/{name}"]
        assert row["status"] == "error" and row["error"] and row["prob_fractured"] is None
    oks = [r for r in t.to_pylist() if r["status"] == "ok"]
    assert len(oks) == s.ok == len(good) + 1
    assert {r["format"] for r in oks} == {"png", "jpeg", "bmp", "tiff"}
    assert {r["bit_depth"] for r in oks if r["relpath"].startswith("a/")} == {8, 16}
    assert all(0.0 <= r["prob_fractured"] <= 1.0 and r["pred_label"] in ("fractured", "not_fractured") for r in oks)
    done = sink.read_success(tmp_path / "out")
    assert done["ok"] == s.ok and done["errors"] == s.errors and done["backend"] == "onnxruntime"
    assert done["spec"]["input_size"] == modelgen.INPUT_SIZE and "onnxruntime" in done["versions"]


def test_resume_scores_only_new_files_and_never_twice(models, tmp_path):
    _, onnx_path = models
    modelgen.write_images(tmp_path / "in", 7)
    cfg = _cfg([tmp_path / "in"], onnx_path, tmp_path / "out")
    assert score(cfg).scored == 7
    modelgen.write_images(tmp_path / "in", 4, start=7)
    s2 = score(cfg)
    assert (s2.already_done, s2.scored, s2.dataset_rows) == (7, 4, 11)
    paths = _read(tmp_path / "out").column("path").to_pylist()
    assert len(paths) == len(set(paths)) == 11
    s3 = score(cfg)
    assert s3.scored == 0 and s3.already_done == 11


def test_no_resume_refuses_and_overwrite_starts_again(models, tmp_path):
    _, onnx_path = models
    modelgen.write_images(tmp_path / "in", 3)
    cfg = _cfg([tmp_path / "in"], onnx_path, tmp_path / "out")
    score(cfg)
    with pytest.raises(sink.SinkError, match="--resume .* or --overwrite"):
        score(dataclasses.replace(cfg, resume=False))
    s = score(dataclasses.replace(cfg, overwrite=True))
    assert s.scored == 3 and _read(tmp_path / "out").num_rows == 3


def test_other_models_results_are_not_mixed(models, tmp_path):
    ckpt, onnx_path = models
    modelgen.write_images(tmp_path / "in", 2)
    score(_cfg([tmp_path / "in"], onnx_path, tmp_path / "out"))
    with pytest.raises(sink.SinkError, match="holds results of another model"):
        score(_cfg([tmp_path / "in"], ckpt, tmp_path / "out"))


def test_fatal_problems_stop_before_any_input_is_read(models, tmp_path, monkeypatch):
    _, onnx_path = models
    modelgen.write_images(tmp_path / "in", 2)

    def no_reading(*a, **k):
        raise AssertionError("an input was read before the fatal check")

    monkeypatch.setattr(session, "iter_inputs", no_reading)
    with pytest.raises(sink.SinkError, match="parent directory .* does not exist"):
        score(_cfg([tmp_path / "in"], onnx_path, tmp_path / "missing" / "out"))
    with pytest.raises(BackendError, match="model file not found"):
        score(_cfg([tmp_path / "in"], tmp_path / "nope.onnx", tmp_path / "out"))
    with pytest.raises(sink.SinkError, match="input path does not exist"):
        score(_cfg([tmp_path / "nothere"], onnx_path, tmp_path / "out"))
    held = sink.acquire_lock(tmp_path / "out")
    try:
        with pytest.raises(sink.OutputLockedError):
            score(_cfg([tmp_path / "in"], onnx_path, tmp_path / "out"))
    finally:
        held.release()


def test_disk_full_stops_keeps_parts_and_resume_completes(models, tmp_path, monkeypatch):
    _, onnx_path = models
    modelgen.write_images(tmp_path / "in", 23)
    cfg = _cfg([tmp_path / "in"], onnx_path, tmp_path / "out")
    real = sink.PartWriter._write_file
    calls = {"n": 0}

    def third_part_fails(self, table, tmp):
        calls["n"] += 1
        if calls["n"] == 3:
            tmp.write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, table, tmp)

    monkeypatch.setattr(sink.PartWriter, "_write_file", third_part_fails)
    with pytest.raises(sink.DiskFullError, match="Free space and re-run the same command to resume"):
        score(cfg)
    assert len(sink.committed_parts(tmp_path / "out")) == 2
    assert _read(tmp_path / "out").num_rows == 10  # two parts of part_rows=5, intact
    assert sink.read_success(tmp_path / "out") is None  # not finished
    monkeypatch.setattr(sink.PartWriter, "_write_file", real)
    s = score(cfg)
    paths = _read(tmp_path / "out").column("path").to_pylist()
    assert s.already_done == 10 and len(paths) == len(set(paths)) == 23


def test_output_inside_an_input_root_is_not_scored(models, tmp_path):
    _, onnx_path = models
    modelgen.write_images(tmp_path / "in", 3)
    cfg = _cfg([tmp_path / "in"], onnx_path, tmp_path / "in" / "results")
    score(cfg)
    s = score(cfg)  # a second run must not pick up the first run's parts as inputs
    assert (s.files_seen, s.already_done, s.scored) == (3, 3, 0)


def test_process_isolated_decoding_scores_the_same(models, tmp_path):
    _, onnx_path = models
    modelgen.write_images(tmp_path / "in", 6, formats=("png", "jpeg"))
    a = score(_cfg([tmp_path / "in"], onnx_path, tmp_path / "o1"))
    b = score(_cfg([tmp_path / "in"], onnx_path, tmp_path / "o2", decode_isolation=DecodeIsolation.PROCESS))
    assert a.ok == b.ok == 6 and b.decoder == "python (process-isolated)"
    pa = {r["path"]: r["prob_fractured"] for r in _read(tmp_path / "o1").to_pylist()}
    pb = {r["path"]: r["prob_fractured"] for r in _read(tmp_path / "o2").to_pylist()}
    assert pa == pb  # same decoder code, same backend: bit-identical


def test_decode_timeout_kills_the_worker_and_goes_on(tmp_path):
    # A FIFO with no writer blocks open() forever: the pathological file the timeout exists for.
    fifo = tmp_path / "stuck.png"
    os.mkfifo(fifo)
    good = modelgen.write_images(tmp_path, 1)[0]
    dec = ProcessDecoder(modelgen.tiny_spec(), DecodeOptions(), timeout_s=1.0)
    ok_file = InputFile(str(good), good.name, 1)
    # Several files are in flight per child: the ones sent after the stuck file go to its
    # replacement, in order, and a file already known bad never reaches a child.
    files = [ok_file, InputFile(str(fifo), "stuck.png", 1), ok_file, InputFile("gone", "gone", 0, "missing"), ok_file]
    try:
        results = dec.decode(files)
    finally:
        dec.close()
    assert [r.file for r in results] == files
    stuck = results[1]
    assert stuck.tensor is None and "--decode-timeout=1s" in stuck.error
    assert results[3].error == "missing"
    for ok in (results[0], results[2], results[4]):
        assert ok.error is None and ok.tensor.shape == (3, modelgen.INPUT_SIZE, modelgen.INPUT_SIZE)
    assert dec.restarts == 1


def test_a_child_started_early_is_adopted_and_an_unused_one_is_killed(tmp_path):
    """The runner starts decode children while the model loads (spawn_decode_children); a
    ProcessDecoder adopts one for its first start, and closes it if it never decoded."""
    from fracture_batch.decode.workers import PythonDecoder, spawn_decode_child

    good = modelgen.write_images(tmp_path, 1)[0]
    spec, f = modelgen.tiny_spec(), InputFile(str(good), good.name, good.stat().st_size)
    early = spawn_decode_child()
    dec = ProcessDecoder(spec, DecodeOptions(), timeout_s=30.0, child=early)
    try:
        (r,) = dec.decode([f])
        assert dec._proc is early.proc  # adopted, no second interpreter
        # the child ships the resized gray; the parent normalises: bit-identical to in-thread
        (ref,) = PythonDecoder(spec, DecodeOptions()).decode([f])
        assert r.tensor.dtype == np.float32 and np.array_equal(r.tensor, ref.tensor)
    finally:
        dec.close()
    assert early.proc.poll() is not None
    unused = spawn_decode_child()
    ProcessDecoder(spec, DecodeOptions(), timeout_s=30.0, child=unused).close()
    assert unused.proc.poll() is not None


def test_interrupt_commits_complete_rows(models, tmp_path, monkeypatch):
    """Ctrl-C: the writer commits what it holds; the run raises ScoreAborted; resume finishes."""
    _, onnx_path = models
    modelgen.write_images(tmp_path / "in", 12)
    cfg = _cfg([tmp_path / "in"], onnx_path, tmp_path / "out", part_rows=1000)
    fired = threading.Event()

    def progress(done, total):
        if done == 0 and not fired.is_set() and threading.current_thread() is threading.main_thread():
            fired.set()
            raise KeyboardInterrupt

    with pytest.raises(runner.ScoreAborted, match="interrupted"):
        score(cfg, on_progress=progress)
    s = score(cfg)
    paths = _read(tmp_path / "out").column("path").to_pylist()
    assert len(paths) == len(set(paths)) == 12 and s.already_done + s.scored == 12


def test_thread_defaults_share_the_cores():
    for cores in (1, 2, 4, 16, 64):
        t = resolve_threads(cores=cores)
        assert t.intra_op == cores and t.decode_workers == max(2, cores // 2)
    assert resolve_threads(decode_workers=3, cores=8) == runner.resolve_threads(3, 8, cores=8)
    assert resolve_threads(decode_workers=1, intra_op=1, cores=8) == runner.resolve_threads(1, 1)


class FakeDecoder:
    """Decodes nothing: every file becomes a tiny tensor, so a test measures the stages alone."""

    batch_size = 1

    def decode(self, files):
        from fracture_batch.decode.workers import DecodeResult

        return [DecodeResult(f, np.zeros((3, 8, 8), np.float32)) for f in files]

    def close(self):
        pass


def test_stage_memory_is_flat_in_the_number_of_files():
    """Peak traced allocations for 10x more files stay the same: bounded queues, no per-file state.

    Fake decoder/predict/write (no I/O) so the pipeline itself is what is measured;
    tests/tools/memory_flatness.py measures the real CLI (see the report for numbers).
    """
    import tracemalloc

    from fracture_batch.scoring.pipeline import Stages

    def peak(n: int) -> int:
        files = (InputFile(f"/data/{i:08d}.png", f"{i:08d}.png", 100) for i in range(n))
        predict = lambda rs: [{"path": r.file.path, "status": "ok"} for r in rs]  # noqa: E731
        stages = Stages(files=files, already_done=resume.ResumeIndex(), decoder_factory=FakeDecoder, workers=1,
                        batch_size=16, predict=predict, write=lambda rows: None, part_rows=500, part_seconds=60)
        tracemalloc.start()
        stages.run()
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert stages.rows_committed == n
        return top

    small, large = peak(2_000), peak(20_000)
    # Per-file retention of even 100 bytes would add 1.8 MB at 20k files; allow 25% + 256 KiB of
    # noise (thread start-up, queue internals) over the small run's peak.
    assert large <= small * 1.25 + 256 * 1024, (small, large)


def test_inference_stage_starts_the_next_batch_before_collecting_this_one():
    """With ``submit`` (Predictor.submit_results; OpenVINO runs batches in the background)
    batch N + 1 is started before batch N is collected, and the rows still arrive in order."""
    from fracture_batch.scoring.pipeline import Stages

    events, written = [], []

    def submit(batch):
        n = len([e for e in events if e[0] == "submit"])
        events.append(("submit", n))

        def finish():
            events.append(("collect", n))
            return [{"path": r.file.path, "status": "ok"} for r in batch]

        return finish

    files = [InputFile(f"/data/{i:04d}.png", f"{i:04d}.png", 100) for i in range(64)]
    stages = Stages(files=iter(files), already_done=resume.ResumeIndex(), decoder_factory=FakeDecoder, workers=1,
                    batch_size=16, predict=None, submit=submit, write=written.extend, part_rows=1000,
                    part_seconds=60)
    stages.run()
    assert [r["path"] for r in written] == [f.path for f in files]
    collects = [n for kind, n in events if kind == "collect"]
    assert collects == sorted(collects) and len(collects) == len(events) // 2
    # Batches were collected only after the next one had been submitted. (Not asserted for
    # every batch: a 50 ms stall of the fake decoder on a loaded machine lets the stage hand
    # a finished batch over before the next is full, which is the intended behaviour.)
    assert any(events.index(("submit", n + 1)) < events.index(("collect", n)) for n in range(len(collects) - 1))


def test_backend_crash_stops_the_run_without_marking_files_done(models, tmp_path, monkeypatch):
    """A failing backend is not the inputs' fault: no error rows for them, resume retries them."""
    from fracture_batch.backends.onnxruntime_backend import OnnxRuntimeBackend

    _, onnx_path = models
    modelgen.write_images(tmp_path / "in", 9)
    cfg = _cfg([tmp_path / "in"], onnx_path, tmp_path / "out", batch_size=2, part_rows=2)
    real, calls = OnnxRuntimeBackend.predict, {"n": 0}

    def crash_on_third(self, x):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(self, x)

    monkeypatch.setattr(OnnxRuntimeBackend, "predict", crash_on_third)
    with pytest.raises(runner.ScoreAborted, match="illegal memory access.*re-run the same command"):
        score(cfg)
    first = _read(tmp_path / "out").to_pylist()
    assert first and all(r["status"] == "ok" for r in first)
    monkeypatch.setattr(OnnxRuntimeBackend, "predict", real)
    score(cfg)
    rows = _read(tmp_path / "out").to_pylist()
    assert len(rows) == len({r["path"] for r in rows}) == 9 and all(r["status"] == "ok" for r in rows)


def test_dicom_rows_carry_header_columns_and_hashed_uids_only(models, tmp_path):
    import numpy as np
    import pydicom

    from support import imagegen

    _, onnx_path = models
    (tmp_path / "in").mkdir()
    arr = (np.arange(40 * 56, dtype=np.uint16).reshape(40, 56) * 4095 // (40 * 56)).astype(np.uint16)
    dcm = imagegen.make_dicom(tmp_path / "in" / "IMG0001", arr, bits_stored=12)  # no suffix: found by content
    imagegen.make_non_image(tmp_path / "in" / "report.dcm", "sr")
    score(_cfg([tmp_path / "in"], onnx_path, tmp_path / "out"))
    rows = {r["relpath"]: r for r in _read(tmp_path / "out").to_pylist()}
    img, sr = rows["IMG0001"], rows["report.dcm"]
    assert img["status"] == "ok" and img["format"] == "dicom" and img["bit_depth"] == 12
    assert (img["dicom_modality"], img["dicom_body_part_examined"], img["dicom_view_position"]) == ("DX", "HAND", "PA")
    raw_uid = str(pydicom.dcmread(dcm).StudyInstanceUID)
    assert img["dicom_study_instance_uid"] and img["dicom_study_instance_uid"] != raw_uid  # hashed by default
    assert sr["status"] == "error" and "not an image" in sr["error"].lower()
    text = str(_read(tmp_path / "out").to_pylist())
    assert imagegen.PATIENT_NAME not in text and imagegen.PATIENT_ID not in text
    keep = score(_cfg([tmp_path / "in"], onnx_path, tmp_path / "keep", identifiers="keep"))
    assert keep.ok == 1
    assert {r["relpath"]: r for r in _read(tmp_path / "keep").to_pylist()}["IMG0001"]["dicom_study_instance_uid"] == raw_uid


def test_non_utf8_file_names_get_a_row_and_resume(models, tmp_path):
    _, onnx_path = models
    good = modelgen.write_images(tmp_path / "in", 1)[0]
    latin1 = os.path.join(os.fsencode(tmp_path / "in"), b"caf\xe9.png")  # not valid UTF-8
    with open(latin1, "wb") as f:
        f.write(good.read_bytes())
    cfg = _cfg([tmp_path / "in"], onnx_path, tmp_path / "out")
    s = score(cfg)
    assert (s.scored, s.ok) == (2, 2)
    assert r"caf\xe9.png" in {r["relpath"] for r in _read(tmp_path / "out").to_pylist()}
    assert score(cfg).already_done == 2  # the escaped name is matched on resume
