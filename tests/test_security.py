"""Hostile and huge inputs, end to end through `fracture-batch score` (issue 7, points 1-5).

Each test plays the adversary against the real command: crafted model files, decompression
bombs and absurd headers, a pathological file that never finishes decoding, PHI and
path-like DICOM header values, a disk that fills up, an output location that cannot be
written. Inputs are crafted in code (tests/support/hostile_inputs.py); models are the tiny
resnet18 of tests/support/modelgen.py. Runs that measure memory or inject a slow decoder run in a
subprocess (so the measurement and the injection cover the decode child processes too).
README.md "Security and privacy" is the user-facing account of what these tests prove.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from importlib import metadata
from pathlib import Path

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from support import hostile_inputs as hi
from support import modelgen
from fracture_batch.scoring import local as runner
from fracture_batch.scoring import session, sink, studies
from fracture_batch.cli import main
from fracture_batch.decode.select import has_dali
from fracture_batch.model.checkpoint import CheckpointError, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
NEEDS_DALI = pytest.mark.skipif(not has_dali()[0], reason="NVIDIA DALI is not installed (pip install nvidia-dali-cuda130)")
PHI = (hi.PATIENT_NAME, hi.PATIENT_ID, hi.PATIENT_BIRTH, "Hostile")
RAW_UIDS = (hi.STUDY_UID, hi.SERIES_UID, hi.SOP_UID)


def _args(inputs, model, out, *extra, decoder="python") -> list[str]:
    return ["score", *map(str, inputs if isinstance(inputs, (list, tuple)) else [inputs]), "--model", str(model),
            "--out", str(out), "--decoder", decoder, "--decode-workers", "1", "--intra-op-threads", "1",
            "--batch-size", "4", "--no-progress", *extra]


def _score(*args, **kw):
    return CliRunner().invoke(main, _args(*args, **kw), catch_exceptions=False)


def _rows(out: Path) -> list[dict]:
    return pads.dataset(str(out), format="parquet").to_table().to_pylist() if sink.committed_parts(out) else []


# A subprocess that runs the CLI and reports its own peak RSS and its children's (the
# decode processes, reaped before exit). Its own peak is VmHWM, not ru_maxrss: Linux
# carries ru_maxrss across fork+exec, so it would report pytest's size. The children's
# figure is ru_maxrss, an upper bound (it includes the scorer's RSS at spawn time).
# RLIMIT_AS caps the damage if a bomb ever gets through (the run then fails its
# assertions instead of taking the shared machine's memory).
_CHILD = textwrap.dedent("""
    import json, resource, sys
    cap = int(sys.argv[1]) << 30
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    from fracture_batch.cli import main
    try:
        main(sys.argv[2:], standalone_mode=False)
        code = 0
    except SystemExit as exc:
        code = exc.code
    with open("/proc/self/status") as f:
        hwm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print("RUSAGE " + json.dumps({"self_mb": hwm_kb / 1024, "children_mb": children_mb, "code": code}))
