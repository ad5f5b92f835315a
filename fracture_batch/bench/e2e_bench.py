"""End-to-end: the real ``score`` (``runner.score``) on a generated corpus against the
naive scorer (``naive.naive_score``) measured in the same run, as a ratio.

Throughput on both sides excludes model loading (session build / eager model
construction, reported as ``build_s``) and counts everything from the first file read
to the last result written, Parquet included; the wall time with loading is kept in
``extra``. Each score / naive run is its own child process (thread pools, page cache
warmed by an untimed warm-up run on a slice of the corpus).

Which stage bounds it: on a CPU decode and inference share the cores, so each stage's
cost is counted in core-seconds per image (decode: one Python worker's time per image;
inference: model-only time per image x its threads); the larger one bounds.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from fracture_batch.bench.records import Measurement
from fracture_batch.bench.stats import summarize

log = logging.getLogger(__name__)


def run_score_config(*, corpus_dir: str, model_path: str, backend: str, precision: str, batch_size: int,
                     repeats: int, warmup_dir: str | None = None, decoder: str = "auto",
                     decode_isolation: str = "process", decode_workers: int = 0) -> list[Measurement]:
    from fracture_batch.scoring.local import ScoreConfig, score

    cpu: list[tuple[float, float]] = []  # per timed run: (this process, decode children) CPU s

    def once(inputs: str) -> tuple[Any, float]:
        out = tempfile.mkdtemp(prefix="fb-bench-score-")
        try:
            cfg = ScoreConfig(inputs=(inputs,), model=model_path, out=out, backend=backend, device="cpu",
                              decoder=decoder, batch_size=batch_size, overwrite=True, amp=precision == "bf16",
                              decode_isolation=decode_isolation, decode_workers=decode_workers)
            self0, kids0 = _cpu_seconds()
            t0 = time.perf_counter()
            summary = score(cfg)
            wall = time.perf_counter() - t0
            self1, kids1 = _cpu_seconds()  # decode children are reaped by then: their time counts
            cpu.append((self1 - self0, kids1 - kids0))
            return summary, wall
        finally:
            shutil.rmtree(out, ignore_errors=True)

    if warmup_dir:
        once(warmup_dir)
        cpu.clear()
    runs = [once(corpus_dir) for _ in range(max(1, repeats))]
    summ = [s for s, _ in runs]
    rates = [s.scored / s.seconds for s in summ if s.seconds > 0]
    s0 = summ[len(summ) // 2]
    if any(s.errors for s in summ):
        raise RuntimeError(f"score reported {s0.errors} error row(s) on a generated corpus")
    row = Measurement(suite="e2e", name=f"score/{backend}/{precision}", backend=backend, precision=precision,
                      batch_size=batch_size, n_images=s0.scored, repeats=len(runs),
                      warmup=1 if warmup_dir else 0, images_per_s=summarize(rates).p50,
                      extra={"wall_s_with_load": [w for _, w in runs], "decoder": s0.decoder,
                             "backend_detail": s0.backend_detail, "threads": s0.threads,
                             "run_s": [s.seconds for s in summ],
                             # Where the cores went (model loading included, ~0.1-0.3 s a run):
                             # inference + plumbing in the scoring process vs the decode children.
                             "cpu_ms_per_image_main": summarize([c[0] * 1e3 / s.scored for c, s in zip(cpu, summ)]).p50,
                             "cpu_ms_per_image_decode_children": summarize(
                                 [c[1] * 1e3 / s.scored for c, s in zip(cpu, summ)]).p50})
    row.build_s = summarize([w - s.seconds for s, w in runs]).p50
    row.threads = s0.threads.get("intra_op")
    return [row]


def _cpu_seconds() -> tuple[float, float]:
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def run_naive_config(*, corpus_dir: str, checkpoint: str | None, arch: str, input_size: int,
                     repeats: int, warmup_dir: str | None = None) -> list[Measurement]:
    from fracture_batch.bench.naive import naive_score

    def paths(d: str) -> list[str]:
        return sorted(str(p) for p in Path(d).iterdir() if p.is_file())

    kw = dict(checkpoint=checkpoint, arch=arch, input_size=input_size)
    if warmup_dir:
        naive_score(paths(warmup_dir), **kw)
    runs = []
    for _ in range(max(1, repeats)):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(naive_score(paths(corpus_dir), Path(tmp) / "out.parquet", **kw))
    rates = [r["n"] / (r["seconds"] - r["build_s"]) for r in runs]
    return [Measurement(suite="e2e", name="naive/torch-eager/fp32", backend="naive", precision="fp32",
                        batch_size=32, n_images=runs[0]["n"], repeats=len(runs), warmup=1 if warmup_dir else 0,
                        images_per_s=summarize(rates).p50, build_s=summarize([r["build_s"] for r in runs]).p50,
                        note="PIL + torchvision transforms + DataLoader(num_workers=2) + eager fp32 model",
                        extra={"wall_s_with_load": [r["seconds"] for r in runs]})]


def run_plain_openvino_config(*, corpus_dir: str, model_path: str, repeats: int,
                              warmup_dir: str | None = None) -> list[Measurement]:
    """The CPU peer row: ``plain_openvino.plain_openvino_score`` on the project's int8 file."""
    from fracture_batch.bench.plain_openvino import plain_openvino_score

    def paths(d: str) -> list[str]:
        return sorted(str(p) for p in Path(d).iterdir() if p.is_file())

    if warmup_dir:
        plain_openvino_score(paths(warmup_dir), model_path)
    runs, cpu = [], []
    for _ in range(max(1, repeats)):
        with tempfile.TemporaryDirectory() as tmp:
            c0 = _cpu_seconds()[0]
            runs.append(plain_openvino_score(paths(corpus_dir), model_path, str(Path(tmp) / "out.parquet")))
            cpu.append((_cpu_seconds()[0] - c0) * 1e3 / runs[-1]["n"])
    return [Measurement(suite="e2e", name="plain/pil+openvino/int8", backend="plain-openvino", precision="int8",
                        batch_size=16, n_images=runs[0]["n"], repeats=len(runs), warmup=1 if warmup_dir else 0,
                        images_per_s=summarize([r["images_per_s"] for r in runs]).p50,
                        build_s=summarize([r["build_s"] for r in runs]).p50,
                        note="PIL decode + resize + normalise, OpenVINO THROUGHPUT AsyncInferQueue, batch 16",
                        extra={"wall_s_with_load": [r["seconds"] for r in runs],
                               "cpu_ms_per_image_main": summarize(cpu).p50})]


