"""Regenerate the markdown tables, plots and README section from a results JSON:
``python -m benchmarks.report benchmarks/results/bench.json``."""
from __future__ import annotations

import sys
from pathlib import Path


def main() -> None:
    from fracture_batch.bench.records import read_json
    from fracture_batch.bench.report import write_report

    path = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/bench.json")
    for kind, p in write_report(read_json(path), path.parent, prefix=path.stem).items():
        print(f"{kind}: {p}")


if __name__ == "__main__":
    main()
