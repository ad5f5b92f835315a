"""onnxruntime CPU throughput of each precision variant, model only, in one run.

    python -m benchmarks.bench_onnx_precision                       # ResNet50 224², batches 1/8/16/32
    python -m benchmarks.bench_onnx_precision --model run/model.pt --data-dir data
    python -m benchmarks.bench_onnx_precision --arch resnet18 --input-size 64 --quick   # smoke

Files are produced by the export package itself (same exporter, same quantiser, int8
calibrated on images through the spec's preprocessing). Variants are timed round-robin
(one call of each variant per round, then the next round), so on a shared machine a
burst of load hits every variant alike and the int8/fp32 ratio stays meaningful even
when absolute figures do not. Reported: median call time -> images/s, p95, and the
ratio to fp32 at the same batch. Before/after rows show what each graph step buys:
  fp32          the exported graph (BN folded by the exporter's optimiser)
  fp32.slim     after onnxslim
  fp32.ortopt   after onnxruntime's offline optimisation (ORT_ENABLE_EXTENDED, saved)
  int8.noprep   uint8 Q/DQ quantised straight from the exported graph
  int8          uint8 Q/DQ after quant_pre_process (what export writes)
  int8.trt      the symmetric TensorRT flavour, on the CPU (for comparison only)
  fp16          the fp16 graph on the CPU EP (runs as fp32 behind inserted casts)
Writes benchmarks/results/onnx_precision_cpu.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from fracture_batch.machine import describe_machine
from fracture_batch.bench.stats import summarize

log = logging.getLogger("bench_onnx_precision")

TARGET_RATIO = 2.5  # issue 8.3: int8 >= 2.5x fp32 images/s at batch 16
ALL_VARIANTS = ("fp32", "fp32.slim", "fp32.ortopt", "int8.noprep", "int8", "int8.trt", "fp16")


def _calibration_inputs(spec, n: int, data_dir: Path | None, seed: int = 0) -> tuple[np.ndarray, str]:
    from fracture_batch.model.preprocess import to_model_input

    if data_dir is not None:
        from export.config import ExportConfig
        from export.images import load_inputs, resolve_image_sets

        cfg = ExportConfig(checkpoint=Path("-"), out_dir=Path("-"), data_dir=data_dir, calib_n=n)
        calib, _ = resolve_image_sets(cfg, spec)
        x, used = load_inputs(calib, spec)
        return x, f"{len(used)} images from {used.source}"
    from fracture_batch.synth.corpus import radiograph_like

    rng = np.random.default_rng(seed)
    x = np.stack([to_model_input(radiograph_like(512, 400, rng), spec) for _ in range(n)])
    return x, f"{n} generated radiograph-like images (no --data-dir given)"


def build_variants(model, spec, work: Path, calib: np.ndarray, wanted: tuple[str, ...], opset: int) -> dict[str, Path]:
    """The ONNX files to time, made with export's own functions."""
    import onnxruntime as ort

    from export.fp16 import export_fp16
    from export.onnx_export import export_onnx
    from export.quantize import Int8Flavour, pre_process, quantize_int8

    files: dict[str, Path] = {"fp32": export_onnx(model, spec, work / "fp32.onnx", opset=opset)}
    if "fp32.slim" in wanted:
        import onnxslim

        onnxslim.slim(str(files["fp32"]), str(work / "fp32.slim.onnx"))
        files["fp32.slim"] = work / "fp32.slim.onnx"
    if "fp32.ortopt" in wanted:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(work / "fp32.ortopt.onnx")
        ort.InferenceSession(str(files["fp32"]), so, providers=["CPUExecutionProvider"])
        files["fp32.ortopt"] = work / "fp32.ortopt.onnx"
    pre = pre_process(files["fp32"], work / "pre.onnx")
    if "int8.noprep" in wanted:
        files["int8.noprep"] = quantize_int8(files["fp32"], work / "int8.noprep.onnx", calib, Int8Flavour.ORT, spec=spec)
    if "int8" in wanted:
        files["int8"] = quantize_int8(pre, work / "int8.onnx", calib, Int8Flavour.ORT, spec=spec)
    if "int8.trt" in wanted:
        files["int8.trt"] = quantize_int8(pre, work / "int8.trt.onnx", calib, Int8Flavour.TENSORRT, spec=spec)
    if "fp16" in wanted:
        files["fp16"] = export_fp16(model, spec, work / "fp16.onnx", opset=opset)
    return {k: v for k, v in files.items() if k in wanted}


