"""Shared entry for the thin scripts: ``fracture-batch bench`` with some options fixed."""
from __future__ import annotations

import sys


def setup_logging() -> None:
    """What the ``fracture-batch`` group does for its commands: progress at INFO."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_bench(fixed: list[str], argv: list[str] | None = None) -> None:
    from fracture_batch.cli.bench_cmd import bench

    setup_logging()
    bench.main(args=fixed + list(sys.argv[1:] if argv is None else argv), prog_name=f"python {sys.argv[0]}")
