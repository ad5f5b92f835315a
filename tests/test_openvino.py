"""OpenVINO backend: parity with onnxruntime on a tiny model, the compiled-model cache,
the auto rule's CPU branch (with a fake probe), and what happens without openvino."""
from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest

from fracture_batch.backends import BackendError, BackendKind, BackendOptions, DeviceKind, create_backend, resolve_backend
from fracture_batch.backends import cpu_rule
from fracture_batch.backends import openvino_backend as ovb
from fracture_batch.backends.base import file_sha256

from support import modelgen

needs_openvino = pytest.mark.skipif(not ovb.has_openvino()[0], reason="openvino not installed "
                                    "(pip install 'fracture-batch[openvino]')")


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(0).standard_normal((20, 3, modelgen.INPUT_SIZE, modelgen.INPUT_SIZE), dtype=np.float32)


def _ort(onnx_path):
    from fracture_batch.backends.onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(onnx_path, DeviceKind.CPU, BackendOptions())


@needs_openvino
def test_f32_matches_onnxruntime_and_splits_batches_over_requests(models, batch, tmp_path):
    _, onnx_path = models
    be = ovb.OpenVinoBackend(onnx_path, DeviceKind.CPU,
                             BackendOptions(inference_precision="f32", openvino_cache_dir=str(tmp_path)))
    ref = _ort(onnx_path).predict(batch)
    for n in (1, 7, 20):  # 20 rows go out as several async requests and come back in order
        out = be.predict(batch[:n])
        assert out.shape == (n, 2) and out.dtype == np.float32
        # logits of O(1-10); f32 differs from onnxruntime only by kernel order (~1e-5)
        assert np.abs(out - ref[:n]).max() < 1e-3
    assert "f32 inference precision" in be.description


@needs_openvino
@pytest.mark.skipif(not ovb.cpu_has_bf16(), reason="CPU has neither AMX nor AVX512-BF16")
def test_bf16_close_to_f32(models, batch, tmp_path):
    _, onnx_path = models
    be = ovb.OpenVinoBackend(onnx_path, DeviceKind.CPU,
                             BackendOptions(inference_precision="bf16", openvino_cache_dir=str(tmp_path)))
    ref = _ort(onnx_path).predict(batch)
    assert be.precision is ovb.InferencePrecision.BF16
    # bf16 keeps 8 mantissa bits (relative rounding 2^-9 per op); through 18 layers of a
    # random resnet18 the logits move by ~1 % of their scale, far below 10 %, which would
    # mean the hint was ignored or the graph broken.
    assert np.abs(be.predict(batch) - ref).max() < 0.1 * max(1.0, np.abs(ref).max())


@needs_openvino
def test_compiled_model_cache_is_written_to_the_cache_dir(models, tmp_path):
    _, onnx_path = models
    cache = tmp_path / "ovcache"
    ovb.OpenVinoBackend(onnx_path, DeviceKind.CPU, BackendOptions(openvino_cache_dir=str(cache)))
    blobs = list(cache.glob("*.blob"))
    assert blobs, list(cache.iterdir())
    again = ovb.OpenVinoBackend(onnx_path, DeviceKind.CPU, BackendOptions(openvino_cache_dir=str(cache)))
    assert sorted(cache.glob("*.blob")) == sorted(blobs)  # loaded from the cache, nothing new compiled
    assert str(cache) in again.description


@needs_openvino
def test_submitted_batches_run_in_flight_and_come_back_as_predict_gives(models, batch, tmp_path):
    _, onnx_path = models
    be = ovb.OpenVinoBackend(onnx_path, DeviceKind.CPU,
                             BackendOptions(inference_precision="f32", openvino_cache_dir=str(tmp_path)))
    ref = [be.predict(batch[:12]), be.predict(batch[12:])]
    first, second = be.submit(batch[:12]), be.submit(batch[12:])  # both in flight at once
    # collected newest first: each keeps its own outputs (same requests, same kernels: identical)
    assert np.array_equal(second.result(), ref[1]) and np.array_equal(first.result(), ref[0])
    # More submits than IN_FLIGHT without collecting: a reused slot's batch is collected
    # before its requests run again, so no result is overwritten.
    jobs = [be.submit(batch[:12] if i % 2 == 0 else batch[12:]) for i in range(ovb.IN_FLIGHT + 3)]
    for i, job in enumerate(jobs):
        assert np.array_equal(job.result(), ref[i % 2])
    assert be.submit(batch[:0]).result().shape == (0, 2)
    be.close()


def test_model_bench_times_a_submitting_backend_with_a_batch_in_flight():
    """The model-only bench drives a backend with ``submit`` as the runner does (the next batch
    submitted before the previous is collected), so its rate is the one the runner can reach."""
    from fracture_batch.bench.model_bench import _timed_call
    from fracture_batch.bench.records import Measurement

    log = []

    class Job:
        def __init__(self, n):
            self.n = n

        def result(self):
            log.append(("collect", self.n))

    class Submitting:
        n = 0

        def submit(self, x):
            self.n += 1
            log.append(("submit", self.n))
            return Job(self.n)

    row = Measurement("model", "x", "openvino", "int8")
    step = _timed_call(Submitting(), np.zeros((2, 3, 8, 8), np.float32), row)
    for _ in range(3):
        step()
    # one batch ahead from the start; each call submits one and collects the one before it
    assert log == [("submit", 1), ("submit", 2), ("collect", 1), ("submit", 3), ("collect", 2),
                   ("submit", 4), ("collect", 3)]
    assert "in flight" in row.note


