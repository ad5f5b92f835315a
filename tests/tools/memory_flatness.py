"""Peak resident memory of `fracture-batch score` for N and 10*N files (not a pytest test).

    .venv/bin/python tests/tools/memory_flatness.py --n 1000 --size 64

Builds the tiny test model (resnet18, 64 px) and N / 10*N small PNG/JPEG files, runs the
real CLI in a subprocess for each, samples the RSS of the whole process tree (scorer +
decode children) every 20 ms with psutil, and prints one line per run. Flat means the
10*N peak is within noise of the N peak: queues are bounded, parts are written as they
fill, and nothing is kept per file (the resume index holds 16 bytes per already
committed path, and only on a resumed run).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for support/
from support import modelgen  # noqa: E402


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run(cmd: list[str]) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, tree_rss(ps))
        except psutil.Error:
            break
        time.sleep(0.02)
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"score failed:\n{out}")
    return time.perf_counter() - t0, peak / 2**20, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="small run; the large one is 10x. Below ~1000 the small run ends before the arenas warm up")
    ap.add_argument("--size", type=int, default=64, help="image side in pixels")
    ap.add_argument("--isolation", default="thread", choices=["thread", "process"])
    ap.add_argument("--part-rows", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _, onnx_path = modelgen._cached_models(str(tmp / "models"))
        exe = [sys.executable, "-c", "from fracture_batch.cli import main; main()"]
        for n in (args.n, 10 * args.n):
            inputs = tmp / f"in{n}"
            for start in range(0, n, 1000):  # 1000 files a directory, like an archive
                modelgen.write_images(inputs / f"d{start // 1000:04d}", min(1000, n - start), size=args.size,
                                      start=start, formats=("png", "jpeg"))
            cmd = exe + ["score", str(inputs), "--model", str(onnx_path), "--out", str(tmp / f"out{n}"),
                         "--decode-isolation", args.isolation, "--part-rows", str(args.part_rows),
                         "--no-progress", "--decoder", "python"]
            seconds, peak_mib, _ = run(cmd)
            print(f"files={n:>7}  peak_rss_tree={peak_mib:8.1f} MiB  wall={seconds:6.1f} s  "
                  f"({n / seconds:.0f} files/s incl. start-up)", flush=True)


if __name__ == "__main__":
    main()