def _session(path: Path, threads: int, optimized_copy: Path | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if optimized_copy is not None:
        so.optimized_model_filepath = str(optimized_copy)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def fused_ops(path: Path, threads: int, work: Path) -> dict[str, int]:
    """Op histogram of the graph onnxruntime actually runs (after its optimisers): shows
    whether Q/DQ pairs became QLinearConv or stayed as DQ -> float Conv -> Q."""
    import onnx

    dst = work / (path.stem + ".runtime.onnx")
    _session(path, threads, dst)
    return dict(Counter(n.op_type for n in onnx.load(str(dst)).graph.node).most_common(12))


def time_round_robin(files: dict[str, Path], batch: int, size: int, threads: int, rounds: int,
                     warmup: int, max_seconds: float) -> dict[str, list[float]]:
    sessions = {k: _session(p, threads) for k, p in files.items()}
    x = np.random.default_rng(batch).standard_normal((batch, 3, size, size)).astype(np.float32)
    for s in sessions.values():
        for _ in range(warmup):
            s.run(None, {"input": x})
    times: dict[str, list[float]] = {k: [] for k in sessions}
    started = time.perf_counter()
    for r in range(rounds):
        for name, s in sessions.items():
            t0 = time.perf_counter_ns()
            s.run(None, {"input": x})
            times[name].append((time.perf_counter_ns() - t0) * 1e-9)
        if r >= 2 and time.perf_counter() - started > max_seconds:
            break
    return times


def run(args: argparse.Namespace) -> dict:
    import torch

    from fracture_batch.model.checkpoint import create_model, load_checkpoint
    from fracture_batch.model.spec import ModelSpec

    torch.set_num_threads(args.threads)
    if args.model:
        model, spec = load_checkpoint(args.model)
        source = str(args.model)
    else:
        torch.manual_seed(0)
        spec = ModelSpec(arch=args.arch, input_size=args.input_size)
        model, source = create_model(args.arch, 2).eval(), f"{args.arch} (random weights: speed only)"
    calib, calib_source = _calibration_inputs(spec, args.calib_n, args.data_dir)
    rows, graphs = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        work = Path(tmp)
        files = build_variants(model, spec, work, calib, tuple(args.variants), args.opset)
        for name in ("fp32", "int8", "int8.noprep", "int8.trt"):
            if name in files:
                graphs[name] = fused_ops(files[name], args.threads, work)
        for batch in args.batches:
            times = time_round_robin(files, batch, spec.input_size, args.threads, args.rounds, args.warmup, args.max_seconds)
            fp32_p50 = summarize(times["fp32"]).p50
            for name, t in times.items():
                s = summarize(t)
                rows.append({
                    "variant": name, "batch": batch, "repeats": s.n,
                    "images_per_s": batch / s.p50, "p50_ms": s.p50 * 1e3, "p95_ms": s.p95 * 1e3,
                    "speedup_vs_fp32": fp32_p50 / s.p50,
                    "file_mb": files[name].stat().st_size / 1e6,
                })
                log.info("batch %d %-12s %7.1f img/s  x%.2f", batch, name, batch / s.p50, fp32_p50 / s.p50)
    ratio = next((r["speedup_vs_fp32"] for r in rows if r["variant"] == "int8" and r["batch"] == 16), None)
    return {
        "model": source, "arch": spec.arch, "input_size": spec.input_size, "threads": args.threads,
        "calibration": calib_source, "rows": rows, "runtime_graph_ops": graphs,
        "int8_vs_fp32_batch16": ratio, "target_ratio": TARGET_RATIO,
        "meets_target": None if ratio is None else ratio >= TARGET_RATIO,
        "machine": describe_machine(),
        "method": "onnxruntime CPU EP, model only (preprocessed input in memory), round-robin over variants, "
                  f"{args.warmup} warm-up calls each, median of up to {args.rounds} rounds",
    }


def to_markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"# onnxruntime CPU throughput by precision: {result['arch']} {result['input_size']}²",
        "",
        f"Model: {result['model']}. Threads: {result['threads']} (intra-op), sequential execution. "
        f"int8 calibration: {result['calibration']}.",
        f"Machine: {m.get('cpu_model')} ({', '.join(m.get('cpu_flags', []))}), {m.get('cores_usable')} usable cores, "
        f"load average at start {[round(x, 1) for x in m.get('load_average') or []]}. "
        f"{result['method']}.",
        "",
        "| batch | variant | images/s | p50 ms | p95 ms | × fp32 | MB |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['batch']} | {r['variant']} | {r['images_per_s']:.1f} | {r['p50_ms']:.1f} | "
                     f"{r['p95_ms']:.1f} | {r['speedup_vs_fp32']:.2f} | {r['file_mb']:.1f} |")
    ratio = result["int8_vs_fp32_batch16"]
    if ratio is not None:
        verdict = "meets" if result["meets_target"] else "MISSES"
        lines += ["", f"**int8 vs fp32 at batch 16: {ratio:.2f}×** ({verdict} the {result['target_ratio']}× target)."]
    lines += ["", "Ops onnxruntime runs after its graph optimisers (top 12):", ""]
    for name, ops in result["runtime_graph_ops"].items():
        lines.append(f"- `{name}`: " + ", ".join(f"{k} {v}" for k, v in ops.items()))
    lines += ["", READING]
    return "\n".join(lines) + "\n"


