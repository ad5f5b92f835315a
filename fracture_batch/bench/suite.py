"""``fracture-batch bench``: run the chosen suites, write JSON + Parquet + markdown + plots.

Order matters: ceilings first (the figures below are fractions of them), then
model-only (end-to-end reports its fraction of it), decode, end-to-end. Everything
heavy runs one configuration per child process (``isolate``).
"""
from __future__ import annotations

import dataclasses
import enum
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fracture_batch.machine import cpu_count, describe_machine
from fracture_batch.bench.records import BenchRun, Measurement, write_json, write_parquet

log = logging.getLogger(__name__)


class Suite(str, enum.Enum):
    CEILINGS = "ceilings"
    MODEL = "model"
    DECODE = "decode"
    E2E = "e2e"


@dataclass(frozen=True)
class BenchConfig:
    out: Path
    model: Path | None = None  # export dir, checkpoint or ONNX file; None: random weights
    arch: str = "resnet50"
    input_size: int = 224
    suites: tuple[Suite, ...] = tuple(Suite)
    backends: tuple[str, ...] | None = None  # None: the defaults per device
    precisions: tuple[str, ...] | None = None
    # cuda configurations on a machine without one become rows saying why they were skipped
    devices: tuple[str, ...] = ("cpu", "cuda")
    batch_sizes: tuple[int, ...] = (1, 8, 32, 128)
    warmup: int = 2
    repeats: int = 10
    max_seconds: float = 15.0  # per configuration and batch size, after 3 repeats
    threads: int = 0  # 0: every usable core (ORT intra_op_num_threads, torch.set_num_threads)
    small_n: int = 600
    archive_n: int = 24
    decode_n: int = 12  # files per format in the decode suite
    e2e_repeats: int = 1
    gemm_n: int = 0  # ceiling GEMM side; 0: 4096 (2048 with quick)
    via_export: bool = True  # random model's files made by export.api (False: the bench's quick exporter)
    quick: bool = False
    workdir: Path | None = None  # generated corpora and models (cached between runs)
    in_process: bool = False  # tests only: no child processes

    @classmethod
    def quick_preset(cls, out: Path, **overrides) -> "BenchConfig":
        """About two minutes for ResNet50 on 2 cores: fewer sizes, repeats and images."""
        base = dict(out=out, batch_sizes=(1, 8), warmup=1, repeats=3, max_seconds=2.0, small_n=48,
                    archive_n=2, decode_n=2, e2e_repeats=1, quick=True, via_export=False)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


