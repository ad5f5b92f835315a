"""Markdown tables, PNG plots and the README section, generated from a run's records."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterable

from fracture_batch.bench.records import BenchRun, Measurement
from fracture_batch.machine import busy_note

log = logging.getLogger(__name__)

# Issue 4's figures for the scorer (small regime, onnxruntime on CPU); reported, not asserted.
TARGETS = (("int8", "ratio_vs_naive", 5.0), ("fp32", "ratio_vs_naive", 2.0),
           ("int8", "fraction_of_model_only", 0.85), ("fp32", "fraction_of_model_only", 0.85))


def _f(v, fmt: str = "{:.1f}") -> str:
    return "" if v is None else fmt.format(v)


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:.0f}%"


def table(rows: Iterable[Measurement], cols: list[tuple[str, Callable[[Measurement], str]]]) -> str:
    rows = list(rows)
    if not rows:
        return "_(none)_\n"
    lines = ["| " + " | ".join(h for h, _ in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fn(r).replace("|", "/") for _, fn in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def machine_line(m: dict) -> str:
    gpu = m.get("gpu", {})
    gpu_s = f"{gpu.get('name')} (driver {gpu.get('driver', '?')})" if gpu.get("available") else "no CUDA GPU"
    pk = m.get("packages", {})
    return (f"{m.get('cpu_model', '?')}, {m.get('cores_usable', '?')} usable cores "
            f"(flags: {' '.join(m.get('cpu_flags', []))}), {m.get('memory_gib', '?')} GiB; {gpu_s}; "
            f"torch {pk.get('torch', '?')}, onnxruntime {pk.get('onnxruntime', '?')}, "
            f"DALI {pk.get('nvidia-dali-cuda130', '-')}, TensorRT {pk.get('tensorrt', '-')}; "
            f"load average at start {', '.join(f'{x:.1f}' for x in m.get('load_average') or [])}")


def _decoder_threads(r: Measurement) -> str:
    t = r.extra.get("threads")
    split = f"; decode {t.get('decode_workers')} + infer {t.get('intra_op')}" if isinstance(t, dict) else ""
    return f"{r.extra.get('decoder', '')}{split}"


def _cpu_split(r: Measurement) -> str:
    main, kids = r.extra.get("cpu_ms_per_image_main"), r.extra.get("cpu_ms_per_image_decode_children")
    return "" if main is None or kids is None else f"{main:.1f} + {kids:.1f}"


def busy_warning(run: BenchRun) -> str:
    return busy_note(run.machine, run.run.get("load_average_end"), rerun="`fracture-batch bench`")


def ok(rows, suite):
    return [r for r in rows if r.suite == suite and r.status == "ok"]


def markdown(run: BenchRun) -> str:
    rows = run.measurements
    model = run.run.get("model", {})
    out = [f"# fracture-batch benchmark {run.run.get('run_id', '')}\n",
           f"Machine: {machine_line(run.machine)}\n", busy_warning(run),
           f"Threads per inference process: {run.run.get('threads')} "
           "(onnxruntime intra_op_num_threads, torch.set_num_threads). "
           f"Model: {model.get('source', '-')}. Run took {run.run.get('seconds', '?')} s.\n",
           "Latencies are per call (a batch for the model, one image for decoders); images/s "
           "from the median; p95/p99 over the timed repeats (warm-up excluded).\n"]
    out += ["## Ceilings (large GEMM per dtype, this run)\n", table(ok(rows, "ceiling"), [
        ("what", lambda r: r.name), ("GFLOP/s (median)", lambda r: _f(r.gflops)),
        ("GFLOP/s (best)", lambda r: _f(r.extra.get("best_gflops"))),
        ("GB/s", lambda r: _f(r.extra.get("gbytes_per_s"))), ("how", lambda r: r.note)])]
    out += ["## Model only\n", table(ok(rows, "model"), [
        ("backend", lambda r: r.backend), ("precision", lambda r: r.precision), ("device", lambda r: r.device),
        ("batch", lambda r: str(r.batch_size)), ("images/s", lambda r: _f(r.images_per_s)),
        ("p50 ms", lambda r: _f(r.latency_p50_ms)), ("p95 ms", lambda r: _f(r.latency_p95_ms)),
        ("p99 ms", lambda r: _f(r.latency_p99_ms)), ("GFLOP/s", lambda r: _f(r.gflops)),
        ("of ceiling", lambda r: _pct(r.fraction_of_ceiling)), ("build s", lambda r: _f(r.build_s, "{:.2f}")),
        ("repeats", lambda r: str(r.repeats))])]
    out += ["## Decode only\n", table(ok(rows, "decode"), [
        ("decoder", lambda r: r.backend), ("format", lambda r: r.format),
        ("MP/image", lambda r: _f(r.extra.get("megapixels_per_image"), "{:.2f}")),
        ("images/s", lambda r: _f(r.images_per_s)), ("ms/MP", lambda r: _f(r.ms_per_megapixel, "{:.2f}")),
        ("p50 ms", lambda r: _f(r.latency_p50_ms)), ("p99 ms", lambda r: _f(r.latency_p99_ms)),
        ("threads", lambda r: str(r.threads))])]
    out += ["## End to end (`score` vs the naive scorer, same run)\n", table(ok(rows, "e2e"), [
        ("regime", lambda r: r.regime), ("what", lambda r: r.name), ("images", lambda r: str(r.n_images)),
        ("images/s", lambda r: _f(r.images_per_s)), ("x naive", lambda r: _f(r.ratio_vs_naive, "{:.2f}")),
        ("x plain PIL+OpenVINO", lambda r: _f(r.extra.get("ratio_vs_plain_openvino"), "{:.2f}")),
        ("of model-only", lambda r: _pct(r.fraction_of_model_only)),
        ("of cores bound", lambda r: _pct(r.extra.get("fraction_of_bound"))), ("bound by", lambda r: r.bound_by),
        ("decoder, threads", _decoder_threads),
        ("CPU ms/image: scoring process + decode children", _cpu_split),
        ("load s", lambda r: _f(r.build_s, "{:.2f}"))])]
    out += ["## Issue 4 figures (small regime)\n", _quick_caveat(run), targets_table(rows)]
    skipped = [r for r in rows if r.status in ("skipped", "error")]
    out += ["## Not measured here\n", table(skipped, [
        ("suite", lambda r: r.suite), ("what", lambda r: r.name), ("status", lambda r: r.status),
        ("reason", lambda r: r.note)])]
    return "\n".join(out)


def _quick_caveat(run: BenchRun) -> str:
    """With --quick the corpus is a few dozen images: start-up (decode processes, thread
    pools) dominates, so these targets can only be judged on a full run."""
    if not (run.run.get("config") or {}).get("quick"):
        return ""
    return ("*Quick run: too few images for these figures (start-up dominates); the targets are judged on "
            "a full run, `python -m benchmarks.run_all`.*\n")


def targets_table(rows: list[Measurement]) -> str:
    lines = ["| figure | target | measured | met |", "|---|---|---|---|"]
    for precision, field, target in TARGETS:
        r = next((r for r in rows if r.suite == "e2e" and r.regime == "small" and r.status == "ok"
                  and r.backend == "onnxruntime" and r.precision == precision), None)
        v = getattr(r, field) if r else None
        label = f"score {precision} {'÷ naive' if field == 'ratio_vs_naive' else '÷ model-only'}"
        shown = "" if v is None else (f"{v:.2f}x" if field == "ratio_vs_naive" else f"{100 * v:.0f}%")
        want = f"≥ {target:.0f}x" if field == "ratio_vs_naive" else f"≥ {100 * target:.0f}%"
        lines.append(f"| {label} | {want} | {shown or 'not measured'} | "
                     f"{'' if v is None else ('yes' if v >= target else 'no')} |")
    return "\n".join(lines) + "\n"


def plot_throughput(rows: list[Measurement], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = ok(rows, "model")
    if not model:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key in sorted({(r.backend, r.precision, r.device) for r in model}):
        pts = sorted((r.batch_size, r.images_per_s) for r in model if (r.backend, r.precision, r.device) == key)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label="/".join(key))
    ax.set_xscale("log", base=2)
    sizes = sorted({r.batch_size for r in model})
    ax.set_xticks(sizes, [str(b) for b in sizes])
    ax.set_xlabel("batch size")
    ax.set_ylabel("images/s (median)")
    ax.set_title("Model-only throughput vs batch size")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_tails(rows: list[Measurement], path: Path) -> Path | None:
    """p50/p95/p99 per-batch latency of each model configuration at its largest batch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    model = ok(rows, "model")
    if not model:
        return None
    best = {}
    for r in model:
        k = (r.backend, r.precision, r.device)
        if k not in best or (r.batch_size or 0) > (best[k].batch_size or 0):
            best[k] = r
    sel = [best[k] for k in sorted(best)]
    x = np.arange(len(sel))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, attr) in enumerate((("p50", "latency_p50_ms"), ("p95", "latency_p95_ms"), ("p99", "latency_p99_ms"))):
        ax.bar(x + (i - 1) * 0.27, [getattr(r, attr) or 0 for r in sel], width=0.27, label=name)
    ax.set_xticks(x, [f"{r.backend}/{r.precision}\nbs{r.batch_size}" for r in sel], fontsize=8)
    ax.set_yscale("log")  # configurations differ by orders of magnitude
    ax.set_ylabel("ms per batch (log)")
    ax.set_title("Latency tails (largest batch measured)")
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def readme_section(run: BenchRun, prefix: str) -> str:
    rows = run.measurements
    e2e = [r for r in ok(rows, "e2e") if r.backend != "stage/decode+preprocess"]
    head = ["## Benchmarks\n",
            f"Measured by `fracture-batch bench` (run {run.run.get('run_id', '')}) on: "
            f"{machine_line(run.machine)}. Full tables: `benchmarks/results/{prefix}.md`; "
            f"every measurement with the machine description: `{prefix}.json` / `{prefix}.parquet`; "
            f"plots: `{prefix}_throughput.png`, `{prefix}_tails.png`. Reproduce with "
            "`python -m benchmarks.run_all --out benchmarks/results` (≈6 min on a quiet 2-core machine) or "
            "`fracture-batch bench --quick` (≈2 min).\n", busy_warning(run),
            table([r for r in e2e if r.name.startswith(("score", "naive"))], [
                ("regime", lambda r: r.regime), ("scorer", lambda r: r.name),
                ("images/s", lambda r: _f(r.images_per_s)), ("x naive", lambda r: _f(r.ratio_vs_naive, "{:.2f}")),
                ("of model-only", lambda r: _pct(r.fraction_of_model_only)), ("bound by", lambda r: r.bound_by)]),
            "\n" + targets_table(rows),
            "\nModel only, best batch size per backend and precision:\n"]
    best: dict = {}
    for r in ok(rows, "model"):
        k = (r.backend, r.precision, r.device)
        if k not in best or (r.images_per_s or 0) > (best[k].images_per_s or 0):
            best[k] = r
    head.append(table([best[k] for k in sorted(best)], [
        ("backend", lambda r: r.backend), ("precision", lambda r: r.precision), ("batch", lambda r: str(r.batch_size)),
        ("images/s", lambda r: _f(r.images_per_s)), ("GFLOP/s", lambda r: _f(r.gflops)),
        ("of same-dtype GEMM ceiling", lambda r: _pct(r.fraction_of_ceiling))]))
    return "\n".join(head)


def write_report(run: BenchRun, out: Path, prefix: str = "bench") -> dict[str, Path]:
    paths = {"markdown": out / f"{prefix}.md", "readme_section": out / "README_section.md"}
    paths["markdown"].write_text(markdown(run))
    paths["readme_section"].write_text(readme_section(run, prefix))
    for key, fn, name in (("throughput_png", plot_throughput, "throughput"), ("tails_png", plot_tails, "tails")):
        p = fn(run.measurements, out / f"{prefix}_{name}.png")
        if p is not None:
            paths[key] = p
    return paths