def attach_ratios_and_bounds(rows: list[Measurement], regime: str, model_rows: list[Measurement],
                             decode_rate_1worker: float | None) -> None:
    """Ratio vs the naive row of the same regime, fraction of model-only throughput
    (same backend/precision, the runner's batch size or the nearest measured), bound stage."""
    naive = next((r for r in rows if r.backend == "naive" and r.status == "ok"), None)
    plain = next((r for r in rows if r.backend == "plain-openvino" and r.status == "ok"), None)
    for r in rows:
        r.regime = regime
        if r.status != "ok" or r.backend in ("naive", "plain-openvino"):
            continue
        if naive and naive.images_per_s:
            r.ratio_vs_naive = r.images_per_s / naive.images_per_s
        if plain and plain.images_per_s:
            r.extra["ratio_vs_plain_openvino"] = r.images_per_s / plain.images_per_s
        m = _model_row(model_rows, r.backend, r.precision, r.batch_size or 32)
        if m is None or not m.images_per_s:
            continue
        r.fraction_of_model_only = r.images_per_s / m.images_per_s
        r.extra["model_only_images_per_s"] = m.images_per_s
        r.extra["model_only_batch"] = m.batch_size
        infer_core_s = (m.threads or 1) / m.images_per_s
        if decode_rate_1worker:
            decode_core_s = 1.0 / decode_rate_1worker
            r.extra.update(decode_core_ms_per_image=decode_core_s * 1e3, infer_core_ms_per_image=infer_core_s * 1e3)
            r.bound_by = "decode" if decode_core_s > infer_core_s else "inference"
            # Decode and inference share the cores: every image costs both, so the cores
            # divided by the sum is what the run could reach with no idle core and no overhead.
            bound = (m.threads or 1) / (decode_core_s + infer_core_s)
            r.extra.update(bound_images_per_s=bound, fraction_of_bound=r.images_per_s / bound)


