"""DICOM decode benchmark (issue 13): decode + preprocess ms per image per transfer syntax,
full vs reduced (the spec's rule at several ratios), and the host part of the device path,
all in one run on one archive, with the tensor / probability parity of each reduction.

Each file is timed in every mode in turn (full, reduced@ratio..., device host part) before
the next repeat, so the modes see the same machine state; the median of the repeats is
reported. ``write_results`` puts the JSON and a Markdown table in benchmarks/results/
with the CPU model and load average.
"""
from __future__ import annotations

import json
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def _ms(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def run_dicom_decode_bench(work: str | Path, *, n_images: int = 2, shape: tuple[int, int] = (2500, 2000),
                           input_size: int = 224, repeats: int = 3, ratios: tuple[float, ...] = (1.0, 2.0, 4.0),
                           model: str | Path | None = None, seed: int = 0) -> dict[str, Any]:
    """Rows per (file, mode) plus a per-syntax summary; ``model``: a checkpoint whose spec
    and weights give the probabilities (default: a spec of ``input_size``, no probabilities)."""
    from fracture_batch.decode import decode_for_model
    from fracture_batch.decode.gpu_dicom import has_nvimgcodec, prepare
    from fracture_batch.machine import cpu_info, load_average
    from fracture_batch.model.spec import ModelSpec
    from fracture_batch.synth.dicom_archive import generate_dicom_archive

    net, spec = None, ModelSpec(input_size=input_size)
    if model is not None:
        from fracture_batch.model.checkpoint import load_checkpoint

        net, spec = load_checkpoint(model)
        net.eval()
    load_before = load_average()
    files = generate_dicom_archive(Path(work) / f"archive-{shape[0]}x{shape[1]}", n_images, shape=shape, seed=seed)
    specs = {"full": None, **{f"reduced@{r:g}": spec.replace(reduce_min_ratio=r) for r in ratios}}
    device_host = has_nvimgcodec()[0]
    rows: list[dict[str, Any]] = []
    for f in files:
        tensors, infos, times = {}, {}, {m: [] for m in specs}
        times["device-host-part"] = []
        for rep in range(repeats + 1):  # first pass: warm-up (page cache, plugin imports)
            for mode, sp in specs.items():
                fn = (lambda: decode_for_model(f.path, spec, reduce=False)) if sp is None else \
                    (lambda sp=sp: decode_for_model(f.path, sp))
                t0 = time.perf_counter()
                tensors[mode], infos[mode] = fn()
                if rep:
                    times[mode].append((time.perf_counter() - t0) * 1e3)
            if device_host:
                ms = _ms(lambda: prepare(f.path))
                if rep:
                    times["device-host-part"].append(ms)
        probs = _probabilities(net, spec, tensors) if net is not None else {}
        for mode, ts in times.items():
            if not ts:
                continue
            row = {"image": f.image, "syntax": f.syntax.value, "photometric": f.photometric,
                   "megapixels": round(f.width * f.height / 1e6, 2), "mode": mode,
                   "ms_median": round(statistics.median(ts), 2), "ms_min": round(min(ts), 2)}
            if mode in tensors:
                g = infos[mode].geometry
                d = np.abs(tensors[mode] - tensors["full"])
                row.update(method=g.method if g is not None else "full", factor=g.factor if g is not None else 1,
                           max_diff=round(float(d.max()), 5), mean_diff=round(float(d.mean()), 6))
                if probs:
                    row.update(prob=round(probs[mode], 5), dprob=round(abs(probs[mode] - probs["full"]), 5))
            rows.append(row)
        log.info("%s: %s", f.path.name, {m: round(statistics.median(t), 1) for m, t in times.items() if t})
    return {"machine": cpu_info(), "load_average_before": load_before, "load_average_after": load_average(),
            "shape": list(shape), "input_size": spec.input_size, "resize_mode": spec.resize_mode.value,
            "default_ratio": spec.reduce_min_ratio, "repeats": repeats, "model": str(model) if model else None,
            "rows": rows, "summary": summarize(rows, f"reduced@{spec.reduce_min_ratio:g}")}


def _probabilities(net, spec, tensors: dict[str, np.ndarray]) -> dict[str, float]:
    import torch

    modes = list(tensors)
    with torch.no_grad():
        p = spec.probabilities(net(torch.from_numpy(np.stack([tensors[m] for m in modes]))).numpy())
    return {m: float(v) for m, v in zip(modes, p)}


def summarize(rows: list[dict[str, Any]], default_mode: str) -> list[dict[str, Any]]:
    """Per syntax: median ms full / default reduced / host part, speed-up, worst diffs."""
    out = []
    for syntax in dict.fromkeys(r["syntax"] for r in rows):
        mine = [r for r in rows if r["syntax"] == syntax]

        def med(mode: str, key: str = "ms_median"):
            vals = [r[key] for r in mine if r["mode"] == mode and key in r]
            return round(statistics.median(vals), 2) if vals else None

        full, red = med("full"), med(default_mode)
        worst = [r for r in mine if r["mode"] == default_mode]
        out.append({
            "syntax": syntax, "full_ms": full, "reduced_ms": red, "device_host_ms": med("device-host-part"),
            "speedup": round(full / red, 1) if full and red else None,
            "method": worst[0].get("method") if worst else None,
            "max_diff": max((r.get("max_diff", 0) for r in worst), default=None),
            "mean_diff": max((r.get("mean_diff", 0) for r in worst), default=None),
            "max_dprob": max((r.get("dprob", 0) for r in worst), default=None) if any("dprob" in r for r in worst) else None,
        })
    return out


def format_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"# DICOM decode + preprocess, full vs reduced ({result['shape'][0]} x {result['shape'][1]}, "
        f"{result['input_size']} px {result['resize_mode']})",
        "",
        f"CPU: {m.get('cpu_model', m)} ({m.get('cores_usable', '?')} usable cores); load average before {result['load_average_before']}, after "
        f"{result['load_average_after']}; median of {result['repeats']} per file, one process; default rule "
        f"reduced@{result['default_ratio']:g} (decoded >= ratio x resize target per side).",
        "",
        "| syntax | full ms | reduced ms | speed-up | method | max abs diff | mean abs diff | max dprob | device host part ms |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for s in result["summary"]:
        lines.append(f"| {s['syntax']} | {s['full_ms']} | {s['reduced_ms']} | {s['speedup']}x | {s['method']} | "
                     f"{s['max_diff']} | {s['mean_diff']} | {s['max_dprob'] if s['max_dprob'] is not None else '-'} | "
                     f"{s['device_host_ms'] if s['device_host_ms'] is not None else '-'} |")
    lines += ["", "Every ratio (rows per file):", "",
              "| image | syntax | mode | ms | method | x | max diff | mean diff | prob | dprob |",
              "|---|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        if r["mode"] == "device-host-part":
            continue
        lines.append(f"| {r['image']} {r['photometric'][-1]} | {r['syntax']} | {r['mode']} | {r['ms_median']} | "
                     f"{r.get('method', '')} | {r.get('factor', '')} | {r.get('max_diff', '')} | "
                     f"{r.get('mean_diff', '')} | {r.get('prob', '')} | {r.get('dprob', '')} |")
    return "\n".join(lines) + "\n"


def write_results(result: dict[str, Any], out_dir: str | Path, name: str = "dicom_decode") -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    j, md = out / f"{name}.json", out / f"{name}.md"
    j.write_text(json.dumps(result, indent=1) + "\n")
    md.write_text(format_markdown(result))
    return j, md


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default=os.environ.get("TMPDIR", "/tmp") + "/fb-dicom-decode")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--shape", type=int, nargs=2, default=(2500, 2000), metavar=("ROWS", "COLUMNS"))
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default=None, help="checkpoint (model.pt) for probabilities and its spec")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--name", default="dicom_decode")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = run_dicom_decode_bench(a.work, n_images=a.images, shape=tuple(a.shape), input_size=a.input_size,
                                    repeats=a.repeats, model=a.model)
    for p in write_results(result, a.out, a.name):
        print(p)
    print(format_markdown(result).split("\n\nEvery ratio")[0])
