"""Only the `decode` suite of `fracture-batch bench`; every other option passes through
(see `python -m benchmarks.bench_decode --help`)."""
from benchmarks._cli import run_bench

if __name__ == "__main__":
    run_bench(["--suite", "decode"])
