"""``fracture-batch bench``: throughput/latency of every stage and backend, and the GPU
acceptance run. Thin: options -> ``benchmarking.suite.run_bench`` / ``acceptance``."""
from __future__ import annotations

from pathlib import Path

import click

from fracture_batch.backends.base import BackendKind, DeviceKind, Precision
from fracture_batch.bench.suite import Suite

BACKENDS = tuple(b.value for b in BackendKind if b is not BackendKind.AUTO)
PRECISIONS = tuple(p.value for p in Precision)
DEVICES = tuple(d.value for d in DeviceKind if d is not DeviceKind.AUTO)


def _ints(ctx, param, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        out = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter("comma-separated integers, e.g. 1,8,32,128") from None
    if not out or min(out) < 1:
        raise click.BadParameter("batch sizes must be >= 1")
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", type=click.Path(exists=True, path_type=Path), default=None,
              help="An export directory (model.onnx, model.int8.onnx, ... and model.pt), a checkpoint or an "
                   ".onnx file. Default: a randomly initialised --arch exported by the bench (speed does not "
                   "depend on the weights).")
@click.option("--suite", "suites", type=click.Choice([s.value for s in Suite]), multiple=True,
              help="Which suites to run (repeatable). Default: all: ceilings (large GEMM per dtype), model "
                   "(model only), decode (decode only), e2e (score vs the naive scorer).")
@click.option("--backends", type=click.Choice(BACKENDS), multiple=True,
              help="Backends for the model-only suite (repeatable). Default: onnxruntime and torch on CPU; "
                   "tensorrt, onnxruntime and torch on CUDA.")
@click.option("--precisions", type=click.Choice(PRECISIONS), multiple=True,
              help="Precisions (repeatable). Default per device: CPU onnxruntime fp32/int8, torch fp32/bf16; "
                   "CUDA fp32/fp16/int8. Combinations that cannot run become rows saying why.")
@click.option("--devices", type=click.Choice(DEVICES), multiple=True,
              help="Devices (repeatable). Default: cpu and cuda (cuda rows are skipped with the reason when "
                   "there is no GPU).")
@click.option("--batch-sizes", callback=_ints, default=None,
              help="Comma-separated batch sizes for the model-only suite. Default 1,8,32,128 (1,8 with --quick).")
@click.option("--repeats", type=click.IntRange(1), default=None,
              help="Timed repeats per configuration (default 10, 3 with --quick); a configuration stops early "
                   "after 3 repeats once it has used --max-seconds.")
@click.option("--warmup", type=click.IntRange(0), default=None,
              help="Untimed warm-up calls before timing (default 2, 1 with --quick).")
@click.option("--max-seconds", type=click.FloatRange(0.1), default=None,
              help="Time budget per configuration and batch size after the first 3 repeats (default 15).")
@click.option("--threads", type=click.IntRange(0), default=0, show_default=True,
              help="Inference threads (onnxruntime intra_op_num_threads, torch.set_num_threads); 0 = every "
                   "usable core.")
@click.option("--arch", default="resnet50", show_default=True, help="Architecture when no --model is given.")
@click.option("--input-size", type=click.IntRange(16), default=224, show_default=True,
              help="Input side when no --model is given.")
@click.option("--small-n", type=click.IntRange(0), default=None,
              help="Images in the small (400-700 px JPEG/PNG) end-to-end corpus (default 600, 48 with --quick).")
@click.option("--archive-n", type=click.IntRange(0), default=None,
              help="Images in the archive (~2000x2500 12-bit PNG/DICOM) corpus (default 24, 2 with --quick).")
@click.option("--quick", is_flag=True,
              help="About two minutes for ResNet50 on 2 cores: batch sizes 1,8, 3 repeats, small corpora. "
                   "For smoke tests and `make demo`; figures are indicative only.")
@click.option("--acceptance", is_flag=True,
              help="Instead of benchmarking, run every GPU path whose packages are installed (CUDA AMP "
                   "training over 8 steps, DALI mixed, torch fp16/bf16, TensorRT fp32/fp16/int8 builds and "
                   "parity, onnxruntime CUDA/TensorRT EPs), then images/s and p50/p99 latency per backend, "
                   "precision and batch 1..256 on ResNet50 at 224 px, and TensorRT int8 model-only images/s "
                   "against MLPerf's per-GPU figure; within 10 minutes on one H100/H200. Missing packages "
                   "give skipped rows with the install command. Writes acceptance-<gpu>-<time>.json/.md to "
                   "benchmarks/results/ (or --out); exit 1 on any failure.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where generated corpora and models are cached between runs (default: the temp dir).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("bench_results"),
              show_default=True,
              help="Output directory: bench.json, bench.parquet, bench.md, bench_*.png, README_section.md "
                   "(acceptance.json/.md with --acceptance).")
def bench(model, suites, backends, precisions, devices, batch_sizes, repeats, warmup, max_seconds, threads, arch,
          input_size, small_n, archive_n, quick, acceptance, workdir, out):
    """Benchmark the model, decoders and end-to-end scoring (or run the GPU acceptance).

    Every figure is warmed up, repeated and reported as median and p95/p99; one
    configuration runs per process; GEMM ceilings and the naive scorer (PIL +
    torchvision + DataLoader + eager fp32) are measured in the same run.
    """
    if acceptance:
        explicit_out = click.get_current_context().get_parameter_source("out").name != "DEFAULT"
        _acceptance(model, out if explicit_out else None, workdir, arch if model else "resnet18",
                    input_size if model else 64)
        return
    from fracture_batch.bench.suite import BenchConfig, run_bench

    opts = dict(model=model, arch=arch, input_size=input_size, suites=tuple(Suite(s) for s in suites) or tuple(Suite),
                backends=tuple(backends) or None, precisions=tuple(precisions) or None,
                batch_sizes=batch_sizes, repeats=repeats, warmup=warmup, max_seconds=max_seconds, threads=threads,
                small_n=small_n, archive_n=archive_n, workdir=workdir)
    if devices:
        opts["devices"] = tuple(devices)
    if quick:
        cfg = BenchConfig.quick_preset(out, **opts)
    else:
        cfg = BenchConfig(out=out, **{k: v for k, v in opts.items() if v is not None})
    run = run_bench(cfg)
    click.echo((out / "bench.md").read_text())
    n_ok = sum(r.status == "ok" for r in run.measurements)
    click.echo(f"{n_ok} measurement(s), {len(run.measurements) - n_ok} not measured (reasons in the table); "
               f"results in {out}/ (bench.json, bench.parquet, bench.md, plots)")


def _acceptance(model, out: Path | None, workdir, arch: str, input_size: int) -> None:
    import time

    from fracture_batch.bench.acceptance import run_acceptance
    from fracture_batch.bench.acceptance_report import RESULTS_DIR, format_table, write_results
    from fracture_batch.machine import describe_machine

    t0 = time.perf_counter()
    rows = run_acceptance(model=model, arch=arch, input_size=input_size, workdir=workdir)
    seconds = time.perf_counter() - t0
    click.echo(format_table(rows))
    js, md = write_results(rows, describe_machine(), seconds, out or RESULTS_DIR)
    click.echo(f"{seconds:.0f} s; results in {js} and {md} (send both back)")
    if any(r.status == "fail" for r in rows):
        raise SystemExit(1)
