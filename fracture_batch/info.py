"""What this machine can do: CPU, memory, GPU/driver/CUDA, backends and decoders, with versions.

Each component is probed on its own and reported as ``Component(name, available,
version, detail)``; a missing one says why and how to install it. Probes never raise.
"""
from __future__ import annotations

import logging
import platform
import shutil
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

log = logging.getLogger(__name__)

# The flags `info` shows (a subset of machine.INTERESTING_FLAGS).
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")


@dataclass(frozen=True)
class Component:
    name: str
    available: bool
    version: str = ""
    detail: str = ""  # what it offers, or why it is missing and how to install it


def cpu_info() -> dict[str, Any]:
    """The CPU section of ``info``: ``machine.cpu_info`` (the one probe) in this report's words."""
    from fracture_batch import machine

    m = machine.cpu_info()
    return {
        "model": m["cpu_model"] or platform.processor() or platform.machine(),
        "usable_cores": m["cores_usable"],
        "logical_cpus": m["cores_logical"],
        "physical_cores": m["cores_physical"],
        "memory_gib": m["memory_gib"],
        "flags": {f: f in m["cpu_flags"] for f in CPU_FLAGS},
    }


def gpu_info() -> dict[str, Any]:
    """The GPU section of ``info``, from ``machine.gpu_info``."""
    from fracture_batch import machine

    g = machine.gpu_info()
    out: dict[str, Any] = {"cuda_available": bool(g.get("available")),
                           "torch_cuda_build": g.get("torch_cuda") or "cpu-only build"}
    if g.get("available"):
        out["devices"] = [f"{g['name']} (sm_{g['capability'].replace('.', '')})"] * int(g.get("count", 1))
    else:
        out["reason"] = f"torch not importable: {g['error']}" if g.get("error") else "torch sees no CUDA device"
    out["nvidia_smi"] = (f"driver {g['driver']}" if g.get("driver") else
                         "not found (no NVIDIA driver installed)" if not shutil.which("nvidia-smi") else "no answer")
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
            detail += "; CPU build: on a GPU, inference runs on the TensorRT and torch backends (README, GPU install)"
        comps.append(Component("onnxruntime", True, ort.__version__, detail))
    except Exception as exc:
        comps.append(Component("onnxruntime", False, "", f"not importable ({exc}); pip install onnxruntime"))
    from fracture_batch.backends.tensorrt_backend import has_tensorrt

    ok, why = has_tensorrt()
    comps.append(Component("tensorrt", ok, (_version("tensorrt-cu13") or _version("tensorrt")) if ok else "", why))
    from fracture_batch.backends.openvino_backend import cpu_has_bf16, has_openvino

    ok, why = has_openvino()
    detail = ("CPU; int8 Q/DQ files" + (", bf16 inference precision (AMX/AVX512-BF16)" if cpu_has_bf16() else "")
              if ok else why)
    comps.append(Component("openvino", ok, _version("openvino") if ok else "", detail))
    try:
        import torch

        cuda = "CUDA " + torch.version.cuda if torch.version.cuda else "CPU-only build"
        bf16 = "bf16 autocast on CPU" + ("" if torch.backends.mkldnn.is_available() else " (no oneDNN)")
        comps.append(Component("torch", True, torch.__version__, f"{cuda}; {bf16}"))
    except Exception as exc:
        comps.append(Component("torch", False, "", f"not importable ({exc})"))
    return comps


def decoder_components() -> list[Component]:
    from fracture_batch.decode.select import has_dali

    ok, why = has_dali()
    comps = [Component("nvidia-dali", ok, _version("nvidia-dali-cuda130") if ok else "", why)]
    comps.append(Component("pillow", bool(_version("pillow")), _version("pillow"), "PNG, JPEG, TIFF, BMP"))
    comps.append(Component("tifffile", bool(_version("tifffile")), _version("tifffile"), "16-bit and odd TIFFs"))
    comps.append(_pydicom_component())
    from fracture_batch.decode.gpu_dicom import has_nvimgcodec
    from fracture_batch.decode.reduce import has_htj2k_skipres

    ok, why = has_nvimgcodec()
    comps.append(Component("nvidia-nvimgcodec", ok, _version("nvidia-nvimgcodec-cu13") if ok else "",
                           "DICOM on the device (score --decoder nvimgcodec)" if ok else why))
    ic = has_htj2k_skipres()
    comps.append(Component("imagecodecs", ic, _version("imagecodecs"),
                           "HTJ2K reduced-resolution decode (OpenJPH), JPEG lossless (liblj92)" if ic else
                           "missing: HTJ2K and JPEG lossless decode at full cost; pip install imagecodecs"))
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
    for dist, what in (("pyarrow", "Parquet sink"), ("numpy", ""), ("ray", "scale-out (optional: pip install 'fracture-batch[ray]')"),
                       ("captum", "report --checkpoint overlays (optional: pip install 'fracture-batch[report]')")):
        v = _version(dist)
        comps.append(Component(dist, bool(v), v, what if v else f"not installed; {what or 'pip install ' + dist}"))
    return comps


def gpu_stack_info() -> dict[str, Any]:
    """The CUDA 13 stack (``gpu_stack``): each part, and the one command adding what is missing."""
    from fracture_batch.gpu_stack import fix_command, probe

    items = probe()
    return {"items": [asdict(i) for i in items], "missing": [i.name for i in items if not i.ok],
            "fix": fix_command(items)}


def collect_info() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_info(),
        "gpu": gpu_info(),
        "backends": [asdict(c) for c in backend_components()],
        "decoders": [asdict(c) for c in decoder_components()],
        "other": [asdict(c) for c in other_components()],
        "gpu_stack": gpu_stack_info(),
    }
