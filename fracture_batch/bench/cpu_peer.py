"""``score`` with OpenVINO against the plain PIL + OpenVINO scorer, in alternated rounds.

On a shared VM one configuration measured minutes after another can differ by +-30 %
(the host's load, not ours): a single pair of rows gives a ratio anywhere in 0.7-1.2.
Here each round runs the peer and then each score variant once, every run in its own
process (``run_isolated``), and the report gives every round's same-run ratio and their
median, with the CPU time per image of each run (scoring process + decode children).
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
                                 decode_isolation=variant.decode_isolation),
                            label=label, timeout_s=1800)
    row = rows[0]
    row.name = label.name
    return row


def alternate_rounds(*, corpus: str, model: str, warmup: str | None = None, rounds: int = 3,
                     variants: tuple[Variant, ...] = DEFAULT_VARIANTS) -> dict:
    """Per round: the plain peer, then each variant; returns runs, per-round ratios, medians."""
    runs: list[dict] = []
    for i in range(rounds):
        for variant in (None, *variants):
            r = _one(variant, corpus, warmup, model)
            runs.append({"round": i, "name": r.name, "status": r.status, "note": r.note,
                         "images_per_s": r.images_per_s, "load_1min": os.getloadavg()[0],
                         "cpu_ms_per_image_main": r.extra.get("cpu_ms_per_image_main"),
                         "cpu_ms_per_image_decode_children": r.extra.get("cpu_ms_per_image_decode_children"),
                         "wall_s_with_load": (r.extra.get("wall_s_with_load") or [None])[0]})
    ratios: dict[str, list[float]] = {}
    for i in range(rounds):
        peer = next((r for r in runs if r["round"] == i and r["name"].startswith("plain/")), None)
        for r in runs:
            if r["round"] == i and peer and r is not peer and r["images_per_s"] and peer["images_per_s"]:
                ratios.setdefault(r["name"], []).append(r["images_per_s"] / peer["images_per_s"])
    return {"runs": runs, "ratio_vs_plain_per_round": ratios,
            "median_ratio_vs_plain": {k: statistics.median(v) for k, v in ratios.items()}}


def write_report(result: dict, out: Path, header: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "cpu_peer.json").write_text(json.dumps(result, indent=2))
    lines = [header, "", "| round | what | images/s | CPU ms/image: scoring process + decode children | "
             "load (1 min) |", "|---|---|---|---|---|"]
    for r in result["runs"]:
        kids = r["cpu_ms_per_image_decode_children"]
        cpu = f"{r['cpu_ms_per_image_main'] or 0:.1f}" + (f" + {kids:.1f}" if kids else "")
        lines.append(f"| {r['round'] + 1} | {r['name']} | {r['images_per_s'] or 0:.1f} | {cpu} | {r['load_1min']:.2f} |")
    lines += ["", "| what | same-run ratio vs plain, per round | median |", "|---|---|---|"]
    for name, v in result["ratio_vs_plain_per_round"].items():
        lines.append(f"| {name} | {', '.join(f'{x:.2f}' for x in v)} | "
                     f"{result['median_ratio_vs_plain'][name]:.2f} |")
    (out / "cpu_peer.md").write_text("\n".join(lines) + "\n")
