"""What this machine can do: CPU, memory, GPU/driver/CUDA, backends and decoders, with versions.

Each component is probed on its own and reported as ``Component(name, available,
version, detail)``; a missing one says why and how to install it. Probes never raise.
"""
from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

log = logging.getLogger(__name__)

CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")


@dataclass(frozen=True)
class Component:
    name: str
    available: bool
    version: str = ""
    detail: str = ""  # what it offers, or why it is missing and how to install it


def cpu_info() -> dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and ":" in line:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and ":" in line:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    from fracture_batch.runner_support import cpu_count

    info: dict[str, Any] = {
        "model": model,
        "usable_cores": cpu_count(),
        "logical_cpus": os.cpu_count(),
        "flags": {f: f in flags for f in CPU_FLAGS},
    }
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
        info["physical_cores"] = psutil.cpu_count(logical=False)
    except Exception:
        pass
    return info


def gpu_info() -> dict[str, Any]:
    out: dict[str, Any] = {"cuda_available": False}
    try:
        import torch

        out["torch_cuda_build"] = torch.version.cuda or "cpu-only build"
        if torch.cuda.is_available():
            out["cuda_available"] = True
            out["devices"] = [
                f"{torch.cuda.get_device_name(i)} (sm_{''.join(map(str, torch.cuda.get_device_capability(i)))})"
                for i in range(torch.cuda.device_count())
            ]
        else:
            out["reason"] = "torch sees no CUDA device"
    except Exception as exc:
        out["reason"] = f"torch not importable: {exc}"
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            r = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=10)
            out["nvidia_smi"] = r.stdout.strip() or r.stderr.strip()
        except Exception as exc:
            out["nvidia_smi"] = f"failed: {exc}"
    else:
        out["nvidia_smi"] = "not found (no NVIDIA driver installed)"
    return out


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def backend_components() -> list[Component]:
    comps = []
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
        detail = "providers: " + ", ".join(providers)
        if "CUDAExecutionProvider" not in providers:
            detail += "; no CUDA/TensorRT EP: pip install onnxruntime-gpu (replaces onnxruntime) on a GPU host"
        comps.append(Component("onnxruntime", True, ort.__version__, detail))
    except Exception as exc:
        comps.append(Component("onnxruntime", False, "", f"not importable ({exc}); pip install onnxruntime"))
    from fracture_batch.backends.tensorrt_backend import has_tensorrt

    ok, why = has_tensorrt()
    comps.append(Component("tensorrt", ok, _version("tensorrt") if ok else "", why))
    try:
        import torch

        cuda = "CUDA " + torch.version.cuda if torch.version.cuda else "CPU-only build"
        bf16 = "bf16 autocast on CPU" + ("" if torch.backends.mkldnn.is_available() else " (no oneDNN)")
        comps.append(Component("torch", True, torch.__version__, f"{cuda}; {bf16}"))
    except Exception as exc:
        comps.append(Component("torch", False, "", f"not importable ({exc})"))
    return comps


def decoder_components() -> list[Component]:
    from fracture_batch.decoders import has_dali

    ok, why = has_dali()
    comps = [Component("nvidia-dali", ok, _version("nvidia-dali-cuda130") if ok else "", why)]
    comps.append(Component("pillow", bool(_version("pillow")), _version("pillow"), "PNG, JPEG, TIFF, BMP"))
    comps.append(Component("tifffile", bool(_version("tifffile")), _version("tifffile"), "16-bit and odd TIFFs"))
    comps.append(_pydicom_component())
    return comps


def _pydicom_component() -> Component:
    try:
        import pydicom
        from pydicom.pixels.decoders.base import get_decoder  # pydicom 3
        from pydicom.uid import (
            DeflatedExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLosslessSV1,
            JPEGLSLossless, RLELossless,
        )
    except Exception as exc:
        return Component("pydicom", False, "", f"not importable ({exc}); pip install 'pydicom>=3.0.2'")
    syntaxes = {
        "JPEG baseline": JPEGBaseline8Bit, "JPEG extended": JPEGExtended12Bit, "JPEG lossless": JPEGLosslessSV1,
        "JPEG-LS": JPEGLSLossless, "JPEG 2000": JPEG2000Lossless, "RLE": RLELossless,
    }
    parts = []
    for label, uid in syntaxes.items():
        try:
            dec = get_decoder(uid)
            plugins = sorted(dec.available_plugins) if dec.is_available else []
        except Exception:
            plugins = []
        parts.append(f"{label}: {', '.join(plugins) if plugins else 'MISSING (pip install pylibjpeg pylibjpeg-openjpeg pylibjpeg-rle pyjpegls python-gdcm)'}")
    parts.append(f"deflate: built in ({DeflatedExplicitVRLittleEndian.name})")
    return Component("pydicom", True, pydicom.__version__, "; ".join(parts))


def other_components() -> list[Component]:
    comps = []
    for dist, what in (("pyarrow", "Parquet sink"), ("numpy", ""), ("ray", "scale-out (optional: pip install 'fracture-batch[ray]')")):
        v = _version(dist)
        comps.append(Component(dist, bool(v), v, what if v else f"not installed; {what or 'pip install ' + dist}"))
    return comps


def collect_info() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_info(),
        "gpu": gpu_info(),
        "backends": [asdict(c) for c in backend_components()],
        "decoders": [asdict(c) for c in decoder_components()],
        "other": [asdict(c) for c in other_components()],
    }
