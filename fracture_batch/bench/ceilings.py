"""Machine ceilings measured in the same run as the figures they bound.

* fp32: a large square GEMM through numpy (OpenBLAS) and torch (oneDNN/MKL); the
  numpy child runs with OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset (this machine's
  environment pins older Haswell kernels) and records via threadpoolctl which kernel
  set actually ran. The fp32 ceiling is the better of the two.
* bf16/fp16: torch matmul of that dtype (oneDNN uses AVX512-BF16 where present).
* int8: ``torch._int_mm`` (oneDNN, VNNI where present) and onnxruntime
  ``MatMulInteger`` (uint8 x int8, MLAS VNNI kernels: the ones the int8 ONNX model's
  QLinearConv/QDQ kernels use); the better one is the ceiling, named in ``note``.
* AMX / VNNI through oneDNN: ``torch.ops.onednn.qlinear_pointwise`` (u8 x s8, the form
  of a quantised conv; oneDNN's brg_matmul runs it on AMX int8 tiles where present,
  ``ONEDNN_VERBOSE=1`` shows ``brg_matmul:avx10_1_512_amx``, else on VNNI) and OpenVINO's
  own MatMul (int8 via FakeQuantize, bf16/f32 via the inference-precision hint); each
  OpenVINO row names the kernel its runtime graph reports (e.g. ``brgemm_avx512_amx_I8``),
  so the ceiling says which unit it measured. Run at 2048 too: at 4096 the AMX kernels
  fall to a third of their 2048 rate on a 2-core VM (operands leave the 2 MB L2), and a
  ceiling is the best a kernel does.
* GPU: the same matmuls on the device, plus device-memory bandwidth from a large
  device-to-device copy (read + write bytes / time).
Each runs in its own process (see ``isolate``), so thread pools start clean.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from fracture_batch.machine import cpu_count
from fracture_batch.bench.records import Measurement
from fracture_batch.bench.stats import measure, summarize

log = logging.getLogger(__name__)

OPENBLAS_PINNED_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def _gemm_row(backend: str, precision: str, device: str, n: int, times: list[float],
              threads: int, note: str = "", suffix: str = "", **extra: Any) -> Measurement:
    s = summarize(times)
    flop = 2.0 * n**3
    return Measurement(
        suite="ceiling", name=f"gemm/{backend}/{precision}/{device}{suffix}", backend=backend,
        precision=precision, device=device, repeats=s.n, threads=threads,
        gflops=flop / s.p50 / 1e9, note=note, extra={"n": n, "best_gflops": flop / s.min / 1e9, **extra},
        **s.ms(),
    )


def numpy_gemm(n: int = 4096, repeats: int = 5, warmup: int = 1) -> list[Measurement]:
    from threadpoolctl import threadpool_info

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    times = measure(lambda: a @ b, warmup=warmup, repeats=repeats, max_seconds=20)
    blas = [d for d in threadpool_info() if d.get("user_api") == "blas"]
    arch = blas[0].get("architecture", "?") if blas else "?"
    threads = blas[0].get("num_threads", 0) if blas else 0
    return [_gemm_row("numpy", "fp32", "cpu", n, times, threads,
                      note=f"{blas[0].get('internal_api', '?') if blas else '?'} kernels: {arch}",
                      blas_architecture=arch)]


def _torch_dtype(precision: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def torch_gemm(precision: str = "fp32", device: str = "cpu", n: int = 4096,
               repeats: int = 5, warmup: int = 1, threads: int | None = None, suffix: str = "") -> list[Measurement]:
    import torch

    threads = threads or cpu_count()
    torch.set_num_threads(threads)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # an fp32 ceiling, not TF32
    dt = _torch_dtype(precision)
    a = torch.randn(n, n, device=device).to(dt)
    b = torch.randn(n, n, device=device).to(dt)
    sync = torch.cuda.synchronize if device == "cuda" else None
    times = measure(lambda: torch.mm(a, b), warmup=warmup, repeats=repeats, max_seconds=20, sync=sync)
    return [_gemm_row("torch", precision, device, n, times, threads, suffix=suffix,
                      note=f"torch.mm ({torch.backends.cpu.get_cpu_capability() if device == 'cpu' else 'cuBLAS'})")]


def torch_int8_gemm(device: str = "cpu", n: int = 4096, repeats: int = 5, warmup: int = 1,
                    threads: int | None = None) -> list[Measurement]:
    import torch

    threads = threads or cpu_count()
    torch.set_num_threads(threads)
    a = torch.randint(-128, 127, (n, n), dtype=torch.int8, device=device)
    b = torch.randint(-128, 127, (n, n), dtype=torch.int8, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else None
    times = measure(lambda: torch._int_mm(a, b), warmup=warmup, repeats=repeats, max_seconds=20, sync=sync)
    return [_gemm_row("torch", "int8", device, n, times, threads, note="torch._int_mm (s8 x s8 -> s32)")]


def ort_int8_gemm(n: int = 4096, repeats: int = 5, warmup: int = 1,
                  threads: int | None = None) -> list[Measurement]:
    """onnxruntime MatMulInteger, uint8 activations x int8 weights (MLAS's VNNI path)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    threads = threads or cpu_count()
    rng = np.random.default_rng(0)
    w = rng.integers(-128, 127, (n, n), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B", "a_zp"], ["Y"])], "int8_gemm",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])],
        initializer=[numpy_helper.from_array(w, "B"),
                     numpy_helper.from_array(np.array(128, np.uint8), "a_zp")],
    )
    # IR 10 / opset 17: readable by every onnxruntime this project supports.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    a = rng.integers(0, 255, (n, n), dtype=np.uint8)
    times = measure(lambda: sess.run(None, {"A": a}), warmup=warmup, repeats=repeats, max_seconds=20)
    return [_gemm_row("onnxruntime", "int8", "cpu", n, times, threads,
                      note="onnxruntime MatMulInteger (u8 x s8 -> s32)")]


def onednn_int8_gemm(n: int = 2048, repeats: int = 5, warmup: int = 1,
                     threads: int | None = None) -> list[Measurement]:
    """oneDNN quantised linear (u8 activations x s8 weights -> f32): AMX int8 or VNNI."""
    import torch

    from fracture_batch.machine import cpu_info

    threads = threads or cpu_count()
    torch.set_num_threads(threads)
    x = torch.randint(0, 255, (n, n), dtype=torch.uint8)
    packed = torch.ops.onednn.qlinear_prepack(torch.randint(-128, 127, (n, n), dtype=torch.int8), [n, n])
    scales, zps = torch.ones(n), torch.zeros(n, dtype=torch.int64)

    def run():
        return torch.ops.onednn.qlinear_pointwise(x, 1.0, 0, packed, scales, zps, None, 1.0, 0, torch.float32,
                                                  "none", [], "")

    times = measure(run, warmup=warmup, repeats=repeats, max_seconds=20)
    unit = "AMX int8" if "amx_int8" in cpu_info()["cpu_flags"] else "VNNI/AVX-512"
    return [_gemm_row("onednn", "int8", "cpu", n, times, threads,
                      note=f"torch.ops.onednn.qlinear_pointwise u8 x s8 ({unit} via oneDNN brg_matmul)")]


def openvino_gemm(precision: str = "int8", n: int = 2048, repeats: int = 5, warmup: int = 1,
                  threads: int | None = None) -> list[Measurement]:
    """OpenVINO CPU MatMul; the row records the kernel OpenVINO reports it ran."""
    import openvino as ov
    from openvino import opset13 as ops

    threads = threads or cpu_count()
    rng = np.random.default_rng(0)
    x = ops.parameter([n, n], np.float32, name="x")
    w = rng.standard_normal((n, n)).astype(np.float32)
    if precision == "int8":  # the FakeQuantize -> MatMul pattern a Q/DQ ONNX graph becomes
        lo, hi = ops.constant(np.float32(-4)), ops.constant(np.float32(4))
        wq = ops.convert(ops.constant(np.clip(np.round(w * 30), -127, 127).astype(np.int8)), np.float32)
        y = ops.matmul(ops.fake_quantize(x, lo, hi, lo, hi, 256), ops.multiply(wq, ops.constant(np.float32(1 / 30))),
                       False, False)
    else:
        y = ops.matmul(x, ops.constant(w), False, False)
    compiled = ov.Core().compile_model(ov.Model([y], [x]), "CPU", {
        "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"})
    kernels = sorted({str(op.get_rt_info()["primitiveType"].astype(str)) for op in compiled.get_runtime_model().get_ops()
                      if op.get_rt_info()["layerType"].astype(str) in ("MatMul", "FullyConnected")})
    req = compiled.create_infer_request()
    a = rng.standard_normal((n, n)).astype(np.float32)
    times = measure(lambda: req.infer({0: a}), warmup=warmup, repeats=repeats, max_seconds=20)
    return [_gemm_row("openvino", precision, "cpu", n, times, threads,
                      note=f"OpenVINO MatMul, kernel {', '.join(kernels)}", kernels=kernels)]


def cuda_bandwidth(mib: int = 1024, repeats: int = 10, warmup: int = 2) -> list[Measurement]:
    import torch

    n = mib * 2**20 // 4
    src = torch.empty(n, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    from fracture_batch.bench.stats import cuda_event_timer

    times = cuda_event_timer(lambda: dst.copy_(src), warmup=warmup, repeats=repeats)
    s = summarize(times)
    gbps = 2 * n * 4 / s.p50 / 1e9  # each element read once and written once
    return [Measurement(suite="ceiling", name="bandwidth/cuda", backend="torch", device="cuda",
                        repeats=s.n, note=f"device-to-device copy of {mib} MiB",
                        extra={"gbytes_per_s": gbps, "mib": mib}, **s.ms())]


def ceiling_configs(*, quick: bool, cuda: bool, n: int = 0) -> list[tuple[str, dict[str, Any], Measurement, tuple[str, ...]]]:
    """(target, kwargs, label, env to unset) for each ceiling measured in this run.
    4096^2 (137 GFLOP, ~0.3 s at 400 GFLOP/s) is large enough for peak on 2 cores."""
    n = n or (2048 if quick else 4096)
    reps = 3 if quick else 7
    mod = "fracture_batch.bench.ceilings"
    out = [
        (f"{mod}:numpy_gemm", {"n": n, "repeats": reps}, Measurement("ceiling", "gemm/numpy/fp32/cpu", "numpy", "fp32"), OPENBLAS_PINNED_ENV),
        (f"{mod}:torch_gemm", {"precision": "fp32", "n": n, "repeats": reps}, Measurement("ceiling", "gemm/torch/fp32/cpu", "torch", "fp32"), ()),
        (f"{mod}:torch_gemm", {"precision": "bf16", "n": n, "repeats": reps}, Measurement("ceiling", "gemm/torch/bf16/cpu", "torch", "bf16"), ()),
        (f"{mod}:torch_int8_gemm", {"n": n, "repeats": reps}, Measurement("ceiling", "gemm/torch/int8/cpu", "torch", "int8"), ()),
        (f"{mod}:ort_int8_gemm", {"n": n, "repeats": reps}, Measurement("ceiling", "gemm/onnxruntime/int8/cpu", "onnxruntime", "int8"), ()),
        (f"{mod}:torch_gemm", {"precision": "bf16", "n": 2048, "repeats": reps, "suffix": "/n2048"}, Measurement("ceiling", "gemm/torch/bf16/cpu/n2048", "torch", "bf16"), ()),
        (f"{mod}:onednn_int8_gemm", {"n": 2048, "repeats": reps}, Measurement("ceiling", "gemm/onednn/int8/cpu", "onednn", "int8"), ()),
    ]
    from fracture_batch.backends.openvino_backend import has_openvino

    if has_openvino()[0]:
        for p in ("int8", "bf16", "fp32"):
            out.append((f"{mod}:openvino_gemm", {"precision": p, "n": 2048, "repeats": reps},
                        Measurement("ceiling", f"gemm/openvino/{p}/cpu", "openvino", p), ()))
    if cuda:
        for p in ("fp32", "fp16", "bf16"):
            out.append((f"{mod}:torch_gemm", {"precision": p, "device": "cuda", "n": 8192, "repeats": 20},
                        Measurement("ceiling", f"gemm/torch/{p}/cuda", "torch", p, "cuda"), ()))
        out.append((f"{mod}:torch_int8_gemm", {"device": "cuda", "n": 8192, "repeats": 20},
                    Measurement("ceiling", "gemm/torch/int8/cuda", "torch", "int8", "cuda"), ()))
        out.append((f"{mod}:cuda_bandwidth", {}, Measurement("ceiling", "bandwidth/cuda", "torch", "", "cuda"), ()))
    return out


def resolve_ceiling(rows: list[Measurement], device: str, precision: str) -> tuple[float | None, str]:
    """The best GEMM of this dtype on this device measured in the run: (GFLOP/s, which).
    fp16 on a CPU without AVX512-FP16 has no native GEMM; it falls back to fp32's."""
    want = precision if not (device == "cpu" and precision == "fp16") else "fp32"
    cands = [r for r in rows if r.suite == "ceiling" and r.device == device
             and r.precision == want and r.status == "ok" and r.gflops]
    if not cands:
        return None, ""
    # A ceiling is a peak: the best repeat, not the median (on a shared machine the
    # median of a GEMM is pulled down by other tenants more than a model run is).
    def peak(r: Measurement) -> float:
        return float(r.extra.get("best_gflops") or r.gflops or 0.0)

    best = max(cands, key=peak)
    return peak(best), best.name


def measure_ceilings(*, quick: bool, cuda: bool, in_process: bool = False, n: int = 0) -> list[Measurement]:
    from fracture_batch.bench.isolate import run_isolated

    rows: list[Measurement] = []
    for target, kwargs, label, unset in ceiling_configs(quick=quick, cuda=cuda, n=n):
        t0 = time.perf_counter()
        rows += run_isolated(target, kwargs, label=label, unset_env=unset, in_process=in_process, timeout_s=300)
        log.info("ceiling %s: %.1f s", label.name, time.perf_counter() - t0)
    return rows
