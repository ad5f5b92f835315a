"""The CUDA 13 stack check behind `fracture-batch info`: what is missing, and the one command."""
from __future__ import annotations

from fracture_batch.gpu_stack import GPU_EXTRA_COMMAND, ORT_CONFLICT_COMMAND, fix_command, gpu_stack

COMPLETE = {
    "torch": "2.14.1", "tensorrt-cu13": "11.4.0.106", "tensorrt-cu13-libs": "11.4.0.106",
    "nvidia-dali-cuda130": "2.4.0", "nvidia-nvimgcodec-cu13": "0.9.0.20", "nvidia-nvjpeg": "13.3.2.43",
    "nvidia-nvjpeg2k-cu13": "0.11.0.51", "nvidia-nvtiff-cu13": "0.8.0.82", "onnxruntime": "1.32.0",
}


def _missing(items):
    return [i.name for i in items if not i.ok]


def test_complete_stack_needs_nothing():
    items = gpu_stack(COMPLETE, "13.0")
    assert _missing(items) == [] and fix_command(items) == ""


def test_missing_tensorrt_is_named_with_the_extra():
    versions = {k: v for k, v in COMPLETE.items() if not k.startswith("tensorrt")}
    items = gpu_stack(versions, "13.0")
    assert _missing(items) == ["TensorRT >= 10.12 for CUDA 13"]
    assert fix_command(items) == GPU_EXTRA_COMMAND


def test_old_or_cuda12_tensorrt_is_wrong():
    old = {**COMPLETE, "tensorrt-cu13": "10.8.0", "tensorrt-cu13-libs": "10.8.0"}
    assert "older than 10.12" in next(i.detail for i in gpu_stack(old, "13.0") if not i.ok)
    cu12 = {k: v for k, v in COMPLETE.items() if not k.startswith("tensorrt")} | {"tensorrt-cu12": "10.13.0"}
    item = next(i for i in gpu_stack(cu12, "13.0") if not i.ok)
    assert "CUDA 12 build" in item.detail and item.fix.endswith(GPU_EXTRA_COMMAND) and "uninstall" in item.fix


def test_cpu_only_or_cuda12_torch_needs_a_reinstall():
    for cuda, words in ((None, "CPU-only"), ("12.8", "CUDA 12.8")):
        items = gpu_stack(COMPLETE, cuda)
        (bad,) = [i for i in items if not i.ok]
        assert words in bad.detail and "torch>=2.14" in bad.fix


def test_two_onnxruntime_builds_are_a_conflict_with_its_fix():
    items = gpu_stack({**COMPLETE, "onnxruntime-gpu": "1.31.1"}, "13.0")
    assert _missing(items) == ["one onnxruntime build"]
    assert fix_command(items) == ORT_CONFLICT_COMMAND


def test_nvimgcodec_names_each_missing_codec_and_fixes_are_joined_once():
    versions = {k: v for k, v in COMPLETE.items()
                if k not in ("nvidia-nvjpeg2k-cu13", "tensorrt-cu13", "tensorrt-cu13-libs")}
    items = gpu_stack(versions, "13.0")
    codec = next(i for i in items if i.name.startswith("nvImageCodec"))
    assert not codec.ok and codec.detail == "missing: nvJPEG2000"
    # Two parts fixed by the same extra: the command appears once.
    assert fix_command(items) == GPU_EXTRA_COMMAND


def test_info_prints_the_stack_and_the_command():
    from click.testing import CliRunner

    from fracture_batch.cli.info_cmd import info
    from fracture_batch.gpu_stack import probe

    out = CliRunner().invoke(info, []).output
    assert "gpu stack (CUDA 13):" in out
    fix = fix_command(probe())
    assert (f"add it:  {fix}" in out) if fix else ("complete:" in out)
