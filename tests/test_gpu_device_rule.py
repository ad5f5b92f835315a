"""The device side of the auto rule, on CPU: provider *loadability*, the one fallback warning,
--device cuda failing before any input is read, the CPU-only int8 file kept off the GPU,
the TensorRT EP's explicit profile and the device id reaching every GPU call.

The GPU is faked only where the rule asks "is there a GPU / does the provider load"; the
real onnxruntime here (a CPU build) answers the probe itself in one test, and the real
onnxruntime-gpu wheel on a GPU-less machine is the case the fake reproduces: the provider
is listed by get_available_providers() but a session asked for it runs on the CPU.
"""
from __future__ import annotations

import logging
import shutil
import sys
import types

import onnx
import pytest

import fracture_batch.backends as backends
from fracture_batch.backends import BackendError, BackendKind, BackendOptions, DeviceKind, resolve_backend
from fracture_batch.backends import onnxruntime_backend as ortb
from fracture_batch.model.onnx_meta import VARIANT_METADATA_KEY


@pytest.fixture
def gpu(monkeypatch):
    """A CUDA GPU 'present' for the rule; ``status`` decides what onnxruntime can load."""
    calls = []
    state = {"CUDAExecutionProvider": (True, "CUDAExecutionProvider loads"),
             "TensorrtExecutionProvider": (False, "TensorrtExecutionProvider is compiled in but did not load")}

    def has_cuda(device_id=0):
        calls.append(("has_cuda", device_id))
        return True, f"CUDA GPU Fake (cuda:{device_id})"

    def status(provider, device_id=0):
        calls.append((provider, device_id))
        return state[provider]

    monkeypatch.setattr(backends, "has_cuda", has_cuda)
    monkeypatch.setattr(backends, "gpu_present", lambda: True)
    monkeypatch.setattr(ortb, "provider_status", status)
    return types.SimpleNamespace(state=state, calls=calls)


def _variant_copy(src, dst, variant):
    m = onnx.load(str(src))
    props = {p.key: p.value for p in m.metadata_props}
    props[VARIANT_METADATA_KEY] = variant
    del m.metadata_props[:]
    for k, v in props.items():
        e = m.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(m, str(dst))
    return dst


def _warnings(caplog):
    return [r for r in caplog.records if r.levelno == logging.WARNING]


def test_probe_with_this_cpu_onnxruntime_says_the_build_has_no_cuda_provider():
    ortb.provider_status.cache_clear()
    ok, why = ortb.provider_status("CUDAExecutionProvider")
    assert not ok and "has no CUDAExecutionProvider" in why


