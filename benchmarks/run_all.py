"""Everything the lead reruns on a quiet machine, one command:

    python -m benchmarks.run_all --out benchmarks/results            # ~6 min on a quiet 2-core machine
    python -m benchmarks.run_all --out /tmp/bench --quick            # ~2-3 min smoke run

Runs ``fracture-batch bench`` (ceilings, model only, decode only, end to end vs the
naive scorer) and the GPU acceptance, writing bench.{json,parquet,md}, the plots,
README_section.md and acceptance.{json,md} into --out. Extra options (``--model
EXPORT_DIR``, ``--threads``, ...) pass through to the bench.
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from benchmarks._cli import setup_logging
    from fracture_batch.cli.bench_cmd import bench

    setup_logging()
    args = list(sys.argv[1:] if argv is None else argv)
    if "--out" not in args:
        args += ["--out", "benchmarks/results"]
    out = args[args.index("--out") + 1]
    bench.main(args=args, standalone_mode=False)
    passthrough = [a for a in ("--model",) if a in args]
    acc = ["--acceptance", "--out", out]
    for a in passthrough:
        acc += [a, args[args.index(a) + 1]]
    bench.main(args=acc, standalone_mode=True)


if __name__ == "__main__":
    main()
