"""DICOM on the device (issue 13, point 4): the same code on the CPU backends here
(torch CPU tensors, nvImageCodec's CPU decoders), compared with the pydicom path; the
CUDA parts are ``gpu``-marked and have a row in the GPU acceptance run."""
from __future__ import annotations

import numpy as np
import pytest

from fracture_batch.decode import decode_for_model
from fracture_batch.model.spec import ModelSpec, ResizeMode
from fracture_batch.synth.dicom_archive import DicomSyntax, generate_dicom_archive

gpu_dicom = pytest.importorskip("fracture_batch.decode.gpu_dicom")
if not gpu_dicom.has_nvimgcodec()[0]:
    pytest.skip(gpu_dicom.has_nvimgcodec()[1], allow_module_level=True)

# PIL resamples in float32 with its own summation order; the matrix products sum in
# another order: measured max 3e-6 on [0, 1] gray, i.e. ~1.5e-5 after /std.
TOL = 1e-4


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    # small: nvImageCodec's CPU JPEG 2000 decoder (OpenCV) is slow (~1 s per 5 MP)
    return generate_dicom_archive(tmp_path_factory.mktemp("devarch"), 2, shape=(150, 120), seed=5)


def test_resample_matrix_is_pils_resize():
    from PIL import Image

    g = np.random.default_rng(0).random((97, 61)).astype(np.float32)
    for box in ((0, 0, 61, 97), (3.5, 10.25, 50.0, 80.5)):
        want = np.asarray(Image.fromarray(g, "F").resize((24, 24), Image.Resampling.BILINEAR, box=box))
        wy = gpu_dicom.resample_matrix(97, 24, box[1], box[3])
        wx = gpu_dicom.resample_matrix(61, 24, box[0], box[2])
        np.testing.assert_allclose(wy @ (g @ wx.T), want, atol=1e-5)


@pytest.mark.parametrize("mode", [ResizeMode.SQUASH, ResizeMode.SHORTER_SIDE_CENTER_CROP])
def test_device_path_on_cpu_matches_pydicom(archive, mode):
    spec = ModelSpec(input_size=32, resize_size=40, resize_mode=mode)
    pre = gpu_dicom.DeviceDicomPreprocessor(spec, device="cpu")
    batch = pre.run([f.path for f in archive])
    assert batch.errors == [None] * len(archive)
    for f, got, path in zip(archive, batch.tensors.numpy(), batch.paths):
        want, _ = decode_for_model(f.path, spec, reduce=False)
        assert np.abs(got - want).max() < TOL, (f.syntax, path)
        # CPU backends: JPEG 2000 / HTJ2K through nvImageCodec (OpenCV); raw frames uploaded
        # as uint16; RLE / JPEG-LS / JPEG lossless decoded to stored values on the host.
        expect = {DicomSyntax.JPEG2000: "device", DicomSyntax.HTJ2K: "device",
                  DicomSyntax.EXPLICIT: "raw-upload"}.get(f.syntax, "host-decoded")
        assert path == expect, (f.syntax, path)
    assert batch.counts["device"] >= 2 and sum(batch.host_ms) > 0


def test_silent_failures_fall_back_to_the_cpu_decoder(archive, monkeypatch):
    import torch

    spec = ModelSpec(input_size=32)
    pre = gpu_dicom.DeviceDicomPreprocessor(spec, device="cpu")
    j2k = [f.path for f in archive if f.syntax is DicomSyntax.JPEG2000]
    real = pre._decode_streams
    # all-zero frames (nvJPEG lossless bug), None (a failed batch item), DALI-style rescale
    fakes = [lambda imgs: [torch.zeros_like(t) for t in imgs], lambda imgs: [None] * len(imgs),
             lambda imgs: [(t.to(torch.int32) * 16).to(torch.int32) for t in imgs]]
    for fake, reason in zip(fakes, ("all-zero", "decoder-returned-none", "values-above-bits-stored")):
        monkeypatch.setattr(pre, "_decode_streams", lambda s, fake=fake: fake(real(s)))
        batch = pre.run(j2k)
        assert batch.paths == [f"cpu:{reason}"] * len(j2k)
        for p, got in zip(j2k, batch.tensors.numpy()):
            want, _ = decode_for_model(p, spec, reduce=False)
            np.testing.assert_allclose(got, want, atol=1e-6)  # the CPU decoder's own result


def test_errors_stay_per_file(archive, tmp_path):
    spec = ModelSpec(input_size=32)
    good = next(f.path for f in archive if f.syntax is DicomSyntax.JPEG2000)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(good.read_bytes()[:1200])
    garbage = tmp_path / "x.dcm"
    garbage.write_bytes(b"not dicom" * 50)
    batch = gpu_dicom.DeviceDicomPreprocessor(spec, device="cpu").run([good, cut, garbage])
    assert batch.errors[0] is None and batch.errors[1] and batch.errors[2]
    assert batch.counts["errors"] == 2


def test_host_part_is_header_and_bytes_only(archive):
    f = next(f for f in archive if f.syntax is DicomSyntax.JPEG2000)
    frame = gpu_dicom.prepare(f.path)
    assert frame.stream[:4] == b"\xff\x4f\xff\x51" and frame.stored is None
    raw = gpu_dicom.prepare(next(f.path for f in archive if f.syntax is DicomSyntax.EXPLICIT))
    assert raw.stored.dtype == np.uint16 and raw.stream is None  # uploaded as stored values


@pytest.mark.gpu
def test_device_path_on_cuda_matches_pydicom(archive):
    import torch

    spec = ModelSpec(input_size=32)
    batch = gpu_dicom.DeviceDicomPreprocessor(spec, device="cuda").run([f.path for f in archive])
    assert batch.tensors.is_cuda and batch.errors == [None] * len(archive)
    for f, got in zip(archive, batch.tensors.cpu().numpy()):
        want, _ = decode_for_model(f.path, spec, reduce=False)
        # nvJPEG2000 / nvJPEG lossless are exact; the matrix products run in TF32 or FP32
        assert np.abs(got - want).max() < 1e-3, f.syntax
    assert torch.cuda.is_available()


def test_score_with_the_device_decoder_counts_paths_in_success(archive, tmp_path_factory, tmp_path):
    """``--decoder nvimgcodec`` end to end on the CPU backends: one ok row per file and
    the decode paths (device / raw-upload / host-decoded / cpu:<why>) in _SUCCESS."""
    import json
    import shutil

    from click.testing import CliRunner

    from fracture_batch.cli import main
    from support.modelgen import tiny_models

    _, onnx_path = tiny_models(tmp_path_factory)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for f in archive:
        shutil.copy(f.path, inputs / f.path.name)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["score", str(inputs), "--model", str(onnx_path), "--out", str(out),
                                    "--decoder", "nvimgcodec"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "_SUCCESS").read_text())
    summary = summary.get("summary", summary)
    assert summary["ok"] == len(archive) and summary["errors"] == 0
    paths = summary["decode_paths"]
    assert sum(v for k, v in paths.items() if k != "errors") == len(archive) and paths["device"] >= 2