def test_default_cache_dir_is_under_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert ovb.default_cache_dir() == tmp_path / "fracture-batch" / "openvino"


@needs_openvino
def test_backend_openvino_is_chosen_explicitly_and_scores(models, batch):
    _, onnx_path = models
    r = resolve_backend(onnx_path, "openvino")
    assert r.backend is BackendKind.OPENVINO and r.device is DeviceKind.CPU
    be = create_backend(onnx_path, r, BackendOptions(inference_precision="f32"))
    assert be.predict(batch[:2]).shape == (2, 2)
    with pytest.raises(BackendError, match="runs on the CPU"):
        resolve_backend(onnx_path, "openvino", "cuda")


# ---- the auto rule (no OpenVINO needed: availability and the probe are faked) -------------

@pytest.fixture
def model_dir(models, tmp_path, monkeypatch):
    """A copy of the tiny ONNX file, with OpenVINO reported present and the probe cache in tmp."""
    _, onnx_path = models
    path = tmp_path / "model.onnx"
    shutil.copyfile(onnx_path, path)
    monkeypatch.setattr(ovb, "has_openvino", lambda: (True, "openvino 0-test"))
    monkeypatch.setattr(ovb, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(ovb, "default_cache_dir", lambda: tmp_path / "cache")
    return path


def _record(path, precisions: dict[str, bool]) -> None:
    entry = {"variant": "fp32", "sha256": file_sha256(path),
             "precisions": {p: {"passed": ok, "failures": [] if ok else ["agreement 90% < 99%"]}
                            for p, ok in precisions.items()}}
    (path.parent / cpu_rule.PARITY_FILE).write_text(json.dumps({"files": {path.name: entry}}))


class FakeProbe:
    def __init__(self, ov: float, ort: float):
        self.rates, self.calls = {"openvino": ov, "onnxruntime": ort}, []

    def __call__(self, path, precision, threads):
        self.calls.append(precision)
        return dict(self.rates)


def test_auto_picks_openvino_when_faster_and_within_its_bar(model_dir):
    _record(model_dir, {"f32": True, "bf16": True})
    probe = FakeProbe(ov=90.0, ort=30.0)
    choice = cpu_rule.resolve_cpu_backend(model_dir, probe=probe)
    assert choice.backend is BackendKind.OPENVINO and choice.inference_precision == "bf16"
    assert "90.0 vs onnxruntime 30.0" in choice.reason
    again = cpu_rule.resolve_cpu_backend(model_dir, probe=probe)
    assert again.backend is BackendKind.OPENVINO and "cached" in again.reason and probe.calls == ["bf16"]


def test_auto_keeps_onnxruntime_when_openvino_is_not_faster(model_dir):
    _record(model_dir, {"f32": True})
    choice = cpu_rule.resolve_cpu_backend(model_dir, probe=FakeProbe(ov=31.0, ort=30.0))  # within 5 %
    assert choice.backend is BackendKind.ONNXRUNTIME and "not >= 1.05x" in choice.reason


def test_auto_never_uses_a_precision_that_missed_its_bar(model_dir):
    _record(model_dir, {"f32": True, "bf16": False})
    probe = FakeProbe(ov=90.0, ort=30.0)
    assert cpu_rule.resolve_cpu_backend(model_dir, probe=probe).inference_precision == "f32"
    _record(model_dir, {"f32": False, "bf16": False})
    choice = cpu_rule.resolve_cpu_backend(model_dir, probe=probe)
    assert choice.backend is BackendKind.ONNXRUNTIME and "missed its parity bar" in choice.reason


def test_auto_ignores_parity_recorded_for_other_bytes(model_dir):
    _record(model_dir, {"f32": True})
    model_dir.write_bytes(model_dir.read_bytes() + b"\0")  # the file changed after export
    probe = FakeProbe(ov=90.0, ort=30.0)
    choice = cpu_rule.resolve_cpu_backend(model_dir, probe=probe)
    assert choice.backend is BackendKind.ONNXRUNTIME and "no OpenVINO parity" in choice.reason and not probe.calls


def test_preferred_precision_rule():
    assert cpu_rule.preferred_precision(["f32", "bf16"], int8_file=False, bf16_native=True) == "bf16"
    assert cpu_rule.preferred_precision(["f32", "bf16"], int8_file=True, bf16_native=True) == "f32"
    assert cpu_rule.preferred_precision(["f32", "bf16"], int8_file=False, bf16_native=False) == "f32"
    assert cpu_rule.preferred_precision([], int8_file=False, bf16_native=True) is None


# ---- without openvino -----------------------------------------------------------------------

def test_missing_openvino_says_how_to_install_and_auto_falls_back(models, monkeypatch):
    _, onnx_path = models
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    ok, why = ovb.has_openvino()
    assert not ok and "pip install 'fracture-batch[openvino]'" in why
    with pytest.raises(BackendError, match=r"fracture-batch\[openvino\]"):
        ovb.OpenVinoBackend(onnx_path, DeviceKind.CPU, BackendOptions())
    r = resolve_backend(onnx_path, "auto", "cpu")
    assert r.backend is BackendKind.ONNXRUNTIME and "fracture-batch[openvino]" in r.reason


def test_cli_and_training_import_without_openvino(monkeypatch):
    """Training and the CLI never need openvino: with it missing they import and --help works."""
    import importlib

    from click.testing import CliRunner

    monkeypatch.setitem(sys.modules, "openvino", None)
    importlib.import_module("train.fit")
    from fracture_batch.cli import main

    result = CliRunner().invoke(main, ["score", "--help"])
    assert result.exit_code == 0 and "--inference-precision" in result.output