""")


def _score_subprocess(args: list[str], *, env_extra: dict | None = None, cap_gb: int = 8, timeout: float = 300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(cap_gb), *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=REPO)
    elapsed = time.perf_counter() - t0
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RUSAGE ")]
    assert proc.returncode == 0 and line, f"score failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(line[-1][7:]), elapsed, proc


# ---- 1. untrusted model files -----------------------------------------------------------------
def test_code_running_pickle_checkpoint_is_refused_and_never_runs(models, tmp_path):
    ckpt, _ = models
    marker = tmp_path / "pwned"
    evil = hi.malicious_checkpoint(tmp_path / "evil.pt", marker, wrap_real=ckpt)
    images = tmp_path / "in"
    modelgen.write_images(images, 2)

    result = _score(images, evil, tmp_path / "out", "--backend", "torch")
    assert result.exit_code != 0
    assert "refusing to load" in result.output and "could run code" in result.output, result.output
    assert not marker.exists(), "unpickling ran the payload"
    assert not (tmp_path / "out").exists() or not sink.committed_parts(tmp_path / "out")
    with pytest.raises(CheckpointError, match="plain types"):
        load_checkpoint(evil)
    assert not marker.exists()
    # The payload is live: an unrestricted unpickler runs it (so the refusal above is what
    # protected us, not a broken file).
    import torch

    torch.load(evil, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "link/passwd"],
                         ids=["dotdot", "absolute", "symlinked-dir"])
def test_onnx_external_data_outside_its_folder_is_refused(tmp_path, location):
    model_dir = tmp_path / "site-b" / "models"
    model_dir.mkdir(parents=True)
    (model_dir / "link").symlink_to("/etc")  # inside the folder by name, outside once resolved
    model = hi.onnx_with_external_location(model_dir / "model.onnx", location)
    images = tmp_path / "in"
    modelgen.write_images(images, 1)

    result = _score(images, model, tmp_path / "out", "--backend", "onnxruntime")
    assert result.exit_code != 0
    assert "refusing to load" in result.output and location in result.output, result.output
    assert "outside" in result.output or "absolute" in result.output


@pytest.mark.parametrize("kind", ["onnx", "checkpoint"])
def test_model_spec_that_would_size_every_tensor_absurdly_is_refused_at_load(models, tmp_path, kind):
    # A spec saying input_size 60,000 would make each preprocessed input 14 GB before the
    # runtime ever compared it with the graph. The model must be refused before any input.
    import onnx
    import torch

    from fracture_batch.model.spec import SPEC_METADATA_KEY

    ckpt, onnx_model = models
    if kind == "onnx":
        proto = onnx.load(str(onnx_model))
        for prop in proto.metadata_props:
            if prop.key == SPEC_METADATA_KEY:
                spec = json.loads(prop.value)
                spec["input_size"] = 60_000
                prop.value = json.dumps(spec)
        evil = tmp_path / "huge.onnx"
        onnx.save(proto, str(evil))
    else:
        payload = torch.load(ckpt, weights_only=True)
        payload["spec"]["input_size"] = 60_000
        evil = tmp_path / "huge.pt"
        torch.save(payload, evil)
    images = tmp_path / "in"
    modelgen.write_images(images, 1)
    result = _score(images, evil, tmp_path / "out")
    assert result.exit_code != 0
    assert "input_size must be an integer in [8, 4096], got 60000" in result.output, result.output
    assert not sink.committed_parts(tmp_path / "out")


def test_onnx_external_data_inside_its_folder_is_accepted_by_the_check(tmp_path):
    # The other side of the refusal above: the check is about where, not about external data.
    from fracture_batch.model.onnx_meta import check_external_data_safe

    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "weights.bin").write_bytes(b"\0\0\0@")
    model = hi.onnx_with_external_location(model_dir / "model.onnx", "weights.bin")
    assert check_external_data_safe(model) == [(model_dir / "weights.bin").resolve()]


# ---- 2. decompression bombs, absurd headers, pathological files ----------------------------------
_BOMB_MESSAGES = {
    "png_50k": "above the limit", "png_16bit_rgba_30k": "above the limit", "jpeg_65k": "above the limit",
    "dicom_65535": "above the limit", "dicom_short": "shorter than the header says",
    "dicom_truncated": "shorter than the header says", "tiff_5000_pages": "pages",
    "dicom_zero_filled": "only zero bytes after its header", "dicom_2m_elements": "more than 50,000 elements",
}


@pytest.fixture(scope="module")
def crop_model(models, tmp_path_factory):
    """The tiny ONNX model with a centre-crop spec (shorter side to 72, crop 64): the
    resize rule under which an extreme aspect ratio used to need a huge intermediate."""
    import onnx

    from fracture_batch.model.spec import SPEC_METADATA_KEY, ModelSpec, ResizeMode

    proto = onnx.load(str(models[1]))
    for prop in proto.metadata_props:
        if prop.key == SPEC_METADATA_KEY:
            spec = ModelSpec.from_json(prop.value)
            prop.value = spec.replace(resize_mode=ResizeMode.SHORTER_SIDE_CENTER_CROP, resize_size=72).to_json()
    path = tmp_path_factory.mktemp("crop-model") / "crop.onnx"
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize("decoder", ["python", pytest.param("dali", marks=NEEDS_DALI)])
def test_bombs_and_absurd_sizes_become_rows_quickly_in_little_memory(crop_model, tmp_path, decoder):
    from PIL import Image

    inputs = tmp_path / "in"
    bombs = hi.bombs(inputs / "hostile")
    good = modelgen.write_images(inputs, 2)
    # Real, decodable strips: 16 MP (under the default limit), but "shorter side to 72"
    # scales them by 4.5, and a resize of the whole image before the crop would make a
    # 72 x 4,500,000 float32 intermediate (1.3 GB; 16 GB at the usual 256). The crop must
    # be resampled from its source box (preprocess.crop_source_box, DALI's resize ROI).
    Image.new("L", (16, 1_000_000), 128).save(inputs / "strip.png")
    Image.new("L", (1_000_000, 16), 128).save(inputs / "wide.png")
    # A 3 GB file with a PNG signature (sparse: no disk used), like a stray backup in the
    # archive: it must not be read into memory whole (DALI's route used to).
    with open(inputs / "hostile" / "backup.png", "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.truncate(3 << 30)
    out = tmp_path / "out"

    usage, elapsed, _ = _score_subprocess(_args(inputs, crop_model, out, decoder=decoder), cap_gb=6)
    rows = {r["relpath"]: r for r in _rows(out)}
    assert len(rows) == len(bombs) + len(good) + 3
    assert rows["hostile/backup.png"]["status"] == "error"
    for name in [p.name for p in good] + ["strip.png", "wide.png"]:
        assert rows[name]["status"] == "ok", rows[name]
    for name, expected in _BOMB_MESSAGES.items():
        row = rows[str(bombs[name].relative_to(inputs))]
        assert row["status"] == "error" and expected in row["error"], (name, row["error"])
        # Refused from the header: milliseconds (bounded at 5 s for a loaded 2-core CI box);
        # actually decoding any of them would take minutes.
        assert row["decode_ms"] is None or row["decode_ms"] < 5000, (name, row["decode_ms"])
    # The endless IFD chain must not hang; page 0 of it is a valid 1x1 image.
    assert rows[str(bombs["tiff_cycle"].relative_to(inputs))]["status"] in ("ok", "error")
    # Peak RSS of the scorer (~300-450 MB: runtimes and model) and of its decode processes
    # (an upper bound that includes the scorer's size at spawn). The smallest bomb's pixels
    # alone would be 2.5 GB (50,000^2 bytes), the DICOM's 8.6 GB, the strips' full-size
    # intermediates 1.3 GB, the backup file 3 GB, the 2-million-element header 580 MB on
    # top of the runtimes: 1 GB means none of them was allocated.
    assert usage["self_mb"] < 1000 and usage["children_mb"] < 1000, usage
    assert elapsed < 180, elapsed  # the whole run, imports and model load included


@pytest.mark.parametrize("decoder", ["python", pytest.param("dali", marks=NEEDS_DALI)])
def test_max_pixels_option_applies_to_every_decoder(models, tmp_path, decoder):
    from PIL import Image

    _, onnx_model = models
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.new("L", (300, 200), 90).save(inputs / "big.png")  # 60,000 pixels
    Image.new("L", (100, 100), 90).save(inputs / "small.jpg")  # 10,000 pixels
    hi.write(inputs / "small.dcm", hi.dicom_bytes(hi._ramp16(100, 100)))  # 10,000 pixels
    hi.write(inputs / "big.dcm", hi.dicom_bytes(hi._ramp16(250, 250)))  # 62,500 pixels

    result = _score(inputs, onnx_model, tmp_path / "out", "--max-pixels", "50000", "--decode-isolation", "thread",
                    decoder=decoder)
    assert result.exit_code == 0, result.output
    rows = {r["relpath"]: r for r in _rows(tmp_path / "out")}
    assert rows["small.jpg"]["status"] == rows["small.dcm"]["status"] == "ok"
    for name in ("big.png", "big.dcm"):
        assert rows[name]["status"] == "error" and "above the limit of 50,000" in rows[name]["error"], rows[name]


_SLOW_DECODER = textwrap.dedent("""
    # Injected by tests/test_security.py: any file named slow* never finishes decoding.
    import os, time
    if os.environ.get("FRACTURE_BATCH_TEST_SLOW_DECODE"):
        import fracture_batch.decode as _decode

        def _stall(fn):
            def wrapper(path, *args, **kwargs):
                if os.path.basename(str(path)).startswith("slow"):
                    time.sleep(3600)
                return fn(path, *args, **kwargs)
            return wrapper

        _decode.decode_file = _stall(_decode.decode_file)
        _decode.decode_for_model = _stall(_decode.decode_for_model)
