"""``score`` with OpenVINO against the plain PIL + OpenVINO scorer, in alternated rounds.

On a shared VM one configuration measured minutes after another can differ by +-30 %
(the host's load, not ours): a single pair of rows gives a ratio anywhere in 0.7-1.2.
Here each round runs the peer and then each score variant once, every run in its own
process (``run_isolated``), and the report gives every round's same-run ratio and their
median, with the CPU time per image of each run (scoring process + decode children).
Each round also measures, in its own process just before the runs, the per-image CPU
costs the bound is made of (``run_costs``): our decode (``decode_one``: the pixel contract,
in process, one thread), the plain scorer's decode (PIL 8-bit), and OpenVINO int8 inference
driven as the runner drives it (batch 32, a batch in flight). The bound of a scorer is
cores / (its decode + inference core-ms per image): what it would reach with every core busy
and nothing else spent; "of bound" = images/s / bound, same round.
Entry: ``python -m benchmarks.bench_cpu_peer`` (benchmarks/results/openvino_cpu.md).
"""
from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from fracture_batch.bench.isolate import run_isolated
from fracture_batch.bench.records import Measurement


@dataclass(frozen=True)
class Variant:
    name: str  # shown in the table
    batch_size: int = 32
    decode_isolation: str = "process"
    decode_workers: int = 0  # 0: the runner's default (scoring/threads.py)


DEFAULT_VARIANTS = (Variant("score/openvino/int8"),)


def _one(variant: Variant | None, corpus: str, warmup: str | None, model: str) -> Measurement:
    if variant is None:
        label = Measurement("e2e", "plain/pil+openvino/int8", "plain-openvino", "int8")
        rows = run_isolated("fracture_batch.bench.e2e_bench:run_plain_openvino_config",
                            dict(corpus_dir=corpus, model_path=model, repeats=1, warmup_dir=warmup),
                            label=label, timeout_s=1800)
    else:
        label = Measurement("e2e", variant.name, "openvino", "int8")
        rows = run_isolated("fracture_batch.bench.e2e_bench:run_score_config",
                            dict(corpus_dir=corpus, model_path=model, backend="openvino", precision="int8",
                                 batch_size=variant.batch_size, repeats=1, warmup_dir=warmup,
                                 decode_isolation=variant.decode_isolation,
                                 decode_workers=variant.decode_workers),
                            label=label, timeout_s=1800)
    row = rows[0]
    row.name = label.name
    return row


