"""Fast export checks without a full export: external-data safety, engine sidecars,
the TensorRT-less ``--tensorrt`` path, CLI options. GPU paths are marked ``gpu``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fracture_batch.model.sidecar import (
    EngineIncompatibleError,
    EngineSidecar,
    GpuInfo,
    check_engine_compatible,
    check_engine_file,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)
from fracture_batch.model.onnx_meta import OnnxModelError, check_external_data_safe, read_spec_from_onnx
from fracture_batch.model.spec import ModelSpec


# ---- external data must stay inside the model's folder (issue 7) -----------------
def _model_with_external(folder: Path, location: str, write_to: Path | None = None) -> Path:
    """A one-initializer ONNX file whose weight lives in external data at ``location``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    weight.ClearField("raw_data")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [weight],
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save_model(helper.make_model(graph), str(path))
    if write_to is not None:
        write_to.parent.mkdir(parents=True, exist_ok=True)
        write_to.write_bytes(np.arange(4, dtype=np.float32).tobytes())
    return path


def test_external_data_inside_folder_is_accepted(tmp_path):
    path = _model_with_external(tmp_path / "m", "weights/w.bin", write_to=tmp_path / "m" / "weights" / "w.bin")
    assert check_external_data_safe(path) == [(tmp_path / "m" / "weights" / "w.bin").resolve()]


@pytest.mark.parametrize("location", ["../secret.bin", "weights/../../secret.bin", "/etc/passwd"])
def test_external_data_escaping_the_folder_is_refused(tmp_path, location):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 16)
    path = _model_with_external(tmp_path / "m", location)
    with pytest.raises(OnnxModelError, match="outside|absolute"):
        check_external_data_safe(path)


def test_external_data_symlink_escaping_is_refused(tmp_path):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 16)
    path = _model_with_external(tmp_path / "m", "w.bin")
    (tmp_path / "m" / "w.bin").symlink_to(tmp_path / "secret.bin")
    with pytest.raises(OnnxModelError, match="outside"):
        check_external_data_safe(path)


def test_missing_external_data_and_missing_spec_are_clear(tmp_path):
    path = _model_with_external(tmp_path / "m", "w.bin")
    with pytest.raises(OnnxModelError, match="missing"):
        check_external_data_safe(path)
    with pytest.raises(OnnxModelError, match="not exported by fracture-batch"):
        read_spec_from_onnx(path)


# ---- engine sidecars ----------------------------------------------------------------
def _sidecar(**changes) -> EngineSidecar:
    base = dict(
        tensorrt_version="10.13.0.35", gpu_name="NVIDIA L4", compute_capability="8.9",
        onnx_file="model.int8.trt.onnx", onnx_sha256="ab" * 32, engine_sha256="cd" * 32, precision="int8",
        min_batch=1, opt_batch=16, max_batch=32, input_name="input", output_name="logits",
        spec=ModelSpec(arch="resnet18", input_size=64).to_dict(),
    )
    base.update(changes)
    return EngineSidecar(**base)


def test_sidecar_round_trip_and_matching_machine_passes(tmp_path):
    engine = tmp_path / "model.int8.plan"
    write_sidecar(engine, _sidecar())
    assert sidecar_path(engine).name == "model.int8.plan.json"
    back = read_sidecar(engine)
    assert back == _sidecar() and back.model_spec.input_size == 64
    check_engine_compatible(back, "10.13.0.35", GpuInfo("NVIDIA L4", "8.9"))  # no error


@pytest.mark.parametrize(
    "trt_version, gpu, expected",
    [
        ("10.14.1.2", GpuInfo("NVIDIA L4", "8.9"), "TensorRT 10.13.0.35 \\(this machine has 10.14.1.2\\)"),
        ("10.13.0.35", GpuInfo("NVIDIA A100-SXM4-40GB", "8.0"), "GPU NVIDIA L4 \\(sm 8.9\\); this machine has NVIDIA A100"),
    ],
)
def test_mismatched_engine_says_what_differs_and_to_rebuild(trt_version, gpu, expected):
    with pytest.raises(EngineIncompatibleError, match=expected) as info:
        check_engine_compatible(_sidecar(), trt_version, gpu)
    assert "Rebuild the engine on this machine: fracture-batch export model.pt --out DIR --tensorrt --precision int8" in str(info.value)


def test_missing_or_foreign_sidecar_is_refused(tmp_path):
    engine = tmp_path / "model.fp16.plan"
    engine.write_bytes(b"plan")
    with pytest.raises(EngineIncompatibleError, match="no sidecar"):
        read_sidecar(engine)
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(EngineIncompatibleError, match="unreadable"):
        read_sidecar(engine)
    with pytest.raises(EngineIncompatibleError, match="does not match its sidecar"):
        check_engine_file(engine, _sidecar(), "ef" * 32)


# ---- CLI ------------------------------------------------------------------------------
def _run(args):
    from fracture_batch.cli import main

    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_export_help_documents_every_option():
    result = _run(["export", "--help"])
    assert result.exit_code == 0
    for option in ("--out", "--precision", "--calib-dir", "--calib-n", "--tensorrt", "--max-batch", "--data-dir"):
        assert option in result.output


