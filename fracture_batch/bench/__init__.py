"""Benchmark harness behind ``fracture-batch bench`` and the ``benchmarks/`` scripts.

Installed with the package so the CLI can reach it; ``benchmarks/*.py`` are thin
scripts over these modules. Method (ARCHITECTURE.md "Performance method"): warm-up
excluded, repeats, synchronised timing on GPU, medians and p95/p99 tails, one
configuration per process where state could leak (thread pools, allocator caches,
JIT/engine caches), ceilings measured in the same run as the figures they bound.
"""
