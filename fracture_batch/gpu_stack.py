"""The CUDA 13 GPU stack this project is built for, and what is missing from it here.

One install adds it: ``pip install 'fracture-batch[gpu]'`` (pyproject's ``gpu`` extra):
torch's Linux wheels on PyPI (2.14: CUDA 13.0 builds), TensorRT for CUDA 13
(``tensorrt-cu13`` >= 10.12; 11.x today), NVIDIA DALI for CUDA 13 and nvImageCodec for
CUDA 13 with nvJPEG, nvJPEG2000 and nvTIFF. onnxruntime stays the CPU package: the GPU
build (``onnxruntime-gpu``) writes the same ``onnxruntime/`` folder, pip cannot drop a
core dependency for an extra, and its TensorRT provider links TensorRT 10
(``libnvinfer.so.10``) where this stack has 11; see the README's GPU section.

``gpu_stack(versions, torch_cuda)`` is pure (the tests feed it versions), ``probe()``
reads this environment. Imports nothing from the package.
"""
from __future__ import annotations

from dataclasses import dataclass

GPU_EXTRA_COMMAND = "pip install 'fracture-batch[gpu]'"
ORT_CONFLICT_COMMAND = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime"
MIN_TENSORRT = (10, 12)
DISTRIBUTIONS = (
    "torch", "tensorrt", "tensorrt-cu13", "tensorrt-cu13-libs", "tensorrt-cu13-bindings", "tensorrt-cu12",
    "tensorrt-cu12-libs", "nvidia-dali-cuda130", "nvidia-dali-cuda120", "nvidia-nvimgcodec-cu13",
    "nvidia-nvjpeg2k-cu13", "nvidia-nvjpeg", "nvidia-nvtiff-cu13", "onnxruntime", "onnxruntime-gpu",
)


@dataclass(frozen=True)
class StackItem:
    name: str
    ok: bool
    detail: str  # the version found, or exactly what is wrong
    fix: str = ""  # the one command that fixes it ('' when ok)


def _major_minor(version: str) -> tuple[int, ...]:
    parts = []
    for p in version.split(".")[:2]:
        digits = "".join(ch for ch in p if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def gpu_stack(versions: dict[str, str], torch_cuda: str | None) -> list[StackItem]:
    """Each part of the CUDA 13 stack: present and right, or what is wrong and its fix."""
    v = versions.get
    items = []
    if not v("torch"):
        items.append(StackItem("torch (CUDA 13 build)", False, "torch is not installed", GPU_EXTRA_COMMAND))
    elif not torch_cuda:
        items.append(StackItem("torch (CUDA 13 build)", False, f"torch {v('torch')} is a CPU-only build",
                               "pip install --force-reinstall 'torch>=2.14'"))
    elif _major_minor(torch_cuda)[:1] != (13,):
        items.append(StackItem("torch (CUDA 13 build)", False, f"torch {v('torch')} is built for CUDA {torch_cuda}",
                               "pip install --force-reinstall 'torch>=2.14'"))
    else:
        items.append(StackItem("torch (CUDA 13 build)", True, f"torch {v('torch')}, CUDA {torch_cuda}"))

    trt13 = v("tensorrt-cu13-libs") or v("tensorrt-cu13")
    if trt13 and _major_minor(trt13) >= MIN_TENSORRT:
        items.append(StackItem("TensorRT >= 10.12 for CUDA 13", True, f"tensorrt-cu13 {trt13}"))
    elif trt13:
        items.append(StackItem("TensorRT >= 10.12 for CUDA 13", False, f"tensorrt-cu13 {trt13} is older than 10.12",
                               GPU_EXTRA_COMMAND))
    elif v("tensorrt-cu12-libs") or v("tensorrt-cu12"):
        items.append(StackItem("TensorRT >= 10.12 for CUDA 13", False,
                               f"tensorrt-cu12 {v('tensorrt-cu12-libs') or v('tensorrt-cu12')} is the CUDA 12 build",
                               "pip uninstall -y tensorrt tensorrt-cu12 tensorrt-cu12-libs tensorrt-cu12-bindings && "
                               + GPU_EXTRA_COMMAND))
    else:
        items.append(StackItem("TensorRT >= 10.12 for CUDA 13", False, "not installed", GPU_EXTRA_COMMAND))

    dali = v("nvidia-dali-cuda130")
    items.append(StackItem("NVIDIA DALI for CUDA 13", bool(dali) and _major_minor(dali) >= (2, 0),
                           f"nvidia-dali-cuda130 {dali}" if dali else "not installed",
                           "" if dali and _major_minor(dali) >= (2, 0) else GPU_EXTRA_COMMAND))

    codec = [("nvidia-nvimgcodec-cu13", "nvImageCodec"), ("nvidia-nvjpeg", "nvJPEG"),
             ("nvidia-nvjpeg2k-cu13", "nvJPEG2000"), ("nvidia-nvtiff-cu13", "nvTIFF")]
    missing = [label for dist, label in codec if not v(dist)]
    items.append(StackItem("nvImageCodec for CUDA 13 (nvJPEG, nvJPEG2000, nvTIFF)", not missing,
                           "missing: " + ", ".join(missing) if missing else
                           ", ".join(f"{d} {v(d)}" for d, _ in codec), GPU_EXTRA_COMMAND if missing else ""))

    both = v("onnxruntime") and v("onnxruntime-gpu")
    items.append(StackItem(
        "one onnxruntime build", not both,
        f"onnxruntime {v('onnxruntime')} and onnxruntime-gpu {v('onnxruntime-gpu')} both write onnxruntime/ "
        "(the last installed wins)" if both else
        f"onnxruntime-gpu {v('onnxruntime-gpu')} (GPU environment, see the README)" if v("onnxruntime-gpu") else
        f"onnxruntime {v('onnxruntime') or 'missing'} (CPU provider; GPU inference via TensorRT and torch)",
        ORT_CONFLICT_COMMAND if both else ""))
    return items


def fix_command(items: list[StackItem]) -> str:
    """The one command line that adds everything missing ('' when nothing is)."""
    fixes: list[str] = []
    for it in items:
        if not it.ok and it.fix and it.fix not in fixes:
            fixes.append(it.fix)
    return " && ".join(fixes)


def probe() -> list[StackItem]:
    from fracture_batch.machine import package_versions

    versions = package_versions(DISTRIBUTIONS)
    try:
        import torch

        torch_cuda = torch.version.cuda
    except Exception:
        torch_cuda = None
    return gpu_stack(versions, torch_cuda)