def test_bad_precision_and_missing_images_are_usage_errors(tmp_path):
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"never loaded: options are checked first")
    assert _run(["export", str(ckpt), "--out", str(tmp_path / "o"), "--precision", "fp32,int4"]).exit_code == 2
    result = _run(["export", str(ckpt), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--data-dir" in result.output


@pytest.mark.parametrize("error, code", [("tensorrt", 3), ("parity", 1)])
def test_cli_exit_codes_and_one_error_line(tmp_path, monkeypatch, error, code):
    """The CLI's mapping of export failures. The real TensorRT-less export (ONNX files
    written first, then TensorRTUnavailable) is exercised in test_export.py."""
    import export
    from export.parity import ParityError
    from export.tensorrt_build import TensorRTUnavailable

    def fake_export(config):
        if error == "tensorrt":
            raise TensorRTUnavailable("TensorRT is not installed (ModuleNotFoundError); install the GPU extra")
        raise ParityError("parity bar missed by int8 (agreement 97.00% < 99%)")

    monkeypatch.setattr(export, "export_model", fake_export)
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"x")
    result = _run(["export", str(ckpt), "--out", str(tmp_path / "o"), "--calib-dir", str(tmp_path), "--tensorrt"])
    assert result.exit_code == code
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and ("TensorRT" in errors[0] if error == "tensorrt" else "int8" in errors[0])


@pytest.mark.gpu
def test_tensorrt_engine_build_and_parity(tmp_path):
    """GPU host: build an fp16 engine, load it through the sidecar check, compare with onnxruntime."""
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install 'fracture-batch[gpu]')")
    from export.onnx_export import stamp_and_check
    from export.fp16 import export_fp16
    from export.parity import onnx_logits
    from export.tensorrt_build import BuildSettings, build_engine
    from fracture_batch.backends.tensorrt_engine import load_engine
    from fracture_batch.model.checkpoint import create_model

    spec = ModelSpec(arch="resnet18", input_size=64)
    onnx_path = tmp_path / "model.fp16.onnx"
    export_fp16(create_model("resnet18", 2).eval(), spec, onnx_path, opset=18)
    stamp_and_check(onnx_path, spec, "fp16")
    engine_path = tmp_path / "model.fp16.plan"
    cache = tmp_path / "timing.cache"
    build_engine(onnx_path, engine_path, spec, "fp16", BuildSettings(max_batch=8, workspace_bytes=1 << 30, timing_cache=cache))
    assert cache.is_file() and sidecar_path(engine_path).is_file()
    x = np.random.default_rng(0).standard_normal((5, 3, 64, 64)).astype(np.float32)
    engine = load_engine(engine_path)
    got = engine.run(x).cpu().numpy()
    want = onnx_logits(onnx_path, x)
    assert np.abs(got - want).max() < 5e-2  # fp16 kernels vs ORT's fp32 compute on fp16 weights


def test_ctx_invoke_from_another_command_gets_parsed_options(tmp_path, monkeypatch):
    """`demo` calls export through ctx.invoke, which skips option callbacks and defaults' parsing."""
    import click

    import export
    from fracture_batch.cli.export_cmd import export as export_cmd

    seen = {}

    def fake_export(config):
        seen["config"] = config
        raise export.ParityError("stop here")

    monkeypatch.setattr(export, "export_model", fake_export)
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"x")

    @click.command()
    @click.pass_context
    def caller(ctx):
        ctx.invoke(export_cmd, checkpoint=ckpt, out_dir=tmp_path / "o", precisions="fp32,int8", data_dir=tmp_path)

    CliRunner().invoke(caller, [])
    assert [p.value for p in seen["config"].precisions] == ["fp32", "int8"]
    assert seen["config"].calib_n == 128 and seen["config"].max_batch == 32  # defaults filled in


def _pngs(folder: Path, n: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((8, 8), 40 * (i % 6), np.uint8)).save(folder / f"{i:02d}.png")


def test_calib_dir_alone_is_split_into_disjoint_parts(tmp_path):
    from export.config import ExportConfig
    from export.images import resolve_image_sets

    _pngs(tmp_path / "imgs" / "fractured", 5)
    _pngs(tmp_path / "imgs" / "misc", 5)  # not a class name: label unknown
    config = ExportConfig(checkpoint=tmp_path / "m.pt", out_dir=tmp_path / "o", calib_dir=tmp_path / "imgs", calib_n=8)
    calib, held = resolve_image_sets(config, ModelSpec())
    assert len(calib) == 5 and len(held) == 5  # calibration never takes more than half
    assert not set(calib.paths) & set(held.paths)
    assert not held.labelled  # parity still runs; ROC AUC is reported as n/a


def test_data_dir_without_val_calibrates_on_train_and_checks_on_test(tmp_path):
    from export.config import ExportConfig
    from export.images import resolve_image_sets

    for split in ("train", "test"):
        for cls in ("fractured", "not_fractured"):
            _pngs(tmp_path / "data" / split / cls, 3)
    config = ExportConfig(checkpoint=tmp_path / "m.pt", out_dir=tmp_path / "o", data_dir=tmp_path / "data")
    calib, held = resolve_image_sets(config, ModelSpec())
    assert all("/train/" in str(p) for p in calib.paths) and all("/test/" in str(p) for p in held.paths)
    assert held.labelled and sorted(held.labels) == [0, 0, 0, 1, 1, 1]


def test_engine_profile_and_timing_cache_defaults(tmp_path, monkeypatch):
    from export.tensorrt_build import default_timing_cache, optimisation_batches

    # opt = the batch the scorer feeds (its default 32 = --max-batch), not mid-range (issue 14).
    assert optimisation_batches(32) == (1, 32, 32) and optimisation_batches(1) == (1, 1, 1)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    a = default_timing_cache(GpuInfo("NVIDIA L4", "8.9"), "10.13.0.35")
    b = default_timing_cache(GpuInfo("NVIDIA A100-SXM4-40GB", "8.0"), "10.13.0.35")
    assert a.parent == tmp_path / "fracture-batch" and a != b  # shared across builds, not across GPUs
