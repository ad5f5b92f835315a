"""GPU acceptance: every GPU path once on generated data, a pass/fail/skipped table.

    python -m benchmarks.gpu_acceptance [--model EXPORT_DIR] [--out DIR]

Same as ``fracture-batch bench --acceptance``. On a machine without CUDA the GPU rows
are skipped with the reason and the CPU rows must pass; exit status 1 on any failure.
"""
from benchmarks._cli import run_bench

if __name__ == "__main__":
    run_bench(["--acceptance"])