""")


def test_decode_timeout_turns_a_stalled_file_into_an_error_row(models, tmp_path):
    _, onnx_model = models
    inputs = tmp_path / "in"
    modelgen.write_images(inputs, 3)
    shutil.copy(inputs / "img_00001.png", inputs / "slow_scan.png")
    inject = tmp_path / "inject"
    inject.mkdir()
    # sitecustomize runs at start-up in the scorer and in every spawned decode process.
    (inject / "sitecustomize.py").write_text(_SLOW_DECODER)
    env = {"PYTHONPATH": os.pathsep.join([str(inject), os.environ.get("PYTHONPATH", "")]),
           "FRACTURE_BATCH_TEST_SLOW_DECODE": "1"}

    _, elapsed, _ = _score_subprocess(_args(inputs, onnx_model, tmp_path / "out", "--decode-timeout", "3"),
                                      env_extra=env)
    rows = {r["relpath"]: r for r in _rows(tmp_path / "out")}
    assert len(rows) == 4
    assert rows["slow_scan.png"]["status"] == "error" and "--decode-timeout=3s" in rows["slow_scan.png"]["error"]
    assert all(rows[f"img_{i:05d}.png"]["status"] == "ok" for i in range(3))
    # The stall is an hour; finishing at all proves the child was killed. 120 s bounds
    # start-up, the 3 s timeout and a fresh decode process on a loaded 2-core machine.
    assert elapsed < 120, elapsed


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL/pydicom warn about every corrupt file
@pytest.mark.parametrize("decoder", ["python", pytest.param("dali", marks=NEEDS_DALI)])
def test_a_directory_of_fuzzed_files_scores_one_row_each(models, tmp_path, decoder):
    # The fuzz tests check decoding file by file; this runs a whole directory of mutants
    # through the real command (discovery, decode workers, batching, Parquet sink).
    import random

    from support import fuzzlib

    _, onnx_model = models
    seeds = hi.seeds()
    rng = random.Random(7)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(60):
        name = sorted(seeds)[i % len(seeds)]
        data, _ = fuzzlib.mutate(name, seeds[name], lambda k: rng.randrange(k) if k > 1 else 0, seeds)
        (inputs / f"{i:03d}-{name}").write_bytes(data)
    result = _score(inputs, onnx_model, tmp_path / "out", decoder=decoder)
    assert result.exit_code == 0, result.output
    rows = _rows(tmp_path / "out")
    assert sorted(r["relpath"] for r in rows) == sorted(p.name for p in inputs.iterdir())
    assert all(r["status"] == "ok" or (r["status"] == "error" and r["error"].strip()) for r in rows)
    assert 0 < sum(r["status"] == "ok" for r in rows) < len(rows)  # both kinds were exercised


# ---- 4. output safety and privacy -------------------------------------------------------------------
def _phi_inputs(directory: Path) -> None:
    hi.write(directory / "study" / "image.dcm", hi.dicom_bytes())
    hi.write(directory / "study" / "short.dcm", hi.dicom_bytes(rows=512, columns=512))  # error row
    hi.write(directory / "study" / "huge.dcm", hi.dicom_bytes(rows=65535, columns=65535))  # error row
    modelgen.write_images(directory, 1)


def _tree(root: Path) -> dict[str, tuple[int, float]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime) for p in root.rglob("*") if p.is_file()}


def _all_output_text(out: Path) -> tuple[bytes, str]:
    """Raw bytes of every file under ``out`` (hidden ones included), and the decoded text of
    every Parquet part (values are compressed on disk, so raw bytes alone would miss them)."""
    raw = b"".join(p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file())
    text = []
    for part in [*sink.committed_parts(out), *out.glob(f"{studies.STUDIES_DIR}/*.parquet")]:
        table = pq.read_table(part)
        text.append(json.dumps(table.to_pylist(), default=str))
        text.append(json.dumps({k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}))
    return raw, "\n".join(text)


def test_no_phi_in_any_output_and_nothing_written_outside_out(models, tmp_path, monkeypatch):
    _, onnx_model = models
    inputs = tmp_path / "in"
    _phi_inputs(inputs)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # header values used as relative paths would land here
    out = tmp_path / "deep" / "out"
    out.parent.mkdir()
    before = _tree(tmp_path)

    result = _score(inputs, onnx_model, out)  # default options: process isolation, hashed UIDs
    assert result.exit_code == 0, result.output
    rows = {r["relpath"]: r for r in _rows(out)}
    assert len(rows) == 4 and rows["study/image.dcm"]["status"] == "ok"
    assert rows["study/short.dcm"]["status"] == rows["study/huge.dcm"]["status"] == "error"

    after = _tree(tmp_path)
    outside = {p for p in after if not p.startswith(str(out) + os.sep)}
    assert outside == set(before), f"written outside --out: {sorted(outside ^ set(before))}"
    assert all(after[p] == before[p] for p in before), "an input or a file beside --out was modified"
    assert not any(cwd.iterdir())
    assert not list(tmp_path.parent.glob("*escaped*")) and not list(tmp_path.rglob("*escaped*"))
    assert {p.name for p in out.iterdir()} <= ({sink.LOCK_NAME, sink.SUCCESS_NAME, studies.STUDIES_DIR}
                                               | {p.name for p in sink.committed_parts(out)})

    raw, text = _all_output_text(out)
    for secret in PHI + RAW_UIDS:
        assert secret.encode() not in raw and secret not in text, f"{secret!r} reached the output"
        assert secret not in result.output, f"{secret!r} printed by the CLI"
    assert rows["study/image.dcm"]["dicom_modality"] == "DX"  # header columns do arrive, minus PHI


@pytest.mark.parametrize("mode", ["hash", "keep", "drop"])
def test_identifier_modes(models, tmp_path, mode):
    _, onnx_model = models
    inputs = tmp_path / "in"
    _phi_inputs(inputs)
    out = tmp_path / "out"
    result = _score(inputs, onnx_model, out, "--dicom-ids", mode, "--decode-isolation", "thread")
    assert result.exit_code == 0, result.output
    row = {r["relpath"]: r for r in _rows(out)}["study/image.dcm"]
    uid_cols = ("dicom_study_instance_uid", "dicom_series_instance_uid", "dicom_sop_instance_uid")
    raw, text = _all_output_text(out)
    if mode == "keep":
        assert [row[c] for c in uid_cols] == list(RAW_UIDS)
    elif mode == "drop":
        assert all(row[c] is None for c in uid_cols)
    else:
        tokens = [row[c] for c in uid_cols]
        assert all(t and len(t) >= 16 and all(ch in "0123456789abcdef" for ch in t) for t in tokens), tokens
        assert len(set(tokens)) == 3  # distinct UIDs stay distinct, so studies can still be grouped
    if mode != "keep":
        for uid in RAW_UIDS:
            assert uid.encode() not in raw and uid not in text
    for secret in PHI:  # never, in any mode
        assert secret.encode() not in raw and secret not in text


def test_hashed_identifiers_are_stable_and_the_salt_stays_secret(models, tmp_path):
    _, onnx_model = models
    inputs = tmp_path / "in"
    _phi_inputs(inputs)
    salt = "site-secret-salt-7f3a"
    tokens = {}
    for run, extra in (("a", []), ("b", []), ("salted", ["--uid-salt", salt])):
        result = _score(inputs, onnx_model, tmp_path / run, "--decode-isolation", "thread", *extra)
        assert result.exit_code == 0, result.output
        tokens[run] = {r["relpath"]: r["dicom_study_instance_uid"] for r in _rows(tmp_path / run)}["study/image.dcm"]
    assert tokens["a"] == tokens["b"] and tokens["a"]  # joins across nights' runs still work
    assert tokens["salted"] != tokens["a"]  # without the salt, a known UID cannot be matched
    raw, text = _all_output_text(tmp_path / "salted")
    assert salt.encode() not in raw and salt not in text  # the salt is never recorded


def test_non_utf8_file_name_is_one_row_and_resume_does_not_redo_it(models, tmp_path):
    # Old archives hold Latin-1 names; Python sees their bytes as surrogate escapes, which
    # Parquet (UTF-8) cannot store: one such name used to fail every part, and every resume.
    _, onnx_model = models
    inputs = tmp_path / "in"
    modelgen.write_images(inputs, 2)
    os.rename(inputs / "img_00001.png", os.fsdecode(bytes(inputs) + b"/caf\xe9_scan.png"))
    out = tmp_path / "out"
    first = _score(inputs, onnx_model, out, "--decode-isolation", "thread")
    assert first.exit_code == 0, first.output
    rows = {r["relpath"]: r for r in _rows(out)}
    assert rows["caf\\xe9_scan.png"]["status"] == "ok", rows  # the byte, written as an escape
    second = _score(inputs, onnx_model, out, "--decode-isolation", "thread")
    assert second.exit_code == 0, second.output
    assert len(_rows(out)) == 2 and sink.read_success(out)["already_done"] == 2


@pytest.mark.parametrize("name", [sink.LOCK_NAME, f".{sink.SUCCESS_NAME}.tmp", sink.SUCCESS_NAME])
def test_tool_files_planted_as_symlinks_in_out_are_never_written_through(models, tmp_path, name):
    # A shared or copied output folder may hold links where the tool writes its own files.
    _, onnx_model = models
    inputs = tmp_path / "in"
    modelgen.write_images(inputs, 2)
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (out / name).symlink_to(victim)
    result = _score(inputs, onnx_model, out)  # an unhandled exception fails the test here
    assert victim.read_text() == "precious\n", f"{name} was written through a symlink"
    if result.exit_code != 0:  # refusing is fine, with a message naming the file
        assert name in result.output and "symbolic link" in result.output, result.output
    else:
        assert len(_rows(out)) == 2


def test_dicomdir_is_an_error_row_and_its_references_are_never_followed(models, tmp_path, monkeypatch):
    import builtins

    _, onnx_model = models
    inputs = tmp_path / "archive" / "in"
    hi.write(tmp_path / "secret.dcm", hi.dicom_bytes())  # outside the input root
    hi.write(inputs / "DICOMDIR", hi.dicomdir_bytes(["..", "..", "secret.dcm"]))
    opened: list[str] = []
    real_open = builtins.open

    def recording_open(file, *args, **kwargs):
        opened.append(os.fspath(file) if isinstance(file, (str, os.PathLike)) else repr(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", recording_open)  # thread isolation: decoding is in-process
    result = _score(inputs, onnx_model, tmp_path / "out", "--decode-isolation", "thread")
    monkeypatch.setattr(builtins, "open", real_open)
    assert result.exit_code == 0, result.output
    (row,) = _rows(tmp_path / "out")
    assert row["status"] == "error" and "DICOMDIR" in row["error"], row
    assert any(p.endswith("DICOMDIR") for p in opened)  # the recorder saw the decoder's reads
    assert not [p for p in opened if "secret" in p], opened


def test_pydicom_is_a_version_without_the_dicomdir_path_traversal_flaw():
    # CVE-2026-32711 (GHSA-v856-2rf8-9f28): pydicom < 3.0.2 let a DICOMDIR's Referenced
    # File ID point outside the File-set root. The installed version and the declared
    # requirement must both exclude it.
    from packaging.version import Version

    assert Version(metadata.version("pydicom")) >= Version("3.0.2")
    reqs = metadata.requires("fracture-batch") or (REPO / "pyproject.toml").read_text().splitlines()
    pinned = [r for r in reqs if r.replace('"', "").strip().startswith("pydicom")]
    assert pinned and all(">=3.0.2" in r.replace(" ", "") or ">=3.1" in r.replace(" ", "") for r in pinned), pinned


# ---- 5. disk full, read-only and missing output ------------------------------------------------------
@contextlib.contextmanager
def _tmpfs(path: Path, size_kb: int):
    """A real small filesystem (root only, needs mount permission), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.decode().strip() or 'not permitted'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _remount(path: Path, opts: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{opts}", str(path)], check=True, capture_output=True)


def _digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sink.committed_parts(out)}