READING = """How to read it:
- `int8` is fast because every Q/DQ-wrapped Conv becomes one `QLinearConv` (u8 activations x
  s8 per-channel weights, VNNI dot products, Relu folded into the uint8 range) and the graph
  runs in NHWC between two Transposes; compare its op list with `int8.trt`, where symmetric
  int8 activations keep Relu as a float op, so most Convs stay DequantizeLinear -> float Conv ->
  QuantizeLinear and it runs no faster than fp32 on this CPU (it is for TensorRT only).
- `fp32.slim` and `fp32.ortopt` are the before/after of offline graph optimisation: onnxruntime
  applies the same fusions (BN already folded by the exporter, NCHWc blocked layout) at session
  start, so they change load time, not throughput; export therefore writes the plain graph.
- `int8.noprep` vs `int8` is the before/after of `quant_pre_process`: on this graph both end up
  with the same fused ops; export keeps the pre-processing step onnxruntime recommends.
- `fp16` on the CPU EP runs behind inserted casts (x86 has no fp16 Conv kernels here): it is
  written for GPUs (TensorRT, CUDA EP) and only checked for accuracy on the CPU.
- The load average at the top tells whether anything else ran: on a loaded machine absolute
  figures are noisy, while the round-robin timing keeps the ratios comparable."""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="checkpoint (model.pt); default: random-weight --arch (speed only)")
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--data-dir", type=Path, help="dataset root (train/val/test) for calibration images")
    p.add_argument("--calib-n", type=int, default=64)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16, 32])
    p.add_argument("--variants", nargs="+", default=list(ALL_VARIANTS), choices=ALL_VARIANTS)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--max-seconds", type=float, default=120.0, help="time budget per batch size")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--quick", action="store_true", help="smoke run: 3 rounds, batches 1 and 16")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--name", default="onnx_precision_cpu")
    p.add_argument("--render", type=Path, metavar="JSON", help="only re-render the markdown of an earlier JSON result")
    args = p.parse_args(argv)
    if args.render:
        args.render.with_suffix(".md").write_text(to_markdown(json.loads(args.render.read_text())))
        return
    if args.quick:
        args.rounds, args.batches, args.calib_n = 3, [1, 16], 16
    if "fp32" not in args.variants:
        args.variants = ["fp32", *args.variants]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (args.out / f"{args.name}.md").write_text(to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
