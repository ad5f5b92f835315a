"""`--engine ray`: the same rows as the local runner, resume, staging recovery, the install hint.

One local Ray instance for the module, sized for this 2-core machine: 2 CPUs, a pool of
one Predictor actor (1 CPU) so a decode/write task always finds the other CPU (a pool
holding every CPU starves Ray Data's tasks and the run never ends), 200 MB object store.
"""
from __future__ import annotations

import dataclasses
import os
import sys

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from fracture_batch.scoring import sink, studies
from fracture_batch.backends import BackendError
from fracture_batch.scoring.rows import COLUMNS, RowContext, error_row, ok_row, rows_to_table, schema
from fracture_batch.scoring.config import ScoreAborted, ScoreConfig
from fracture_batch.scoring.local import score
from fracture_batch.scoring.config import DecodeIsolation
from fracture_batch.scoring.ray import engine as ray_engine
from fracture_batch.scoring.ray import staging
from fracture_batch.scoring.ray.engine import (
    INSTALL_HINT,
    RayConfig,
    RayNotInstalledError,
    has_ray,
    import_ray,
    resolve_workers,
    run_ray,
)
from fracture_batch.model.spec import SPEC_METADATA_KEY, ModelSpec

from support import modelgen

needs_ray = pytest.mark.skipif(not has_ray()[0], reason="ray[data] not installed (pip install '.[ray]')")
RAY = RayConfig(workers=1, cpus_per_worker=1, decode_cpus=1)
# Per-row timings legitimately differ between runs; everything else must be equal.
TIMING_COLUMNS = ("decode_ms", "infer_ms")
# Both engines run the same onnxruntime CPU session on the same tensors, but in batches of
# different sizes (4 locally, 2 on Ray), and the batch size may change the order of float32
# accumulations inside the convolutions: allow 1e-5 on a probability (float32 has ~1e-7
# resolution near 0.5; a real preprocessing or model difference moves it by >1e-3).
PROB_TOL = 1e-5


@pytest.fixture(scope="module")
def ray_local():
    if not has_ray()[0]:
        pytest.skip("ray[data] not installed (pip install '.[ray]')")
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2,
             log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def _cfg(inputs, model, out, **kw) -> ScoreConfig:
    base = dict(decoder="python", batch_size=4, decode_workers=1, intra_op_threads=1,
                decode_isolation=DecodeIsolation.THREAD, part_rows=5, part_seconds=60.0)
    base.update(kw)
    return ScoreConfig(inputs=tuple(str(i) for i in inputs), model=str(model), out=str(out), **base)


def _rows(out) -> dict[str, dict]:
    t = ds.dataset(str(out), format="parquet").to_table()
    paths = t.column("path").to_pylist()
    assert len(paths) == len(set(paths)), "a path was written twice"
    return {r["path"]: r for r in t.to_pylist()}


