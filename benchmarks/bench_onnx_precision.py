"""`python -m benchmarks.bench_onnx_precision --help`: the `onnx_precision` suite of the bench package (fracture_batch/bench/onnx_precision.py)."""
from fracture_batch.bench.onnx_precision import main

if __name__ == "__main__":
    main()
