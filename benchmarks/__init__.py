"""Benchmark scripts (thin wrappers over ``fracture_batch.bench``); run from the
repository root, e.g. ``python -m benchmarks.run_all --out benchmarks/results``."""