def test_probe_sees_a_listed_provider_that_does_not_load(monkeypatch):
    """onnxruntime-gpu on a machine without driver/GPU: listed, and the session falls back."""
    started = {}

    class Session:
        def __init__(self, model, sess_options=None, providers=()):
            started["providers"] = providers

        def get_providers(self):
            return ["CPUExecutionProvider"]

    fake = types.SimpleNamespace(
        __version__="1.31.1", SessionOptions=lambda: types.SimpleNamespace(log_severity_level=2),
        InferenceSession=Session,
        get_available_providers=lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    ortb.provider_status.cache_clear()
    try:
        ok, why = ortb.provider_status("CUDAExecutionProvider", 1)
        assert not ok and "compiled into onnxruntime 1.31.1 but did not load" in why
        assert started["providers"][0] == ("CUDAExecutionProvider", {"device_id": "1"})
        Session.get_providers = lambda self: ["CUDAExecutionProvider", "CPUExecutionProvider"]
        ortb.provider_status.cache_clear()
        assert ortb.provider_status("CUDAExecutionProvider", 1)[0]
    finally:
        ortb.provider_status.cache_clear()


def test_auto_falls_back_to_cpu_with_one_warning_when_the_provider_does_not_load(models, gpu, caplog):
    _, onnx_path = models
    gpu.state["CUDAExecutionProvider"] = (False, "CUDAExecutionProvider is compiled in but did not load")
    with caplog.at_level(logging.WARNING):
        r = resolve_backend(onnx_path)
    assert r.device is DeviceKind.CPU and r.model_path == onnx_path
    (w,) = _warnings(caplog)
    assert "a GPU is present" in w.getMessage() and "did not load" in w.getMessage()


def test_auto_on_a_cpu_machine_is_quiet(models, monkeypatch, caplog):
    _, onnx_path = models
    monkeypatch.setattr(backends, "gpu_present", lambda: False)
    with caplog.at_level(logging.WARNING):
        r = resolve_backend(onnx_path)  # the real CPU onnxruntime here: no CUDA provider, no GPU
    assert r.device is DeviceKind.CPU and "no GPU here" in r.reason and not _warnings(caplog)


def test_explicit_cuda_that_cannot_run_is_fatal_here(models, gpu, monkeypatch):
    ckpt, onnx_path = models
    gpu.state["CUDAExecutionProvider"] = (False, "this onnxruntime build (1.32.0) has no CUDAExecutionProvider")
    with pytest.raises(BackendError, match="--device cuda: this onnxruntime build"):
        resolve_backend(onnx_path, device="cuda")
    monkeypatch.setattr(backends, "has_cuda", lambda device_id=0: (False, "no CUDA GPU visible to torch"))
    with pytest.raises(BackendError, match="--device cuda: no CUDA GPU"):
        resolve_backend(ckpt, device="cuda")


def test_device_cuda_stops_the_run_before_any_input_is_read(models, tmp_path, monkeypatch):
    """The real scorer on this GPU-less machine: BackendError, no decode, no part written."""
    from fracture_batch.decode import workers
    from fracture_batch.scoring.config import ScoreConfig
    from fracture_batch.scoring.local import score

    from PIL import Image

    from support.imagegen import ramp

    _, onnx_path = models
    (tmp_path / "in").mkdir()
    Image.fromarray(ramp()).save(tmp_path / "in" / "a.png")
    decoded = []
    monkeypatch.setattr(workers, "decode_one", lambda *a, **k: decoded.append(a) or None)
    with pytest.raises(BackendError, match="--device cuda"):  # the real CPU onnxruntime: no CUDA provider
        score(ScoreConfig(inputs=(str(tmp_path / "in"),), model=str(onnx_path), out=str(tmp_path / "out"),
                          device="cuda"))
    assert decoded == [] and not list((tmp_path / "out").rglob("*.parquet"))


def test_cpu_int8_file_goes_to_its_symmetric_sibling_on_cuda(models, gpu, tmp_path, caplog):
    _, onnx_path = models
    cpu_int8 = _variant_copy(onnx_path, tmp_path / "model.int8.onnx", "int8")
    with caplog.at_level(logging.WARNING):
        # Alone: TensorRT/CUDA providers would reject the uint8-asymmetric Q/DQ -> CPU, with the reason.
        r = resolve_backend(cpu_int8)
        assert r.device is DeviceKind.CPU and r.model_path == cpu_int8 and "CPU int8 flavour" in r.reason
        fp16 = _variant_copy(onnx_path, tmp_path / "model.fp16.onnx", "fp16")
        assert resolve_backend(cpu_int8).model_path == fp16  # fp16 when there is no int8.trt
        trt = _variant_copy(onnx_path, tmp_path / "model.int8.trt.onnx", "int8.trt")
        r = resolve_backend(cpu_int8)
    assert r.device is DeviceKind.CUDA and r.model_path == trt and "model.int8.trt.onnx" in r.reason
    assert len(_warnings(caplog)) == 3  # one per resolution: fallback, then two sibling choices
    with pytest.raises(BackendError, match="score .*model.int8.trt.onnx"):
        resolve_backend(cpu_int8, device="cuda")
    # The GPU files themselves go to CUDA unchanged.
    assert resolve_backend(trt).model_path == trt and resolve_backend(fp16).device is DeviceKind.CUDA


def test_variant_from_the_name_when_metadata_lacks_it(models, tmp_path):
    _, onnx_path = models
    bare = tmp_path / "model.int8.onnx"
    shutil.copy(onnx_path, bare)  # no variant tag (modelgen's file): the name decides
    assert backends.onnx_variant(bare) == "int8"
    assert backends.onnx_variant(tmp_path / "missing.int8.trt.onnx") == "int8.trt"
    # A tag in the metadata wins over the name.
    assert backends.onnx_variant(_variant_copy(onnx_path, tmp_path / "x.int8.onnx", "fp32")) == "fp32"


def test_device_id_reaches_the_rule_and_the_providers(models, gpu):
    ckpt, onnx_path = models
    resolve_backend(onnx_path, device_id=1)
    resolve_backend(ckpt, device_id=1)
    assert ("has_cuda", 1) in gpu.calls and ("CUDAExecutionProvider", 1) in gpu.calls  # torch .pt, onnxruntime .onnx
    assert all(c[1] == 1 for c in gpu.calls)
    gpu.state["TensorrtExecutionProvider"] = (True, "loads")
    profile = ortb.tensorrt_profile("input", 224, 32)
    providers = ortb.resolve_providers(DeviceKind.CUDA, BackendOptions(device_id=1), profile=profile, status=ortb.provider_status)
    (trt_name, trt), (cuda_name, cuda), cpu = providers
    assert (trt_name, cuda_name, cpu) == ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    assert trt["device_id"] == cuda["device_id"] == 1


def test_tensorrt_ep_profile_covers_the_last_partial_batch():
    p = ortb.tensorrt_profile("input", 224, 32)
    assert p == {"trt_profile_min_shapes": "input:1x3x224x224", "trt_profile_opt_shapes": "input:32x3x224x224",
                 "trt_profile_max_shapes": "input:32x3x224x224"}


def test_tensorrt_ep_is_left_out_when_it_does_not_load(gpu):
    providers = ortb.resolve_providers(DeviceKind.CUDA, BackendOptions(), status=ortb.provider_status)
    assert [p[0] if isinstance(p, tuple) else p for p in providers] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    gpu.state["CUDAExecutionProvider"] = (False, "did not load")
    with pytest.raises(BackendError, match="did not load"):
        ortb.resolve_providers(DeviceKind.CUDA, BackendOptions(), status=ortb.provider_status)


def test_torch_takes_the_gpu_in_auto(models, gpu):
    ckpt, _ = models
    r = resolve_backend(ckpt, BackendKind.TORCH)
    assert r.device is DeviceKind.CUDA and r.model_path == ckpt
