"""GPU acceptance: every installed GPU path, throughput per backend/precision/batch, <= 10 min.

    python -m benchmarks.gpu_acceptance [--model EXPORT_DIR] [--out DIR]

Same as ``fracture-batch bench --acceptance`` (fracture_batch/bench/acceptance.py). Writes
benchmarks/results/acceptance-<gpu>-<time>.json and .md; rows whose packages are missing
are skipped with the install command; exit status 1 on any failure.
"""
from benchmarks._cli import run_bench

if __name__ == "__main__":
    run_bench(["--acceptance"])
