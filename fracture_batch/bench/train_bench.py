"""CPU training throughput, fp32 vs bf16 autocast: ``python -m benchmarks.bench_train``.

One training step = forward + backward + Adam step on a random batch (the model's cost
alone; data loading is overlapped by the DataLoader workers in real runs), as
``train.loops.train_one_epoch`` runs it: channels_last, ``Precision.autocast()``, loss in
fp32. Each precision runs in its own child process (oneDNN primitive caches and thread
pools cannot leak between them), with untimed warm-up steps, then repeats within a time
budget; images/s from the median step. Also reported: achieved GFLOP/s, counting a
training step as 3x the forward FLOPs (torch's FLOP counter), so the figure can be read
against the machine's GEMM ceilings (``benchmarks/ceilings.py``).

Writes ``train_cpu_amp.json`` and ``train_cpu_amp.md`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

PRECISIONS = ("fp32", "bf16")


def forward_flops(arch: str, size: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from fracture_batch.model.checkpoint import create_model

    model = create_model(arch, 2).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return float(counter.get_total_flops())


def one(arch: str, size: int, batch: int, precision: str, warmup: int, repeats: int,
        max_seconds: float, threads: int | None) -> dict:
    """Runs in a child process: one precision, -> the measurement as a dict."""
    import torch

    from fracture_batch.bench.stats import measure, summarize, throughput
    from fracture_batch.model.checkpoint import create_model
    from fracture_batch.backends.base import DeviceKind
    from train.config import AmpDtype, Unfreeze
    from train.loops import resolve_precision, set_trainable

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    prec = resolve_precision(DeviceKind.CPU, precision == "bf16", AmpDtype.BF16, True)
    model = create_model(arch, 2).to(memory_format=torch.channels_last).train()
    head, backbone = set_trainable(model, Unfreeze.ALL)
    opt = torch.optim.Adam([{"params": head}, {"params": backbone, "lr": 1e-4}], lr=1e-3, fused=True)
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
    import time

    c0 = time.process_time()
    times = measure(step, warmup=warmup, repeats=repeats, max_seconds=max_seconds)
    cpu_per_step = (time.process_time() - c0) / (len(times) + warmup)
    s = summarize(times)
    return {"precision": precision, "autocast": prec.amp_dtype or "none", "arch": arch,
            "image_size": size, "batch_size": batch, "threads": torch.get_num_threads(),
            "repeats": s.n, "step_p50_s": s.p50, "step_p95_s": s.p95, "step_min_s": s.min,
            "images_per_s": throughput(batch, s), "cpu_s_per_image": cpu_per_step / batch}


def run(args: argparse.Namespace) -> dict:
    from fracture_batch.machine import describe_machine

    rows = []
    for precision in args.precisions:
        cmd = [sys.executable, "-m", "fracture_batch.bench.train_bench", "--child", precision,
               "--arch", args.arch, "--image-size", str(args.image_size),
               "--batch-size", str(args.batch_size), "--warmup", str(args.warmup),
               "--repeats", str(args.repeats), "--max-seconds", str(args.max_seconds)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(f"{precision}: {rows[-1]['images_per_s']:.1f} images/s", file=sys.stderr)
    fwd = forward_flops(args.arch, args.image_size)
    for r in rows:
        r["train_gflop_per_image"] = 3 * fwd / 1e9
        r["achieved_gflops"] = r["images_per_s"] * 3 * fwd / 1e9
    base = next((r for r in rows if r["precision"] == "fp32"), None)
    for r in rows:
        r["speedup_vs_fp32"] = r["images_per_s"] / base["images_per_s"] if base else None
    return {"suite": "train_cpu_amp", "machine": describe_machine(), "rows": rows}


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Training throughput on CPU: fp32 vs bf16 autocast", "",
        f"Machine: {m.get('cpu_model', '?')}, {m.get('cores_logical', '?')} logical cores, "
        f"load average at start {m.get('load_average')}. One step = forward + backward + Adam, "
        "channels_last, random batch; images/s from the median step.", "",
        "| precision | arch | px | batch | threads | images/s | step p50 s | step p95 s | CPU s/image | GFLOP/s "
        "| vs fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['precision']} | {r['arch']} | {r['image_size']} | {r['batch_size']} | {r['threads']} "
                     f"| {r['images_per_s']:.1f} | {r['step_p50_s']:.3f} | {r['step_p95_s']:.3f} | {r['cpu_s_per_image']:.4f} "
                     f"| {r['achieved_gflops']:.0f} | {r['speedup_vs_fp32']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--repeats", type=int, default=10, help="timed steps (at most)")
    ap.add_argument("--max-seconds", type=float, default=120.0, help="time budget per precision")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--child", choices=PRECISIONS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(one(args.arch, args.image_size, args.batch_size, args.child, args.warmup,
                             args.repeats, args.max_seconds, args.threads)))
        return
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_cpu_amp.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "train_cpu_amp.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
