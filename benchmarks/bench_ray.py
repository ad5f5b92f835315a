"""`python -m benchmarks.bench_ray --help`: the `ray_bench` suite of the bench package (fracture_batch/bench/ray_bench.py)."""
from fracture_batch.bench.ray_bench import main

if __name__ == "__main__":
    main()