@needs_ray
def test_ray_and_local_engines_write_the_same_rows(ray_local, models, tmp_path):
    _, onnx_path = models
    modelgen.write_images(tmp_path / "in" / "a", 7, formats=("png", "png16", "jpeg", "tiff"))
    latin1 = os.path.join(os.fsencode(tmp_path / "in" / "a"), b"caf\xe9.png")  # not UTF-8: an old archive
    os.rename(modelgen.write_images(tmp_path / "in" / "x", 1)[0], latin1)
    modelgen.write_bad_inputs(tmp_path / "in" / "bad")
    local = score(_cfg([tmp_path / "in"], onnx_path, tmp_path / "local"))
    remote = run_ray(_cfg([tmp_path / "in"], onnx_path, tmp_path / "ray", batch_size=2), RAY)

    a, b = _rows(tmp_path / "local"), _rows(tmp_path / "ray")
    assert set(a) == set(b) and len(b) == local.files_seen == remote.files_seen == remote.scored == 14
    for path, ra in a.items():
        rb = b[path]
        if ra["prob_fractured"] is not None:
            assert rb["prob_fractured"] == pytest.approx(ra["prob_fractured"], abs=PROB_TOL)
        same = [c for c in COLUMNS if c not in TIMING_COLUMNS and c != "prob_fractured"]
        assert {c: rb[c] for c in same} == {c: ra[c] for c in same}, path
    assert (remote.ok, remote.errors) == (local.ok, local.errors) == (9, 5)
    assert b[str(tmp_path / "in" / "bad" / "notes.txt")]["error"]  # error rows carry a message
    assert b[str(tmp_path / "in" / "a" / "caf\\xe9.png")]["status"] == "ok"  # rows.as_text of the name

    # Same schema (types, order) and the spec in every part's metadata, in the sink's names.
    parts = sink.committed_parts(tmp_path / "ray")
    assert parts and all(p.name.startswith("part-") for p in parts)
    assert not staging.stale_staging(tmp_path / "ray")
    local_schema = pq.read_schema(sink.committed_parts(tmp_path / "local")[0])
    for p in parts:
        s = pq.read_schema(p)
        assert s.equals(local_schema, check_metadata=False)
        assert ModelSpec.from_json(s.metadata[SPEC_METADATA_KEY.encode()]).input_size == modelgen.INPUT_SIZE
    # At most --part-rows (5) rows a part, and Ray bundles the actors' 2-row batches into
    # parts instead of writing one file per batch (7 batches; how Ray groups blocks into
    # write tasks varies, at worst 6 files: 3 tasks of >=5 rows, each split 5 + rest).
    sizes = [pq.ParquetFile(p).metadata.num_rows for p in parts]
    assert sum(sizes) == 14 and max(sizes) <= 5 and len(sizes) < 7, sizes
    done = sink.read_success(tmp_path / "ray")
    assert done["engine"] == "ray" and done["ok"] == 9 and done["errors"] == 5
    assert done["ray"]["workers_resolved"] == 1 and "ray" in done["versions"]
    # The study table is rebuilt from the committed rows by the shared session: the same
    # studies, counts and decisions (probabilities within the batch-size tolerance above).
    local_studies, ray_studies = (studies.read_studies(tmp_path / d).to_pylist() for d in ("local", "ray"))
    assert [r["study_key"] for r in ray_studies] == [r["study_key"] for r in local_studies] and ray_studies
    for ra, rb in zip(local_studies, ray_studies):
        for c, v in ra.items():
            if c.startswith("prob") and v is not None:
                assert rb[c] == pytest.approx(v, abs=PROB_TOL), (ra["study_key"], c)
            else:
                assert rb[c] == v, (ra["study_key"], c)


