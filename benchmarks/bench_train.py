"""`python -m benchmarks.bench_train --help`: the `train_bench` suite of the bench package (fracture_batch/bench/train_bench.py)."""
from fracture_batch.bench.train_bench import main

if __name__ == "__main__":
    main()
