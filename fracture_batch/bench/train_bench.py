"""Training on CPU, measured: ``python -m benchmarks.bench_train``.

Three parts, every one in its own child process (oneDNN primitive caches and thread pools
cannot leak between them), all in one run so their ratios mean something on a shared
machine:

* **ceiling**: a bf16 GEMM (torch.mm, oneDNN: AMX where present) -- what the cores can do;
* **steps**: forward + backward + Adam on a random batch, per precision, as
  ``train.loops.train_one_epoch`` runs it (channels_last, ``autocast()``, loss in fp32);
* **epochs**: real epochs of the demo recipe on synthetic radiographs (decoded once into
  the in-memory cache, as the demo does), each batch split into data wait, forward,
  backward and optimiser step, then the validation pass -- one row per recipe variant
  (``before`` = the recipe this suite was written against, ``after`` = the current one).

Achieved GFLOP/s counts a training step as 3x the forward FLOPs (torch's FLOP counter),
read as a fraction of the ceiling. Writes ``train_cpu_amp.json`` and ``.md`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

PRECISIONS = ("fp32", "bf16")
# Epoch variants: name -> (input px, batch size, loader workers). "before" is the demo recipe
# as issue 16 found it, "80 px, batch 32" its first fix; "after" (None) is
# train.config.DEMO_TRAIN_CONFIG now.
# The demo's data set size (fracture_batch/cli/demo_cmd.py DEMO_N_IMAGES; the CLI sits above
# this layer): an epoch's seconds are extrapolated to its splits.
DEMO_IMAGES = 2860
EPOCH_VARIANTS: dict[str, tuple[int, int, int] | None] = {"before": (112, 32, 2), "80 px, batch 32": (80, 32, 0),
                                                         "after": None}


def forward_flops(arch: str, size: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from fracture_batch.model.checkpoint import create_model

    model = create_model(arch, 2).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return float(counter.get_total_flops())


def _model_and_optimizer(arch: str, precision: str, threads: int | None):
    import torch

    from fracture_batch.backends.base import DeviceKind
    from fracture_batch.model.checkpoint import create_model
    from train.config import AmpDtype, Unfreeze
    from train.loops import resolve_precision, set_trainable

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    prec = resolve_precision(DeviceKind.CPU, precision == "bf16", AmpDtype.BF16, True)
    model = create_model(arch, 2).to(memory_format=torch.channels_last).train()
    head, backbone = set_trainable(model, Unfreeze.ALL)
    opt = torch.optim.Adam([{"params": head}, {"params": backbone, "lr": 1e-4}], lr=1e-3, fused=True)
    return prec, model, opt


def one(arch: str, size: int, batch: int, precision: str, warmup: int, repeats: int,
        max_seconds: float, threads: int | None) -> dict:
    """Runs in a child process: training steps of one precision -> the measurement as a dict."""
    import torch

    from fracture_batch.bench.stats import measure, summarize, throughput

    prec, model, opt = _model_and_optimizer(arch, precision, threads)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        with prec.autocast():
            loss = loss_fn(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    # Process CPU time (all threads) next to wall time: on a shared machine the wall-clock
    # rate swings with other load, CPU-seconds per image much less.
    c0 = time.process_time()
    times = measure(step, warmup=warmup, repeats=repeats, max_seconds=max_seconds)
    cpu_per_step = (time.process_time() - c0) / (len(times) + warmup)
    s = summarize(times)
    return {"precision": precision, "autocast": prec.amp_dtype or "none", "arch": arch,
            "image_size": size, "batch_size": batch, "threads": torch.get_num_threads(),
            "repeats": s.n, "step_p50_s": s.p50, "step_p95_s": s.p95, "step_min_s": s.min,
            "images_per_s": throughput(batch, s), "cpu_s_per_image": cpu_per_step / batch}


def primitives(arch: str, size: int, batch: int, threads: int | None) -> dict:
    """Child: one bf16 training step under oneDNN's verbose log -> milliseconds, GFLOP/s and
    implementations per convolution direction and for reorders: where backward's time goes,
    and proof of which ISA (AMX or not) ran each kernel."""
    import ctypes
    import os
    import tempfile

    import torch

    prec, model, opt = _model_and_optimizer(arch, "bf16", threads)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,))

    def step() -> None:
        with prec.autocast():
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    t = time.perf_counter()
    step()
    step_s = time.perf_counter() - t
    # oneDNN prints through C stdio on descriptor 1: point it at a file for one step, and
    # flush C's buffer before restoring it.
    with tempfile.TemporaryFile(mode="w+") as log:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(log.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                step()
        finally:
            ctypes.CDLL(None).fflush(None)
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        groups = parse_onednn_verbose(log.read().splitlines())
    fwd = forward_flops(arch, size) * batch
    for name, g in groups.items():
        # Each convolution direction does about the forward's FLOPs (backward-data skips
        # the stem, ~3 % at 80 px); reorders and the rest have no FLOP count.
        g["gflops"] = fwd / (g["ms"] / 1e3) / 1e9 if name.startswith("convolution") else None
    return {"arch": arch, "image_size": size, "batch_size": batch, "threads": torch.get_num_threads(),
            "step_s": step_s, "groups": groups}


def parse_onednn_verbose(lines: list[str]) -> dict[str, dict]:
    """oneDNN ``exec`` lines -> {"convolution/backward_weights": {"ms", "calls", "impls"}, ...}."""
    out: dict[str, dict] = {}
    for line in lines:
        f = line.split(",")
        if not f[0].startswith("onednn_verbose") or "exec" not in f[:5]:
            continue
        i = f.index("exec")
        kind, impl, prop = f[i + 2], f[i + 3], f[i + 4]
        if kind == "convolution":
            prop = "forward" if prop.startswith("forward") else prop
        g = out.setdefault(kind if kind != "convolution" else f"{kind}/{prop}", {"ms": 0.0, "calls": 0, "impls": []})
        g["ms"] += float(f[-1])
        g["calls"] += 1
        if impl not in g["impls"]:
            g["impls"].append(impl)
    return out


def ceiling(threads: int | None, n: int = 2048) -> dict:
    """Child: the bf16 GEMM ceiling (median of torch.mm at n x n x n)."""
    from fracture_batch.bench.ceilings import torch_gemm

    m = torch_gemm("bf16", "cpu", n=n, repeats=10, warmup=2, threads=threads)[0]
    return {"gemm": m.name, "n": n, "gflops": m.gflops, "best_gflops": m.extra["best_gflops"], "note": m.note}


def epoch(data_dir: str, name: str, size: int, batch: int, workers: int, max_batches: int,
          threads: int | None) -> dict:
    """Child: one epoch of the demo recipe (cached, unaugmented) split into its stages."""
    import torch

    from fracture_batch.model.spec import ModelSpec
    from fracture_batch.synth.generate import resolve_split_counts
    from train import data as D
    from train.config import demo_train_config
    from train.fit import class_weights, prepare_data
    from train.loops import evaluate, train_mode

    config = demo_train_config(Path(data_dir), Path(data_dir), image_size=size, batch_size=batch,
                               num_workers=workers, progress=False)
    prec, model, opt = _model_and_optimizer(config.arch, "bf16", threads)
    t0 = time.perf_counter()
    data = prepare_data(config, ModelSpec(arch=config.arch, input_size=config.image_size), {})
    cache_s = time.perf_counter() - t0
    n_cached = sum(len(ds) for ds in data.datasets.values())
    w = torch.tensor(class_weights(data.counts["train"]))
    loss_fn = torch.nn.CrossEntropyLoss(weight=w)
    loader = D.create_loader(data.datasets["train"], batch_size=batch, shuffle=True, seed=0,
                             num_workers=workers, drop_last=True)
    stages = {"data": [], "forward": [], "backward": [], "optimizer": []}
    train_mode(model)
    seen, t_epoch, it = 0, time.perf_counter(), iter(loader)
    for i in range(max_batches + 1):  # the first batch warms oneDNN's kernels up, untimed
        t = [time.perf_counter()]
        b = next(it, None)
        if b is None:
            break
        x = b["x"].contiguous(memory_format=torch.channels_last)
        t.append(time.perf_counter())
        with prec.autocast():
            loss = loss_fn(model(x).float(), b["y"])
        t.append(time.perf_counter())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t.append(time.perf_counter())
        opt.step()
        t.append(time.perf_counter())
        if i == 0:
            t_epoch = time.perf_counter()
            continue
        for k, (a, c) in zip(stages, zip(t, t[1:])):
            stages[k].append(c - a)
        seen += len(b["y"])
    train_s = time.perf_counter() - t_epoch
    t1 = time.perf_counter()
    va = evaluate(model, D.create_loader(data.datasets["val"], batch_size=batch, shuffle=False, seed=0,
                                         num_workers=workers), loss_fn, prec, progress=False)
    val_s = time.perf_counter() - t1
    demo = resolve_split_counts(DEMO_IMAGES)
    per_image = {k: sum(v) / max(seen, 1) for k, v in stages.items()}
    return {"variant": name, "batch_size": batch, "num_workers": workers, "image_size": config.image_size,
            "arch": config.arch, "threads": torch.get_num_threads(), "images": seen,
            "train_images_per_s": seen / train_s, "s_per_image": per_image,
            "eval_images_per_s": va["n"] / val_s, "eval_images": va["n"],
            "cache_fill_s_per_image": cache_s / n_cached,
            # an epoch of the demo (its train split, one val pass), from the rates above
            "demo_epoch_s": demo["train"] / (seen / train_s) + demo["val"] / (va["n"] / val_s)}


# ---- the parent ------------------------------------------------------------------------
def _child(kind: str, kwargs: dict) -> dict:
    cmd = [sys.executable, "-m", "fracture_batch.bench.train_bench", "--child", kind, json.dumps(kwargs)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _epoch_variants() -> dict[str, tuple[int, int, int]]:
    from train.config import DEMO_TRAIN_CONFIG as D

    return {k: v or (D.image_size, D.batch_size, D.num_workers) for k, v in EPOCH_VARIANTS.items()}


def ensure_data(workdir: Path, n: int) -> Path:
    """A small demo-like ImageFolder set (synthetic radiographs) under ``workdir``."""
    from fracture_batch.synth.generate import SynthConfig, generate_dataset

    data = workdir / f"train_bench_{n}"
    if not (data / "train").is_dir():
        generate_dataset(data, SynthConfig(n=n, seed=0, workers=2))
    return data


def run(args: argparse.Namespace) -> dict:
    from fracture_batch.machine import cpu_label, describe_machine, load_average
    from train.config import DEMO_TRAIN_CONFIG

    machine = describe_machine()
    threads = args.threads
    args.image_size = args.image_size or DEMO_TRAIN_CONFIG.image_size
    args.batch_size = args.batch_size or DEMO_TRAIN_CONFIG.batch_size
    ceil = _child("ceiling", {"threads": threads})
    print(f"bf16 GEMM ceiling: {ceil['gflops']:.0f} GFLOP/s", file=sys.stderr)
    rows = []
    for precision in args.precisions:
        rows.append(_child("step", dict(arch=args.arch, size=args.image_size, batch=args.batch_size,
                                        precision=precision, warmup=args.warmup, repeats=args.repeats,
                                        max_seconds=args.max_seconds, threads=threads)))
        print(f"steps {precision}: {rows[-1]['images_per_s']:.1f} images/s", file=sys.stderr)
    epochs = []
    if args.epoch_batches:
        data = ensure_data(Path(args.workdir), args.epoch_images)
        for name, (size, batch, workers) in _epoch_variants().items():
            epochs.append(_child("epoch", dict(data_dir=str(data), name=name, size=size, batch=batch,
                                               workers=workers, max_batches=args.epoch_batches,
                                               threads=threads)))
            print(f"epoch {name}: {epochs[-1]['train_images_per_s']:.1f} images/s", file=sys.stderr)
    prims = []
    if args.primitives:
        for name, (size, batch, _) in _epoch_variants().items():
            prims.append({"variant": name, **_child("primitives", dict(arch=args.arch, size=size, batch=batch,
                                                                       threads=threads))})
    fwd = forward_flops(args.arch, args.image_size)
    for r in rows:
        r["train_gflop_per_image"] = 3 * fwd / 1e9
        r["achieved_gflops"] = r["images_per_s"] * 3 * fwd / 1e9
        r["fraction_of_bf16_ceiling"] = r["achieved_gflops"] / ceil["gflops"]
    base = next((r for r in rows if r["precision"] == "fp32"), None)
    for r in rows:
        r["speedup_vs_fp32"] = r["images_per_s"] / base["images_per_s"] if base else None
    for e in epochs:
        f = 3 * forward_flops(e["arch"], e["image_size"]) / 1e9
        e["achieved_gflops"] = e["train_images_per_s"] * f
        e["fraction_of_bf16_ceiling"] = e["achieved_gflops"] / ceil["gflops"]
    return {"suite": "train_cpu_amp", "machine": machine, "cpu": cpu_label(machine), "ceiling": ceil,
            "rows": rows, "epochs": epochs, "primitives": prims, "load_average_end": load_average()}


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Training on CPU: steps per precision, the epoch breakdown, against the bf16 GEMM ceiling", "",
        f"Machine: {result.get('cpu') or m.get('cpu_model', '?')}, {m.get('cores_logical', '?')} logical cores, "
        f"load average at start {m.get('load_average')}, at end {result.get('load_average_end')}. "
        "One step = forward + backward + Adam, channels_last, random batch; images/s from the median step.", "",
    ]
    from fracture_batch.machine import busy_note

    note = busy_note(m, result.get("load_average_end"), rerun="`python -m benchmarks.bench_train`") if m else ""
    if note:
        lines += [note]
    ceil = result.get("ceiling")
    if ceil:
        lines += [f"bf16 GEMM ceiling in the same run: **{ceil['gflops']:.0f} GFLOP/s** ({ceil['note']}, "
                  f"n={ceil['n']}; best repeat {ceil['best_gflops']:.0f}). On AMX CPUs oneDNN runs bf16 convolutions "
                  "forward and backward on AMX (check with ONEDNN_VERBOSE=1: `avx10_1_512_amx` / "
                  "`avx512_core_amx` implementations).", ""]
    lines += [
        "| precision | arch | px | batch | threads | images/s | step p50 s | step p95 s | CPU s/image | GFLOP/s "
        "| of bf16 ceiling | vs fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        frac = r.get("fraction_of_bf16_ceiling")
        lines.append(f"| {r['precision']} | {r['arch']} | {r['image_size']} | {r['batch_size']} | {r['threads']} "
                     f"| {r['images_per_s']:.1f} | {r['step_p50_s']:.3f} | {r['step_p95_s']:.3f} | {r['cpu_s_per_image']:.4f} "
                     f"| {r['achieved_gflops']:.0f} | {'' if frac is None else f'{frac:.1%}'} "
                     f"| {r['speedup_vs_fp32']:.2f}x |")
    if result.get("epochs"):
        lines += ["", "Demo-recipe epochs (bf16, cached synthetic radiographs): milliseconds per training image "
                  "by stage, then the validation pass.", "",
                  "| variant | px | batch | workers | data | forward | backward | optimizer | train images/s "
                  "| of bf16 ceiling | val images/s | cache fill ms/image | demo epoch s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for e in result["epochs"]:
            s = {k: 1e3 * v for k, v in e["s_per_image"].items()}
            lines.append(f"| {e['variant']} | {e['image_size']} | {e['batch_size']} | {e['num_workers']} | {s['data']:.1f} "
                         f"| {s['forward']:.1f} | {s['backward']:.1f} | {s['optimizer']:.1f} "
                         f"| {e['train_images_per_s']:.1f} | {e['fraction_of_bf16_ceiling']:.1%} "
                         f"| {e['eval_images_per_s']:.1f} | {1e3 * e['cache_fill_s_per_image']:.1f} "
                         f"| {e['demo_epoch_s']:.0f} |")
    return "\n".join(lines + _primitives_markdown(result.get("primitives") or [])) + "\n"


def _primitives_markdown(prims: list[dict]) -> list[str]:
    if not prims:
        return []
    cols = ("convolution/forward", "convolution/backward_data", "convolution/backward_weights")
    lines = ["", "One bf16 step under `ONEDNN_VERBOSE` (random batch): oneDNN milliseconds per step and "
             "GFLOP/s per convolution direction (each does about the forward's FLOPs), the weight and "
             "activation reorders, and the rest of the step (batch norm, ReLU, adds, the Adam step: ATen "
             "kernels).", "",
             "| variant | px | batch | step ms | conv forward | backward-data | backward-weights | reorders "
             "| rest | ISA |", "|---|---|---|---|---|---|---|---|---|---|"]
    for p in prims:
        g = p["groups"]
        cells = [f"{g[c]['ms']:.0f} ms ({g[c]['gflops']:.0f} GFLOP/s)" if c in g else "-" for c in cols]
        onednn = sum(v["ms"] for v in g.values())
        # implementation names look like "brg_conv_bwd:avx10_1_512_amx+brgconv_1x1:avx10_1_512_amx"
        impls = sorted({isa for c in cols if c in g for i in g[c]["impls"] for isa in re.findall(r":(\w+)", i)})
        lines.append(f"| {p['variant']} | {p['image_size']} | {p['batch_size']} | {1e3 * p['step_s']:.0f} "
                     f"| {' | '.join(cells)} | {g.get('reorder', {}).get('ms', 0):.0f} ms "
                     f"| {1e3 * p['step_s'] - onednn:.0f} ms | {', '.join(impls)} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--image-size", type=int, default=None, help="step rows (default: the demo recipe's)")
    ap.add_argument("--batch-size", type=int, default=None, help="step rows (default: the demo recipe's)")
    ap.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--repeats", type=int, default=10, help="timed steps (at most)")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="time budget per precision")
    ap.add_argument("--epoch-batches", type=int, default=12,
                    help="timed batches per epoch variant (0 skips the epoch breakdown)")
    ap.add_argument("--epoch-images", type=int, default=600, help="synthetic images of the epoch data set")
    ap.add_argument("--workdir", type=Path, default=Path("bench_cache"), help="where the epoch data set is kept")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--no-primitives", dest="primitives", action="store_false",
                    help="skip the per-primitive oneDNN breakdown of one step per epoch variant")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--child", nargs=2, metavar=("KIND", "JSON"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        kind, kwargs = args.child[0], json.loads(args.child[1])
        fn = {"step": one, "ceiling": ceiling, "epoch": epoch, "primitives": primitives}[kind]
        print(json.dumps(fn(**kwargs)))
        return
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_cpu_amp.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "train_cpu_amp.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
