"""The naive scorer on its own: ``python -m benchmarks.naive DIR [--checkpoint model.pt]``.

PIL + torchvision transforms + DataLoader + eager fp32 ResNet50, as a typical notebook
does it (``fracture_batch.bench.naive``); prints images/s.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("directory", type=Path)
    ap.add_argument("--checkpoint", default=None, help="model.pt (default: random-weight --arch)")
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--out", default=None, help="optional Parquet file for the probabilities")
    args = ap.parse_args()
    from fracture_batch.bench.naive import naive_score

    paths = sorted(str(p) for p in args.directory.rglob("*") if p.is_file())
    r = naive_score(paths, args.out, checkpoint=args.checkpoint, arch=args.arch)
    print(f"{r['n']} images in {r['seconds']:.1f} s (model build {r['build_s']:.1f} s): "
          f"{r['n'] / (r['seconds'] - r['build_s']):.1f} images/s excluding the build")


if __name__ == "__main__":
    main()