def test_real_disk_full_stops_cleanly_and_resume_completes(models, tmp_path):
    _, onnx_model = models
    inputs = tmp_path / "in"
    paths = modelgen.write_images(inputs, 24)
    with _tmpfs(tmp_path / "small", 48) as fs:
        out = fs / "out"
        args = (inputs, onnx_model, out, "--part-rows", "4")
        first = _score(*args)
        assert first.exit_code != 0
        assert "disk full" in first.output and "re-run the same command to resume" in first.output, first.output
        committed = _digests(out)
        assert committed, "nothing committed before the disk filled: the tmpfs is too small for the test"
        done = _rows(out)
        assert len(done) < len(paths) and len({r["path"] for r in done}) == len(done)
        assert not list(out.glob(sink.TMP_PREFIX + "*"))  # no half-written part left behind
        assert not (out / sink.SUCCESS_NAME).exists()

        _remount(fs, "size=4m")  # space freed
        second = _score(*args)
        assert second.exit_code == 0, second.output
        rows = _rows(out)
        assert sorted(r["path"] for r in rows) == sorted(str(p.absolute()) for p in paths)
        assert all(_digests(out)[name] == digest for name, digest in committed.items())  # untouched
        assert sink.read_success(out)["dataset_rows"] == len(paths)


def test_injected_enospc_mid_run_then_resume(models, tmp_path, monkeypatch):
    # The same story where mounting is not allowed: the fsync of the third Parquet part
    # fails with ENOSPC, as it does on filesystems that allocate at flush (NFS, XFS delalloc).
    _, onnx_model = models
    inputs = tmp_path / "in"
    paths = modelgen.write_images(inputs, 14)
    real_fsync, calls = os.fsync, {"n": 0}

    def fsync_fills_disk(fd):
        if sink.TMP_PREFIX in os.path.basename(os.readlink(f"/proc/self/fd/{fd}")):
            calls["n"] += 1
            if calls["n"] == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_fills_disk)
    out = tmp_path / "out"
    first = _score(inputs, onnx_model, out, "--part-rows", "4", "--decode-isolation", "thread")
    assert first.exit_code != 0 and "disk full" in first.output, first.output
    committed = _digests(out)
    assert len(committed) == 2
    monkeypatch.setattr(os, "fsync", real_fsync)
    second = _score(inputs, onnx_model, out, "--part-rows", "4", "--decode-isolation", "thread")
    assert second.exit_code == 0, second.output
    rows = _rows(out)
    assert sorted(r["path"] for r in rows) == sorted(str(p.absolute()) for p in paths)
    assert all(_digests(out)[n] == d for n, d in committed.items())