def run_costs(*, corpus_dir: str, model_path: str, n_decode: int = 300, n_infer: int = 384,
              batch_size: int = 32) -> list[Measurement]:
    """Child-process body: per-image CPU ms of each stage measured alone (process CPU time)."""
    import time

    import numpy as np
    from PIL import Image

    from fracture_batch.backends.base import BackendOptions, DeviceKind
    from fracture_batch.backends.openvino_backend import OpenVinoBackend
    from fracture_batch.decode.types import InputFile
    from fracture_batch.decode.workers import DecodeOptions, decode_one

    paths = sorted(str(p) for p in Path(corpus_dir).iterdir() if p.is_file())[:n_decode]
    be = OpenVinoBackend(model_path, DeviceKind.CPU, BackendOptions())
    spec, size = be.spec, be.spec.input_size
    mean = np.asarray(spec.mean, np.float32)[:, None, None]
    std = np.asarray(spec.std, np.float32)[:, None, None]

    def plain_decode(p: str) -> np.ndarray:  # plain_openvino.py's per-image code
        gray = Image.open(p).convert("L").resize((size, size), Image.Resampling.BILINEAR)
        return (np.asarray(gray, np.float32)[None] / 255.0 - mean) / std

    def ours(p: str):
        return decode_one(InputFile(p, os.path.basename(p), os.path.getsize(p)), spec, DecodeOptions())

    def core_ms(fn, items) -> float:
        for item in items[:8]:
            fn(item)  # imports, page cache
        c0 = time.process_time()
        for item in items:
            fn(item)
        return (time.process_time() - c0) * 1e3 / len(items)

    x = np.random.default_rng(0).standard_normal((batch_size, 3, size, size), dtype=np.float32)
    steps = max(2, n_infer // batch_size)
    previous, job = be.submit(x), be.submit(x)
    previous.result()  # warmed up, and one batch in flight from here on
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(steps):
        job, previous = be.submit(x), job
        previous.result()
    infer_ms, wall = (time.process_time() - c0) * 1e3 / (steps * batch_size), time.perf_counter() - t0
    be.close()
    extra = {"decode_core_ms_ours": core_ms(ours, paths), "decode_core_ms_plain": core_ms(plain_decode, paths),
             "infer_core_ms": infer_ms, "infer_images_per_s": steps * batch_size / wall}
    return [Measurement("e2e", "stage costs", "openvino", "int8", n_images=len(paths), extra=extra)]


def _costs(corpus: str, model: str) -> dict:
    rows = run_isolated("fracture_batch.bench.cpu_peer:run_costs", dict(corpus_dir=corpus, model_path=model),
                        label=Measurement("e2e", "stage costs", "openvino", "int8"), timeout_s=900)
    return rows[0].extra if rows[0].status == "ok" else {}


def alternate_rounds(*, corpus: str, model: str, warmup: str | None = None, rounds: int = 3,
                     variants: tuple[Variant, ...] = DEFAULT_VARIANTS) -> dict:
    """Per round: the plain peer, then each variant; returns runs, per-round ratios, medians."""
    from fracture_batch.machine import cpu_count

    cores = cpu_count()
    runs: list[dict] = []
    costs: list[dict] = []
    for i in range(rounds):
        costs.append(_costs(corpus, model))
        for variant in (None, *variants):
            r = _one(variant, corpus, warmup, model)
            runs.append({"round": i, "name": r.name, "status": r.status, "note": r.note,
                         "images_per_s": r.images_per_s, "load_1min": os.getloadavg()[0],
                         "cpu_ms_per_image_main": r.extra.get("cpu_ms_per_image_main"),
                         "cpu_ms_per_image_decode_children": r.extra.get("cpu_ms_per_image_decode_children"),
                         "wall_s_with_load": (r.extra.get("wall_s_with_load") or [None])[0]})
    ratios: dict[str, list[float]] = {}
    of_bound: dict[str, list[float]] = {}
    for i in range(rounds):
        peer = next((r for r in runs if r["round"] == i and r["name"].startswith("plain/")), None)
        for r in (r for r in runs if r["round"] == i):
            c = costs[i]
            if c and r["images_per_s"]:
                decode = c["decode_core_ms_plain"] if r is peer else c["decode_core_ms_ours"]
                r["bound_images_per_s"] = cores * 1e3 / (decode + c["infer_core_ms"])
                r["of_bound"] = r["images_per_s"] / r["bound_images_per_s"]
                of_bound.setdefault(r["name"], []).append(r["of_bound"])
            if peer and r is not peer and r["images_per_s"] and peer["images_per_s"]:
                ratios.setdefault(r["name"], []).append(r["images_per_s"] / peer["images_per_s"])
    return {"runs": runs, "costs_per_round": costs, "cores": cores, "ratio_vs_plain_per_round": ratios,
            "median_ratio_vs_plain": {k: statistics.median(v) for k, v in ratios.items()},
            "of_bound_per_round": of_bound, "median_of_bound": {k: statistics.median(v) for k, v in of_bound.items()}}


def write_report(result: dict, out: Path, header: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "cpu_peer.json").write_text(json.dumps(result, indent=2))
    lines = [header, "", "Stage costs per round (CPU ms per image, each measured alone just before the round's runs):",
             "", "| round | decode, ours | decode, plain | inference (OpenVINO int8, batch 32, one in flight) "
             "| inference images/s |", "|---|---|---|---|---|"]
    for i, c in enumerate(result.get("costs_per_round", [])):
        if c:
            lines.append(f"| {i + 1} | {c['decode_core_ms_ours']:.2f} | {c['decode_core_ms_plain']:.2f} | "
                         f"{c['infer_core_ms']:.2f} | {c['infer_images_per_s']:.1f} |")
    lines += ["", "| round | what | images/s | CPU ms/image: scoring process + decode children | bound | of bound "
              "| load (1 min) |", "|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        kids = r["cpu_ms_per_image_decode_children"]
        cpu = f"{r['cpu_ms_per_image_main'] or 0:.1f}" + (f" + {kids:.1f}" if kids else "")
        bound = f"{r['bound_images_per_s']:.1f} | {r['of_bound']:.0%}" if "of_bound" in r else " | "
        lines.append(f"| {r['round'] + 1} | {r['name']} | {r['images_per_s'] or 0:.1f} | {cpu} | {bound} "
                     f"| {r['load_1min']:.2f} |")
    lines += ["", "| what | per round | median |", "|---|---|---|"]
    for name, v in result["ratio_vs_plain_per_round"].items():
        lines.append(f"| {name} / plain (same round) | {', '.join(f'{x:.2f}' for x in v)} | "
                     f"{result['median_ratio_vs_plain'][name]:.2f} |")
    for name, v in result.get("of_bound_per_round", {}).items():
        lines.append(f"| {name}: of its bound | {', '.join(f'{x:.0%}' for x in v)} | "
                     f"{result['median_of_bound'][name]:.0%} |")
    (out / "cpu_peer.md").write_text("\n".join(lines) + "\n")