@needs_ray
def test_resume_across_engines_and_after_a_killed_ray_run(ray_local, models, tmp_path, monkeypatch):
    _, onnx_path = models
    modelgen.write_images(tmp_path / "in", 5)
    score(_cfg([tmp_path / "in"], onnx_path, tmp_path / "out"))  # the local runner starts the dataset
    modelgen.write_images(tmp_path / "in", 6, start=5)
    cfg = _cfg([tmp_path / "in"], onnx_path, tmp_path / "out", part_rows=2)

    real = ray_engine._pipeline

    def killed_after_staging(*args, **kw):
        real(*args, **kw)  # the workers staged every row ...
        staged = staging.staged_files(args[-1])
        assert len(staged) >= 3
        cut = staged[0].read_bytes()
        staged[0].write_bytes(cut[: len(cut) // 2])  # ... one file was cut short by the kill
        raise KeyboardInterrupt

    monkeypatch.setattr(ray_engine, "_pipeline", killed_after_staging)
    with pytest.raises(ScoreAborted, match="re-run the same command to resume"):
        run_ray(cfg, RAY)
    assert len(_rows(tmp_path / "out")) == 5 and sink.read_success(tmp_path / "out") is None
    monkeypatch.setattr(ray_engine, "_pipeline", real)

    s = run_ray(cfg, RAY)  # recovers the complete staged files, scores the rest
    assert s.already_done >= 5 + 4 and s.already_done + s.scored == s.dataset_rows == 11
    assert len(_rows(tmp_path / "out")) == 11 and not staging.stale_staging(tmp_path / "out")
    again = run_ray(cfg, RAY)  # nothing left: no pipeline, a fresh _SUCCESS
    assert (again.already_done, again.scored) == (11, 0) and sink.read_success(tmp_path / "out")["scored"] == 0
    with pytest.raises(sink.SinkError, match="--resume .* or --overwrite"):
        run_ray(dataclasses.replace(cfg, resume=False), RAY)


@needs_ray
def test_decoding_runs_as_cpu_tasks_not_inside_the_actors(ray_local, capsys):
    """Ray fuses task maps into actor maps with equal resources; the plan must keep them apart."""
    from fracture_batch.scoring.ray.engine import create_dataset
    from fracture_batch.scoring.ray.stages import work_table
    from fracture_batch.scoring.discover import InputFile

    blocks = [work_table([InputFile("/x/a.png", "a.png", 10)])]
    kw = dict(model="m.onnx", backend="auto", device="auto", options={}, decode_options={})
    for fuse, expected in ((False, "TaskPoolMapOperator[MapBatches(decode_batch)]"),
                           (True, "ActorPoolMapOperator[MapBatches(decode_batch)->MapBatches(PredictStage)]")):
        ds = create_dataset(ray_local, blocks, batch_size=4, cfg=dataclasses.replace(RAY, fuse_decode=fuse),
                            workers=1, spec=modelgen.tiny_spec(), predictor_kwargs=kw)
        ds.explain()
        optimized = capsys.readouterr().out.split("Physical Plan (Optimized)")[-1]
        assert expected in optimized, optimized


@needs_ray
def test_model_unloadable_on_workers_is_fatal_before_inputs(ray_local, tmp_path):
    modelgen.write_images(tmp_path / "in", 2)
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(BackendError, match="cannot be loaded on the Ray workers"):
        run_ray(_cfg([tmp_path / "in"], bad, tmp_path / "out"), RAY)
    assert not sink.committed_parts(tmp_path / "out") and sink.read_success(tmp_path / "out") is None


def test_split_stages_equal_the_predictors_own_call(models, tmp_path):
    """decode_batch (task) + PredictStage (actor) == Predictor.__call__ on the same paths, no Ray."""
    from fracture_batch.scoring.discover import iter_inputs
    from fracture_batch.scoring.predictor import Predictor
    from fracture_batch.scoring.ray.stages import PredictStage, decode_batch, work_table

    _, onnx_path = models
    modelgen.write_images(tmp_path / "in", 3, formats=("png", "jpeg"))
    modelgen.write_bad_inputs(tmp_path / "in" / "bad")
    files = list(iter_inputs([tmp_path / "in"]))
    kw = dict(model=str(onnx_path), backend="onnxruntime", device="cpu", options={"intra_op_threads": 1},
              decode_options={})
    work = {k: v.to_numpy(zero_copy_only=False) for k, v in zip(work_table(files).column_names,
                                                                  work_table(files).columns)}
    staged = PredictStage(**kw)(decode_batch(work, spec_json=modelgen.tiny_spec().to_json(), decode_options={}))
    own = Predictor(onnx_path, backend="onnxruntime", device="cpu")(
        {"path": [f.path for f in files], "relpath": [f.relpath for f in files]})
    assert staged.schema.names == list(COLUMNS) and staged.num_rows == len(files) == 9
    # Same batch, same session: identical values. Except one thing the split does better:
    # it carries discovery's message for files known bad before decoding (a broken or
    # looping link), as the local runner does; Predictor.__call__ only gets the paths and
    # re-stats them, so it words those errors its own way (both are error rows).
    known_bad = [f.error is not None for f in files]
    for c in COLUMNS:
        if c in TIMING_COLUMNS:
            continue
        got, want = staged.column(c).to_pylist(), list(own[c])
        if c == "error":
            assert [g for g, k in zip(got, known_bad) if not k] == [w for w, k in zip(want, known_bad) if not k]
            assert all(g == f.error and w for g, w, f, k in zip(got, want, files, known_bad) if k)
        else:
            assert got == want, c


def _staged_table(paths, spec=modelgen.tiny_spec()):
    ctx = RowContext(spec, "ab" * 32)
    rows = [ok_row(p, os.path.basename(p), 0.25, "not_fractured", ctx) for p in paths[:-1]]
    rows.append(error_row(paths[-1], os.path.basename(paths[-1]), "corrupt", ctx))
    return rows_to_table(rows, schema(spec))


def test_staging_left_by_a_killed_run_is_recovered_without_duplicates(tmp_path):
    out = sink.prepare_output_dir(tmp_path / "out")
    sink.PartWriter(out, "earlier").write(_staged_table(["/d/0.png", "/d/1.png"]))  # already committed
    stage = staging.staging_dir(out, "killed")
    stage.mkdir()
    pq.write_table(_staged_table(["/d/1.png", "/d/2.png", "/d/3.png"]), stage / "a_000000-0.parquet")
    whole = (stage / "a_000000-0.parquet").read_bytes()
    (stage / "b_000001-0.parquet").write_bytes(whole[: len(whole) // 2])  # cut short by the kill

    assert staging.recover(out) == 2  # /d/2 and /d/3; /d/1 was committed already
    assert not staging.stale_staging(out)
    rows = _rows(out)
    assert sorted(rows) == ["/d/0.png", "/d/1.png", "/d/2.png", "/d/3.png"]
    assert rows["/d/3.png"]["status"] == "error"
    assert all(pq.read_schema(p).metadata[SPEC_METADATA_KEY.encode()] for p in sink.committed_parts(out))


def test_staged_rows_missing_commit_nothing_and_are_recovered_later(tmp_path):
    """Write tasks on nodes that do not share --out: fewer rows staged than inputs sent."""
    out = sink.prepare_output_dir(tmp_path / "out")
    stage = staging.staging_dir(out, "run1")
    stage.mkdir()
    pq.write_table(_staged_table(["/d/1.png", "/d/2.png"]), stage / "a.parquet")
    with pytest.raises(sink.SinkError, match="2 complete row.* for 3 input.*same path"):
        staging.commit_staged(out, stage, "run1", expected_rows=3)
    assert not sink.committed_parts(out) and staging.stale_staging(out) == [stage]
    assert staging.recover(out) == 2 and len(_rows(out)) == 2


def test_overwrite_discards_stale_staging(tmp_path):
    out = sink.prepare_output_dir(tmp_path / "out")
    stage = staging.staging_dir(out, "killed")
    stage.mkdir()
    pq.write_table(_staged_table(["/d/1.png", "/d/2.png"]), stage / "a.parquet")
    assert staging.recover(out, discard=True) == 0
    assert not staging.stale_staging(out) and not sink.committed_parts(out)


def test_without_ray_one_line_install_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    assert not has_ray()[0]
    with pytest.raises(RayNotInstalledError) as err:
        import_ray()
    assert str(err.value) == INSTALL_HINT and "\n" not in INSTALL_HINT
    assert "pip install 'fracture-batch[ray]'" in INSTALL_HINT
    with pytest.raises(RayNotInstalledError):  # before any output is created
        run_ray(_cfg([tmp_path], tmp_path / "m.onnx", tmp_path / "out"), RAY)
    assert not (tmp_path / "out").exists()


def test_worker_count_leaves_a_cpu_for_decoding():
    assert resolve_workers(RayConfig(), {"CPU": 2}) == 1
    assert resolve_workers(RayConfig(), {"CPU": 16}) == 12  # 3/4 of the cores infer
    assert resolve_workers(RayConfig(cpus_per_worker=4), {"CPU": 64}) == 12
    assert resolve_workers(RayConfig(gpus_per_worker=1), {"CPU": 32, "GPU": 4}) == 4
    assert resolve_workers(RayConfig(gpus_per_worker=0.5), {"CPU": 32, "GPU": 4}) == 8
    with pytest.raises(BackendError, match="no CPU for decoding"):
        resolve_workers(RayConfig(workers=2), {"CPU": 2})
    with pytest.raises(BackendError, match="need more than the cluster's 4 GPU"):
        resolve_workers(RayConfig(workers=5, gpus_per_worker=1), {"CPU": 32, "GPU": 4})
    with pytest.raises(BackendError, match="has 0 GPU"):
        resolve_workers(RayConfig(gpus_per_worker=1), {"CPU": 8})


@needs_ray
def test_cli_engine_ray_scores_and_prints_the_summary(ray_local, models, tmp_path):
    from click.testing import CliRunner

    from fracture_batch.cli import main

    _, onnx_path = models
    modelgen.write_images(tmp_path / "in", 3)
    res = CliRunner().invoke(main, ["score", str(tmp_path / "in"), "--model", str(onnx_path), "--out",
                                    str(tmp_path / "out"), "--engine", "ray", "--workers", "1",
                                    "--gpus-per-worker", "0", "--batch-size", "2", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "python (Ray tasks)" in res.output and len(_rows(tmp_path / "out")) == 3
    assert sink.read_success(tmp_path / "out")["engine"] == "ray"


def test_cli_engine_ray_without_ray_says_what_to_install_in_one_line(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from fracture_batch.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)
    (tmp_path / "in").mkdir()
    res = CliRunner().invoke(main, ["score", str(tmp_path / "in"), "--model", str(tmp_path / "m.onnx"),
                                    "--out", str(tmp_path / "out"), "--engine", "ray"])
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [f"Error: {INSTALL_HINT}"]
