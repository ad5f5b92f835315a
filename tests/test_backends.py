"""Backends: the auto rule, fatal errors before any input, and numerical agreement on CPU."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from fracture_batch.backends import (
    BackendError,
    BackendKind,
    BackendOptions,
    DeviceKind,
    Resolution,
    create_backend,
    has_cuda,
    resolve_backend,
)
from fracture_batch.scoring.predictor import Predictor
from fracture_batch.scoring.rows import COLUMNS

from support import modelgen


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(0).standard_normal((3, 3, modelgen.INPUT_SIZE, modelgen.INPUT_SIZE), dtype=np.float32)


def test_auto_picks_backend_by_file_type_and_says_why(models):
    ckpt, onnx_path = models
    r = resolve_backend(onnx_path)
    assert r.backend is BackendKind.ONNXRUNTIME and ".onnx file -> onnxruntime" in r.reason
    r = resolve_backend(ckpt)
    assert r.backend is BackendKind.TORCH
    if not has_cuda()[0]:
        assert r.device is DeviceKind.CPU and "cpu" in r.reason


def test_backend_file_mismatch_and_unknown_files_are_fatal(models, tmp_path):
    ckpt, onnx_path = models
    with pytest.raises(BackendError, match="--backend onnxruntime cannot run a .pt file"):
        resolve_backend(ckpt, "onnxruntime")
    with pytest.raises(BackendError, match="model file not found"):
        resolve_backend(tmp_path / "nope.onnx")
    (tmp_path / "m.bin").write_bytes(b"x")
    with pytest.raises(BackendError, match="unknown model file type"):
        resolve_backend(tmp_path / "m.bin")


@pytest.mark.skipif(has_cuda()[0], reason="checks the no-GPU message; a GPU is present")
def test_tensorrt_engine_without_gpu_is_fatal_with_a_hint(tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"not really an engine")
    with pytest.raises(BackendError, match="needs a CUDA GPU .*score the .onnx on CPU instead"):
        resolve_backend(plan)


def test_onnx_without_spec_or_garbage_is_fatal(models, tmp_path):
    _, onnx_path = models
    m = onnx.load(str(onnx_path))
    del m.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(m, str(bare))
    with pytest.raises(BackendError, match="no 'fracture_batch.model_spec' metadata"):
        create_backend(bare, resolve_backend(bare))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(BackendError):
        create_backend(junk, resolve_backend(junk))


def test_onnxruntime_matches_torch_fp32(models, batch):
    ckpt, onnx_path = models
    ort_b = create_backend(onnx_path, resolve_backend(onnx_path, device="cpu"), BackendOptions(intra_op_threads=1))
    torch_b = create_backend(ckpt, resolve_backend(ckpt, device="cpu"), BackendOptions(intra_op_threads=1))
    a, b = ort_b.predict(batch), torch_b.predict(batch)
    assert a.shape == b.shape == (3, 2)
    # Same fp32 weights; only kernel summation order differs: 1e-3 on logits of size ~1
    # is ~100x the observed difference and far below anything that moves a label.
    np.testing.assert_allclose(a, b, atol=1e-3, rtol=0)
    assert ort_b.spec == torch_b.spec
    assert "intra-op threads 1" in ort_b.description


def test_torch_bf16_autocast_on_cpu_is_close(models, batch):
    ckpt, _ = models
    res = Resolution(BackendKind.TORCH, DeviceKind.CPU, "test")
    fp32 = create_backend(ckpt, res, BackendOptions(intra_op_threads=1)).predict(batch)
    bf16_b = create_backend(ckpt, res, BackendOptions(intra_op_threads=1, amp=True))
    assert "autocast bfloat16" in bf16_b.description
    bf16 = bf16_b.predict(batch)
    # bf16 keeps 8 mantissa bits (~0.4% relative) and errors add over 18 layers:
    # 0.1 absolute on logits of magnitude ~1 is loose but catches a wrong model/layout.
    np.testing.assert_allclose(bf16, fp32, atol=0.1, rtol=0)


def test_predictor_columnar_call_one_row_per_path(models, tmp_path):
    _, onnx_path = models
    imgs = modelgen.write_images(tmp_path / "in", 3)
    missing = tmp_path / "in" / "gone.png"
    pred = Predictor(onnx_path, options=BackendOptions(intra_op_threads=1))
    out = pred({"path": np.array([str(p) for p in imgs] + [str(missing)], dtype=object)})
    assert set(out) == set(COLUMNS)
    assert list(out["status"]) == ["ok", "ok", "ok", "error"]
    assert "not found" in out["error"][3]
    probs = np.array(out["prob_fractured"][:3], dtype=np.float32)
    assert np.all((probs >= 0) & (probs <= 1))
    assert all(s == pred.model_sha256 for s in out["model_sha256"])


def test_predictor_splits_batches_above_max_batch(models):
    _, onnx_path = models
    pred = Predictor(onnx_path, options=BackendOptions(intra_op_threads=1))
    x = np.zeros((5, 3, modelgen.INPUT_SIZE, modelgen.INPUT_SIZE), np.float32)
    full, _ = pred.predict_array(x)
    pred.backend.max_batch = 2  # a fixed-profile engine would take at most 2
    split, labels = pred.predict_array(x)
    np.testing.assert_allclose(split, full, atol=1e-6)
    assert len(labels) == 5


@pytest.mark.gpu
def test_onnxruntime_cuda_provider(models, batch):
    _, onnx_path = models
    r = resolve_backend(onnx_path, device="cuda")
    b = create_backend(onnx_path, r)
    assert b.predict(batch).shape == (3, 2)


@pytest.mark.gpu
def test_torch_cuda_fp16(models, batch):
    ckpt, _ = models
    b = create_backend(ckpt, resolve_backend(ckpt, device="cuda"), BackendOptions(amp=True))
    ref = create_backend(ckpt, resolve_backend(ckpt, device="cpu")).predict(batch)
    # fp16 (10 mantissa bits) over 18 layers: 0.05 on logits of size ~1.
    np.testing.assert_allclose(b.predict(batch), ref, atol=0.05)


def test_tensorrt_adapter_contract_with_a_stand_in_engine(monkeypatch):
    """The adapter's own logic (no GPU here): load via export's load_engine, host logits out,
    any engine load failure (wrong GPU/TensorRT, bad sidecar) becomes a fatal BackendError."""
    import sys
    import types

    from fracture_batch.backends import tensorrt_backend

    spec = modelgen.tiny_spec()

    class StandIn:
        max_batch, description = 4, "stand-in engine"

        def __init__(self, path, device_id=0):
            if "wrong_gpu" in str(path):
                raise RuntimeError("engine built for another GPU; rebuild it")
            self.spec = spec

        def run(self, x):
            return np.ones((len(x), 2), np.float64)

    fake = types.ModuleType("fracture_batch.backends.tensorrt_engine")
    fake.load_engine = StandIn
    monkeypatch.setitem(sys.modules, "fracture_batch.backends.tensorrt_engine", fake)
    # Once the real runner was imported (tests of its bindings), the package attribute wins
    # over sys.modules in `from fracture_batch.backends import tensorrt_engine`: replace both.
    import fracture_batch.backends as backends_pkg

    monkeypatch.setattr(backends_pkg, "tensorrt_engine", fake, raising=False)
    monkeypatch.setattr(tensorrt_backend, "has_tensorrt", lambda: (True, "tensorrt (stand-in)"))
    b = tensorrt_backend.TensorRTBackend("m.plan", DeviceKind.CUDA, BackendOptions())
    out = b.predict(np.zeros((3, 3, spec.input_size, spec.input_size), np.float32))
    assert out.dtype == np.float32 and out.shape == (3, 2) and b.max_batch == 4
    with pytest.raises(BackendError, match="cannot load TensorRT engine .*another GPU"):
        tensorrt_backend.TensorRTBackend("wrong_gpu.plan", DeviceKind.CUDA, BackendOptions())
    with pytest.raises(BackendError, match="CUDA GPU only"):
        tensorrt_backend.TensorRTBackend("m.plan", DeviceKind.CPU, BackendOptions())


@pytest.mark.gpu
def test_tensorrt_backend_matches_onnxruntime_and_scores(models, batch, tmp_path):
    pytest.importorskip("tensorrt", reason="tensorrt not installed: pip install 'fracture-batch[gpu]'")
    from export.tensorrt_build import BuildSettings, build_engine

    _, onnx_path = models
    ref = create_backend(onnx_path, resolve_backend(onnx_path, device="cpu"))
    plan = tmp_path / "model.plan"
    build_engine(onnx_path, plan, ref.spec, "fp32", BuildSettings(max_batch=4))
    r = resolve_backend(plan)
    assert r.backend is BackendKind.TENSORRT and r.device is DeviceKind.CUDA
    trt_b = create_backend(plan, r)
    # fp32 engine (TF32 may be on for convolutions: ~1e-3 relative): 1e-2 on logits of size ~1.
    np.testing.assert_allclose(trt_b.predict(batch), ref.predict(batch), atol=1e-2)
