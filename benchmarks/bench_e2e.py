"""Only the `e2e` suite of `fracture-batch bench`; every other option passes through
(see `python -m benchmarks.bench_e2e --help`)."""
from benchmarks._cli import run_bench

if __name__ == "__main__":
    run_bench(["--suite", "e2e"])
