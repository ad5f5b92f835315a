"""Export end to end on CPU: every variant written, checked, measured, described.

One full export (fp32, fp16, both int8 flavours) of a 64 px resnet18 with a fitted head
(see export_helpers) is shared by the tests of this module: ~25 s on 2 busy cores.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import numpy_helper
import pytest

from export import ExportConfig, ParityBars, ParityError, Precision, export_model
from export.config import Variant
from export.parity import onnx_logits, torch_logits
from export.quantize import input_range
from export.tensorrt_build import TensorRTUnavailable
from fracture_batch.model.checkpoint import load_checkpoint
from fracture_batch.model.onnx_meta import VARIANT_METADATA_KEY, read_metadata, read_spec_from_onnx
from support.export_helpers import make_export_fixture

# Bars for the fixture model. fp32/fp16 use the product's bars unchanged. The int8 bars
# are looser than the product's (99% agreement, |dAUC| <= 0.005, met by the trained
# ResNet50): the fixture has random conv features and a fitted linear head, is far more
# sensitive to int8 rounding than a trained network, and has several of its 60 test
# images within 0.05 of the threshold, so one flipped decision is already 98.3%.
TEST_BARS = ParityBars(int8_min_agreement=0.95, int8_max_auc_diff=0.01)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    ckpt, data = make_export_fixture(base)
    out = base / "out"
    # As after `fracture-batch train`: the run's config.json names the data; export finds
    # its test split without --data-dir.
    (ckpt.parent / "config.json").write_text(json.dumps({"data_dir": str(data)}))
    config = ExportConfig(checkpoint=ckpt, out_dir=out, bars=TEST_BARS, calib_n=24, tensorrt=True)
    try:
        report = export_model(config)
        trt_error = None
    except TensorRTUnavailable as exc:  # the CPU case: ONNX files are written first
        report, trt_error = exc.report, exc
    return ckpt, data, out, report, trt_error


def test_every_variant_written_and_passes_its_bar(exported):
    _, _, out, report, _ = exported
    names = {v.variant: v for v in report.variants}
    assert set(names) == {"fp32", "fp16", "int8", "int8.trt"}
    for v in report.variants:
        assert (out / Variant(v.variant).filename).is_file()
        assert v.passed, (v.variant, v.failures)
    assert names["fp32"].parity.max_abs_diff <= 1e-4
    assert names["fp16"].parity.max_abs_diff <= 1e-2
    # The fixture's probabilities are spread, so int8 really moves them (a constant
    # model would give ~0 here and test nothing).
    assert names["int8"].parity.max_abs_diff > 1e-3
    assert report.heldout["labelled"] and report.heldout["n"] == 60
    assert report.heldout["source"].startswith(str(exported[1] / "test"))
    assert report.calibration["source"] == str(exported[1] / "val")  # disjoint from test
    assert names["int8"].parity.auc_reference is not None


def test_fp16_is_measured_with_fp16_compute_and_typed_fp16(exported):
    _, _, _, report, _ = exported
    fp16 = next(v for v in report.variants if v.variant == "fp16")
    assert set(fp16.checks) == {"onnxruntime_cpu", "torch_cpu_fp16"}
    # Both measurements see half-precision rounding (fp32 parity is ~1e-6).
    assert all(c.max_abs_diff > 1e-6 for c in fp16.checks.values())
    assert fp16.details["float16_conv_gemm_nodes"] == fp16.details["conv_gemm_nodes"] > 0


def test_int8_flavours_have_the_qdq_form_each_runtime_needs(exported):
    _, _, _, report, _ = exported
    d = {v.variant: v.details for v in report.variants}
    assert d["int8"]["activation_dtypes"] == ["uint8"]
    assert d["int8.trt"]["activation_dtypes"] == ["int8"]
    assert d["int8.trt"]["activation_zero_points_all_zero"]
    assert d["int8.trt"]["int32_bias_dequantize_nodes"] == 0  # bias stays float for TensorRT
    assert d["int8"]["int32_bias_dequantize_nodes"] > 0  # onnxruntime's QLinearConv takes int32 bias
    for flavour in ("int8", "int8.trt"):
        assert d[flavour]["per_channel_weight_tensors"] >= 20  # resnet18: 20 convs + fc
        assert d[flavour]["weight_zero_points_all_zero"]
        assert d[flavour]["fp32_conv_gemm_nodes"] == []  # every Conv/Gemm runs in int8


def test_int8_image_range_comes_from_the_spec_not_from_calibration(exported):
    """Percentile calibration would saturate the brightest pixels (bone); the input's
    Q/DQ must span the exact range of normalised [0, 1] pixels."""
    ckpt, _, out, _, _ = exported
    _, spec = load_checkpoint(ckpt)
    lo, hi = input_range(spec)
    assert lo == pytest.approx(min((0 - m) / s for m, s in zip(spec.mean, spec.std)))
    for variant, qmax in ((Variant.INT8, 255), (Variant.INT8_TRT, 127)):
        graph = onnx.load(str(out / variant.filename)).graph
        inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        q = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == graph.input[0].name)
        scale, zp = float(inits[q.input[1]]), int(inits[q.input[2]])
        # The quantised grid reaches the top of the range (to rounding of the zero point).
        assert (qmax - zp) * scale == pytest.approx(hi, abs=2 * scale)
        if variant is Variant.INT8:
            assert -zp * scale == pytest.approx(lo, abs=2 * scale)


def test_files_carry_spec_and_pass_checker_with_dynamic_batch(exported):
    ckpt, _, out, _, _ = exported
    model, spec = load_checkpoint(ckpt)
    x = np.random.default_rng(0).standard_normal((3, 3, spec.input_size, spec.input_size)).astype(np.float32)
    for variant in Variant:
        path = out / variant.filename
        onnx.checker.check_model(str(path), full_check=True)
        assert read_spec_from_onnx(path) == spec
        assert read_metadata(path)[VARIANT_METADATA_KEY] == variant.value
        assert onnx_logits(path, x[:1]).shape == (1, 2)
        assert onnx_logits(path, x).shape == (3, 2)
    # fp32 parity on arbitrary inputs too, not only on the held-out images.
    diff = np.abs(onnx_logits(out / "model.onnx", x) - torch_logits(model, x)).max()
    assert diff < 1e-3  # logits of O(10); fp32 kernel reordering gives ~1e-5


def test_report_json_and_tensorrt_absent(exported):
    _, _, out, report, trt_error = exported
    data = json.loads((out / "export_report.json").read_text())
    assert data["passed"] is True
    assert [v["variant"] for v in data["variants"]] == ["fp32", "fp16", "int8", "int8.trt"]
    if trt_error is not None:
        assert data["tensorrt_skipped"] and "\n" not in str(trt_error)
        assert not list(out.glob("*.plan"))


def test_missed_bar_fails_loudly_and_still_writes_report(exported, tmp_path):
    ckpt, data, _, _, _ = exported
    impossible = ParityBars(fp32_max_abs=0.0)  # injected failure: no export can meet it
    config = ExportConfig(checkpoint=ckpt, out_dir=tmp_path, data_dir=data, precisions=(Precision.FP32,),
                          bars=impossible, parity_n=8)
    with pytest.raises(ParityError, match="fp32"):
        export_model(config)
    report = json.loads((tmp_path / "export_report.json").read_text())
    assert report["passed"] is False and report["variants"][0]["failures"]


def test_openvino_parity_recorded_for_auto(exported):
    """Where openvino is installed, export measures it like every variant (same held-out
    images, same bars) and records it for --backend auto."""
    from fracture_batch.backends.openvino_backend import cpu_has_bf16, has_openvino

    if not has_openvino()[0]:
        pytest.skip("openvino not installed: nothing to record (pip install 'fracture-batch[openvino]')")
    _, _, out, _, _ = exported
    doc = json.loads((out / "openvino_parity.json").read_text())
    assert set(doc["files"]) == {"model.onnx", "model.int8.onnx"}  # not TensorRT's int8.trt form
    want = {"f32", "bf16"} if cpu_has_bf16() else {"f32"}
    for name, entry in doc["files"].items():
        assert set(entry["precisions"]) == want
        f32 = entry["precisions"]["f32"]
        assert f32["passed"], (name, f32["failures"])
    assert doc["files"]["model.onnx"]["precisions"]["f32"]["parity"]["max_abs_diff"] <= 1e-4


def test_export_works_without_openvino(exported, tmp_path, monkeypatch):
    import sys

    ckpt, data, _, _, _ = exported
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed: import raises
    report = export_model(ExportConfig(checkpoint=ckpt, out_dir=tmp_path, data_dir=data,
                                       precisions=(Precision.FP32,), parity_n=8))
    assert report.passed and not (tmp_path / "openvino_parity.json").exists()