def run_bench(cfg: BenchConfig) -> BenchRun:
    from fracture_batch.backends import has_cuda

    started = time.time()
    threads = cfg.threads or cpu_count()
    devices = cfg.devices
    work = cfg.workdir or Path(tempfile.gettempdir()) / "fracture-batch-bench"
    run = BenchRun(machine=describe_machine(), measurements=[], run={
        "run_id": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started)),
        "config": _jsonable(dataclasses.asdict(cfg)), "threads": threads, "devices": list(devices),
    })
    rows = run.measurements
    if Suite.CEILINGS in cfg.suites:
        from fracture_batch.bench.ceilings import measure_ceilings

        log.info("measuring GEMM ceilings")
        rows += measure_ceilings(quick=cfg.quick, cuda="cuda" in devices and has_cuda()[0], in_process=cfg.in_process, n=cfg.gemm_n)
    art = None
    if Suite.MODEL in cfg.suites or Suite.E2E in cfg.suites:
        from fracture_batch.bench.artifacts import resolve_artifacts

        art = resolve_artifacts(cfg.model, work / f"model-{cfg.arch}-{cfg.input_size}",
                                arch=cfg.arch, input_size=cfg.input_size, via_export=cfg.via_export)
        run.run["model"] = {"source": art.source, "arch": art.spec.arch, "input_size": art.spec.input_size,
                            "files": {k: str(v) for k, v in art.onnx.items()}}
    if Suite.MODEL in cfg.suites:
        from fracture_batch.bench.model_bench import add_ceiling_fractions, bench_models, resolve_model_configs

        configs = resolve_model_configs(art, backends=cfg.backends, precisions=cfg.precisions, devices=devices)
        log.info("model-only: %d configuration(s)", len(configs))
        rows += bench_models(art, configs, batch_sizes=cfg.batch_sizes, warmup=cfg.warmup, repeats=cfg.repeats,
                             max_seconds=cfg.max_seconds, threads=threads, in_process=cfg.in_process)
        add_ceiling_fractions(rows, rows)
    if Suite.DECODE in cfg.suites:
        rows += _decode_suite(cfg, work, threads)
    if Suite.E2E in cfg.suites:
        rows += _e2e_suite(cfg, work, art, rows)
    run.run["seconds"] = round(time.time() - started, 1)
    # Load before and after: a figure measured on a busy machine says so.
    run.run["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    write_outputs(run, cfg.out)
    return run


def _decode_suite(cfg: BenchConfig, work: Path, threads: int) -> list[Measurement]:
    from fracture_batch.synth.corpus import FORMATS, make_corpus
    from fracture_batch.bench.decode_bench import DECODERS, bench_decode

    size = (400, 700) if cfg.quick else (1500, 2500)
    corpus = {fmt: make_corpus(work / f"decode-{fmt}-{size[0]}", cfg.decode_n, formats=(fmt,), size_range=size)
              for fmt in FORMATS}
    # dali-gpu stays in the list on CPU machines: its rows say why it was skipped.
    log.info("decode: %d format(s) x %d decoder(s)", len(corpus), len(DECODERS))
    return bench_decode(corpus, decoders=DECODERS, warmup=1, repeats=max(2, min(cfg.repeats, 5)),
                        max_seconds=cfg.max_seconds, threads=threads, input_size=cfg.input_size,
                        in_process=cfg.in_process)


def _e2e_suite(cfg: BenchConfig, work: Path, art, rows: list[Measurement]) -> list[Measurement]:
    from fracture_batch.synth.corpus import make_regime_corpus
    from fracture_batch.bench.decode_bench import run_decode_config
    from fracture_batch.bench.e2e_bench import attach_ratios_and_bounds, bench_e2e

    models = {p: str(art.onnx[p]) for p in ("int8", "fp32") if p in art.onnx}
    out: list[Measurement] = []
    for regime, n in (("small", cfg.small_n), ("archive", cfg.archive_n)):
        if n <= 0:
            continue
        corpus = work / f"e2e-{regime}-{n}"
        files = make_regime_corpus(corpus, regime, n)
        warm = work / f"e2e-{regime}-warmup"
        make_regime_corpus(warm, regime, 2, seed=1)  # page cache, lazy imports, ORT arena
        log.info("end-to-end %s: %d images", regime, n)
        regime_rows = bench_e2e(regime=regime, corpus_dir=corpus, warmup_dir=warm, models=models,
                                checkpoint=str(art.checkpoint) if art.checkpoint else None, arch=art.spec.arch,
                                input_size=art.spec.input_size, repeats=cfg.e2e_repeats, in_process=cfg.in_process)
        # One Python decode worker's rate on a sample of this corpus: the decode stage's cost.
        sample = [str(p) for p in files[: min(len(files), 16)]]
        dec = run_decode_config(decoder="python+preprocess", fmt="mixed", paths=sample, warmup=1, repeats=2,
                                max_seconds=cfg.max_seconds, input_size=art.spec.input_size)[0]
        dec.regime, dec.suite, dec.name = regime, "e2e", f"stage/decode+preprocess/{regime}"
        attach_ratios_and_bounds(regime_rows, regime, rows, dec.images_per_s)
        out += regime_rows + [dec]
    return out


def write_outputs(run: BenchRun, out: Path, prefix: str = "bench") -> dict[str, Path]:
    from fracture_batch.bench.report import write_report

    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": write_json(run, out / f"{prefix}.json"), "parquet": write_parquet(run, out / f"{prefix}.parquet")}
    paths.update(write_report(run, out, prefix=prefix))
    return paths


def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, Path):
        return str(v)
    return v