def _forbid_reading(monkeypatch) -> dict:
    """Record any step past the output check: model load, discovery, decoding."""
    seen: dict[str, bool] = {}

    def trap(name):
        def fail(*a, **k):
            seen[name] = True
            raise AssertionError(f"{name} ran before the output was checked")
        return fail

    monkeypatch.setattr(runner, "Predictor", trap("model load"))
    monkeypatch.setattr(session, "iter_inputs", trap("discovery"))
    import fracture_batch.decode.workers as stage

    monkeypatch.setattr(stage, "decode_for_model", trap("decode"))
    return seen


@pytest.mark.parametrize("where", ["under-a-file", "missing-parent", "proc", "read-only-fs"])
def test_unwritable_output_fails_before_any_input_is_read(models, tmp_path, monkeypatch, where):
    # Tests run as root, which ignores mode bits, so "read-only" is made real: a path under a
    # regular file (ENOTDIR), a missing parent, /proc (no regular files can be created), and a
    # tmpfs mounted read-only (EROFS applies to root too; skipped where mount is not allowed).
    _, onnx_model = models
    inputs = tmp_path / "in"
    modelgen.write_images(inputs, 2)
    stack = contextlib.ExitStack()
    if where == "under-a-file":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "out"
    elif where == "missing-parent":
        out = tmp_path / "no" / "such" / "out"
    elif where == "proc":
        out = Path("/proc/self/fracture-out")
    else:
        fs = stack.enter_context(_tmpfs(tmp_path / "ro", 64))
        (fs / "out").mkdir()
        _remount(fs, "ro")
        out = fs / "out"
    with stack:
        seen = _forbid_reading(monkeypatch)
        result = _score(inputs, onnx_model, out)
    assert result.exit_code != 0
    assert str(out) in result.output or "--out" in result.output, result.output
    expected = {"under-a-file": "is a file, not a directory", "missing-parent": "does not exist",
                "proc": "cannot create output directory", "read-only-fs": "not writable"}[where]
    assert expected in result.output, result.output
    assert not seen, f"ran before refusing the output: {seen}"