def _model_row(model_rows: list[Measurement], backend: str, precision: str, bs: int) -> Measurement | None:
    cands = [m for m in model_rows if m.suite == "model" and m.status == "ok" and m.backend == backend
             and m.precision == precision and m.device == "cpu" and m.batch_size]
    if not cands:
        return None
    return min(cands, key=lambda m: abs((m.batch_size or 0) - bs))


def bench_e2e(*, regime: str, corpus_dir: Path, warmup_dir: Path | None, models: dict[str, str],
              checkpoint: str | None, arch: str, input_size: int, repeats: int, batch_size: int = 32,
              in_process: bool = False) -> list[Measurement]:
    """``models``: precision -> ONNX file, each scored with the onnxruntime backend (and, where
    openvino is installed, the int8 file with OpenVINO beside the plain PIL + OpenVINO peer)."""
    from fracture_batch.bench.isolate import run_isolated

    rows = run_isolated(
        "fracture_batch.bench.e2e_bench:run_naive_config",
        dict(corpus_dir=str(corpus_dir), checkpoint=checkpoint, arch=arch, input_size=input_size,
             repeats=repeats, warmup_dir=str(warmup_dir) if warmup_dir else None),
        label=Measurement("e2e", "naive/torch-eager/fp32", "naive", "fp32"), in_process=in_process, timeout_s=3600)
    for precision, path in models.items():
        rows += run_isolated(
            "fracture_batch.bench.e2e_bench:run_score_config",
            dict(corpus_dir=str(corpus_dir), model_path=str(path), backend="onnxruntime", precision=precision,
                 batch_size=batch_size, repeats=repeats, warmup_dir=str(warmup_dir) if warmup_dir else None),
            label=Measurement("e2e", f"score/onnxruntime/{precision}", "onnxruntime", precision),
            in_process=in_process, timeout_s=3600)
    rows += _openvino_rows(corpus_dir, warmup_dir, models, repeats, batch_size, in_process, regime)
    for r in rows:
        r.regime = regime
    return rows


def _openvino_rows(corpus_dir: Path, warmup_dir: Path | None, models: dict[str, str], repeats: int,
                   batch_size: int, in_process: bool, regime: str = "small") -> list[Measurement]:
    from fracture_batch.backends.openvino_backend import has_openvino
    from fracture_batch.bench.isolate import run_isolated

    if "int8" not in models or not has_openvino()[0]:
        return []
    warm = str(warmup_dir) if warmup_dir else None
    plain = Measurement("e2e", "plain/pil+openvino/int8", "plain-openvino", "int8")
    if regime == "small":
        rows = run_isolated(
            "fracture_batch.bench.e2e_bench:run_plain_openvino_config",
            dict(corpus_dir=str(corpus_dir), model_path=str(models["int8"]), repeats=repeats, warmup_dir=warm),
            label=plain, in_process=in_process, timeout_s=3600)
    else:  # the plain scorer is PIL alone: it cannot read the archive regime's DICOM files
        plain.status, plain.note = "skipped", "the plain PIL scorer reads no DICOM (archive regime)"
        rows = [plain]
    rows += run_isolated(
        "fracture_batch.bench.e2e_bench:run_score_config",
        dict(corpus_dir=str(corpus_dir), model_path=str(models["int8"]), backend="openvino", precision="int8",
             batch_size=batch_size, repeats=repeats, warmup_dir=warm),
        label=Measurement("e2e", "score/openvino/int8", "openvino", "int8"), in_process=in_process, timeout_s=3600)
    return rows
