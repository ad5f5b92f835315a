"""Ray overhead: `score --engine ray` on a local Ray instance against the local runner,
same corpus, same model, same machine, each engine in its own child process.

    python -m benchmarks.bench_ray                                   # 600 small images, ResNet50 224 px
    python -m benchmarks.bench_ray --n 24 --arch resnet18 --input-size 64 --repeats 1 \\
        --out /tmp/bench-ray                                         # smoke run, ~1-2 min
    python -m benchmarks.bench_ray --address auto --workers 1,2,4,8 --gpus-per-worker 1 \\
        --workdir /shared/fb-bench --out /shared/fb-bench/results    # scaling on a real cluster

Reported per engine: images/s over the scoring itself (discovery to last part
committed; for Ray this includes starting the actor pool and loading the model in
each actor, which the local runner does before its clock starts), the wall time of the
whole call (model load included) and, for Ray, the time `ray.init` took. The first
Ray repeat is cold (worker processes started); later ones reuse the running instance,
as a long-lived cluster would. Writes ray_overhead.{json,md} into --out.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from fracture_batch.bench.records import BenchRun, Measurement, write_json
from fracture_batch.bench.stats import summarize
from fracture_batch.machine import busy_note


def _score_once(engine: str, corpus: str, model: str, batch_size: int, engine_kwargs: dict[str, Any]):
    from fracture_batch.scoring.local import ScoreConfig, score

    out = tempfile.mkdtemp(prefix=f"fb-bench-{engine}-")
    try:
        # engine_kwargs: RayConfig fields for Ray, ScoreConfig overrides (the thread split) for local.
        cfg = ScoreConfig(inputs=(corpus,), model=model, out=out, device="cpu", decoder="python",
                          batch_size=batch_size, overwrite=True, **({} if engine == "ray" else engine_kwargs))
        t0 = time.perf_counter()
        if engine == "ray":
            from fracture_batch.scoring.ray.engine import RayConfig, run_ray

            summary = run_ray(cfg, RayConfig(**engine_kwargs))
        else:
            summary = score(cfg)
        wall = time.perf_counter() - t0
        if summary.errors:
            raise RuntimeError(f"{summary.errors} error row(s) on a generated corpus")
        return summary, wall
    finally:
        shutil.rmtree(out, ignore_errors=True)


def measure(*, engine: str, corpus_dir: str, model_path: str, batch_size: int, repeats: int,
            engine_kwargs: dict[str, Any] | None = None, label: str = "", address: str | None = None
            ) -> list[Measurement]:
    """One engine, ``repeats`` runs in this process (the child ``run_isolated`` started)."""
    engine_kwargs = dict(engine_kwargs or {})
    extra: dict[str, Any] = {}
    if engine == "ray":
        import os

        import ray

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        t0 = time.perf_counter()
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False)
        extra["ray_init_s"] = round(time.perf_counter() - t0, 3)
        extra["cluster"] = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
    try:
        runs = [_score_once(engine, corpus_dir, model_path, batch_size, engine_kwargs) for _ in range(max(1, repeats))]
    finally:
        if engine == "ray":
            ray.shutdown()
    summaries = [s for s, _ in runs]
    rates = [s.scored / s.seconds for s in summaries if s.seconds > 0]
    s0 = summaries[-1]
    extra.update(run_s=[s.seconds for s in summaries], wall_s=[round(w, 3) for _, w in runs],
                 threads=s0.threads, backend_detail=s0.backend_detail, decoder=s0.decoder, ray=engine_kwargs)
    return [Measurement(
        suite="ray", name=label or engine, backend=s0.backend, device=s0.device, batch_size=batch_size,
        n_images=s0.scored, repeats=len(runs), images_per_s=summarize(rates).p50,
        threads=s0.threads.get("intra_op"), extra=extra,
    )]


LOCAL_RAY_SPLIT = "local, Ray's split of the cores (1 decode worker + 1 inference thread)"


def _median_wall(r: Measurement | None) -> float | None:
    w = (r.extra.get("wall_s") or []) if r is not None else []
    return summarize(w).p50 if w else None


def markdown(run: BenchRun) -> str:
    from fracture_batch.bench.report import machine_line, table

    rows = run.measurements
    local = next((r for r in rows if r.name == "local" and r.status == "ok"), None)
    local_wall = _median_wall(local)

    def vs_local(r: Measurement) -> str:
        w = _median_wall(r) if r.status == "ok" else None
        if w is None or not local_wall:
            return ""
        return f"{w / local_wall:.2f}x ({w - local_wall:+.1f} s)"

    o = run.run
    return "\n".join([
        "# Ray overhead: local Ray instance vs the local runner\n",
        busy_note(run.machine, run.run.get("load_average_end"), rerun="`python -m benchmarks.bench_ray`"),
        f"Machine: {machine_line(run.machine)}\n",
        f"Corpus: {o['n']} generated `{o['regime']}` images; model: {o['model']}; batch size {o['batch_size']}; "
        f"{o['repeats']} repeat(s) per engine, each engine in its own process. Run took {o['seconds']} s.\n",
        table(rows, [
            ("engine", lambda r: r.name),
            ("images/s (median)", lambda r: "" if r.images_per_s is None else f"{r.images_per_s:.1f}"),
            ("wall per run incl. model load, s", lambda r: ", ".join(f"{x:.1f}" for x in r.extra.get("wall_s") or [])),
            ("wall vs local (median)", vs_local),
            ("ray.init, s", lambda r: str(r.extra.get("ray_init_s", ""))),
            ("workers / threads", lambda r: str(r.extra.get("threads", ""))),
            ("status", lambda r: r.status if r.status == "ok" else f"{r.status}: {r.note}"),
        ]),
        "images/s counts discovery to the last committed part. For Ray that interval also holds starting "
        "the actor pool, loading the model in each actor, moving each decoded tensor "
        f"(3 x {o['input_size']}^2 float32 = {3 * o['input_size'] ** 2 * 4 / 1e6:.2f} MB) through the object "
        "store, and committing the staged files; the local runner loads its model before its clock starts. "
        "The wall columns include everything but `ray.init` (the first Ray repeat also starts the worker "
        "processes). Cores: the local runner lets its decode workers and inference threads share them; "
        "Ray reserves them (decode task slots, one CPU per actor and as many onnxruntime threads), as its "
        f"scheduler expects. The row \"{LOCAL_RAY_SPLIT}\" is the local runner with Ray's split: the "
        "difference between it and Ray is Ray's own overhead, the rest is the split.\n",
    ])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=600, help="images in the corpus")
    p.add_argument("--regime", default="small", choices=("small", "archive"), help="corpus regime (corpus.py)")
    p.add_argument("--model", default=None, help="an .onnx file or export dir (default: random-weight --arch)")
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", default="0",
                   help="Ray Predictor actors; a comma list (1,2,4) measures how throughput scales "
                        "(0: RayConfig's default)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0)
    p.add_argument("--address", default=None,
                   help="an existing Ray cluster (auto, ray://HOST:10001) instead of a local instance; "
                        "--workdir must then be on storage every node sees at the same path")
    p.add_argument("--fused", action="store_true", help="also measure Ray with decoding fused into the actors")
    p.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "fb-bench-ray"))
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per engine")
    p.add_argument("--report-only", metavar="JSON", help="only rewrite the markdown from a ray_overhead.json")
    return p


def _configs(workers: str, gpus_per_worker: float, fused: bool) -> list[tuple[str, dict[str, Any]]]:
    """(label, engine kwargs) of every row.

    Ray reserves CPUs exclusively (decode tasks on one, each actor's onnxruntime on its
    own), while the local runner lets decode and inference share the cores: the second
    local row uses Ray's split, so the table separates Ray's overhead from the split's.
    """
    counts = [int(w) for w in str(workers).split(",")]
    common = {"gpus_per_worker": gpus_per_worker}
    configs = [("local", {}), (LOCAL_RAY_SPLIT, {"decode_workers": 1, "intra_op_threads": 1})]
    configs += [(f"ray, {w or 'default'} worker(s)" if len(counts) > 1 else "ray", {"workers": w, **common})
                for w in counts]
    if fused:
        configs.append(("ray (decode fused into actors)", {"workers": counts[0], "fuse_decode": True, **common}))
    return configs


def main(argv: list[str] | None = None) -> None:
    a = _parser().parse_args(argv)
    out = Path(a.out)
    if a.report_only:
        from fracture_batch.bench.records import read_json

        (out / "ray_overhead.md").write_text(markdown(read_json(a.report_only)))
        print((out / "ray_overhead.md").read_text())
        return

    from fracture_batch.bench.artifacts import resolve_artifacts
    from fracture_batch.synth.corpus import make_regime_corpus
    from fracture_batch.bench.isolate import run_isolated
    from fracture_batch.machine import describe_machine

    started = time.perf_counter()
    work = Path(a.workdir)
    arts = resolve_artifacts(a.model, work / "model", arch=a.arch, input_size=a.input_size, int8=False)
    model = str(arts.onnx["fp32"])
    corpus = work / f"corpus-{a.regime}-{a.n}"
    make_regime_corpus(corpus, a.regime, a.n)
    machine = describe_machine()
    rows: list[Measurement] = []
    for label, engine_kwargs in _configs(a.workers, a.gpus_per_worker, a.fused):
        engine = "local" if label.startswith("local") else "ray"
        kwargs = dict(engine=engine, corpus_dir=str(corpus), model_path=model, batch_size=a.batch_size,
                      repeats=a.repeats, engine_kwargs=engine_kwargs, label=label, address=a.address)
        rows += run_isolated("fracture_batch.bench.ray_bench:measure", kwargs, timeout_s=a.timeout,
                             label=Measurement(suite="ray", name=label, batch_size=a.batch_size))
    run = BenchRun(machine=machine, measurements=rows, run={
        "n": a.n, "regime": a.regime, "model": arts.source, "input_size": arts.spec.input_size,
        "batch_size": a.batch_size, "repeats": a.repeats, "seconds": round(time.perf_counter() - started, 1),
    })
    write_json(run, out / "ray_overhead.json")
    (out / "ray_overhead.md").write_text(markdown(run))
    print((out / "ray_overhead.md").read_text())


if __name__ == "__main__":
    main()
