"""The one machine probe: CPU model and flags, usable cores, memory, GPU and driver, thread
settings, package versions, and the busy-machine rule.

Stored with every benchmark result, written into every run's ``_SUCCESS``, shown by
``fracture-batch info`` and the demo's recap: one set of keys everywhere. Imports nothing
from the package (the bottom layer), so every stage may use it.
"""
from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import subprocess
from typing import Any

log = logging.getLogger(__name__)

# The flags that decide which kernels run (fp32 AVX-512 GEMM, VNNI int8, bf16, AMX).
INTERESTING_FLAGS = (
    "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16",
)
PACKAGES = (
    "fracture-batch", "torch", "torchvision", "numpy", "onnx", "onnxruntime",
    "onnxruntime-gpu", "openvino", "tensorrt", "nvidia-dali-cuda130", "pillow", "pydicom",
    "pylibjpeg-openjpeg", "pyarrow", "threadpoolctl",
)
# A figure is flagged when the 1-minute load average per usable core exceeds the first
# number before its run, or the second after it (the run's own threads count there):
# other tenants then slow each stage by a different, changing factor, so ratios
# measured minutes apart are unreliable.
BUSY_LOAD_PER_CORE = (0.5, 1.25)
THREAD_ENV = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE", "CUDA_VISIBLE_DEVICES",
)


def cpu_info() -> dict[str, Any]:
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:  # not Linux: the platform string is the best there is
        model = platform.processor()
    import psutil

    freq = psutil.cpu_freq()
    return {
        "cpu_model": model,
        "cpu_flags": [f for f in INTERESTING_FLAGS if f in flags],
        "cores_logical": psutil.cpu_count(logical=True),
        "cores_physical": psutil.cpu_count(logical=False),
        "cores_usable": cpu_count(),
        "cpu_mhz": round(freq.max or freq.current, 1) if freq else None,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
    }


# The kernels a CPU's matrix units allow, best first: what a figure's "CPU" names beside
# the model string (a VM often reports only "Intel(R) Xeon(R) Processor").
_MATRIX_UNITS = (("amx_bf16", "AMX bf16/int8"), ("avx512_bf16", "AVX-512 BF16"),
                 ("avx512_vnni", "AVX-512 VNNI"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))


def cpu_label(info: dict[str, Any] | None = None) -> str:
    """One line naming the CPU a figure was measured on, e.g.
    ``Intel(R) Xeon(R) Processor (AMX bf16/int8), 2 cores``."""
    info = info or cpu_info()
    flags = set(info.get("cpu_flags") or ())
    units = next((name for flag, name in _MATRIX_UNITS if flag in flags), "")
    cores = info.get("cores_usable") or info.get("cores_logical")
    return (f"{info.get('cpu_model') or 'unknown CPU'}" + (f" ({units})" if units else "")
            + (f", {cores} cores" if cores else ""))


def gpu_info() -> dict[str, Any]:
    """The first CUDA device as torch sees it, plus the driver from nvidia-smi."""
    out: dict[str, Any] = {"available": False}
    try:
        import torch

        out["torch_cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            out.update(available=True, name=p.name, count=torch.cuda.device_count(),
                       memory_gib=round(p.total_memory / 2**30, 1),
                       capability=f"{p.major}.{p.minor}", multiprocessors=p.multi_processor_count)
    except Exception as exc:  # a broken CUDA install must not stop a CPU benchmark
        out["error"] = str(exc)
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=10)
        if r.returncode == 0:
            out["driver"] = r.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (distributions that are absent are left out)."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def blas_info() -> list[dict[str, Any]]:
    """Which BLAS/OpenMP libraries numpy and torch loaded, their kernels and threads."""
    try:
        import numpy  # noqa: F401  (load its BLAS so threadpoolctl sees it)
        from threadpoolctl import threadpool_info

        return [{k: v for k, v in d.items() if k in
                 ("user_api", "internal_api", "version", "architecture", "num_threads", "prefix")}
                for d in threadpool_info()]
    except Exception as exc:
        return [{"error": str(exc)}]


def torch_info() -> dict[str, Any]:
    try:
        import torch

        return {"num_threads": torch.get_num_threads(),
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "mkldnn": torch.backends.mkldnn.is_available()}
    except Exception as exc:
        return {"error": str(exc)}


def describe_machine() -> dict[str, Any]:
    info = cpu_info()
    info.update(
        hostname=platform.node(),
        os=platform.platform(),
        python=platform.python_version(),
        gpu=gpu_info(),
        packages=package_versions(),
        thread_env={k: os.environ[k] for k in THREAD_ENV if k in os.environ},
        torch=torch_info(),
        blas=blas_info(),
        load_average=load_average(),
    )
    return info


def cpu_count() -> int:
    """The cores this process may use (affinity aware): the default thread budget."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def busy_loads(machine: dict[str, Any], end: list[float] | None = None) -> list[float]:
    """[load before, load after] when they make a figure unreliable, else [].

    ``machine`` is ``describe_machine()`` taken before the run; ``end`` the load average after it."""
    cores = machine.get("cores_usable") or 1
    start = (machine.get("load_average") or [0.0])[0]
    after = end[0] if end else None
    busy = start > BUSY_LOAD_PER_CORE[0] * cores or (after is not None and after > BUSY_LOAD_PER_CORE[1] * cores)
    return [x for x in (start, after) if x is not None] if busy else []


def busy_note(machine: dict[str, Any], end: list[float] | None = None, rerun: str = "") -> str:
    """A markdown line saying the figures were taken on a busy machine, or ''."""
    loads = busy_loads(machine, end)
    if not loads:
        return ""
    cores = machine.get("cores_usable") or 1
    return (f"**Measured on a busy machine** (1-minute load average {' -> '.join(f'{x:.1f}' for x in loads)} "
            f"on {cores} cores): other processes took part of the CPU, unevenly over the run; these "
            f"figures show the harness working, not this machine's speed. Rerun {rerun or 'it'} on a quiet machine.\n")
