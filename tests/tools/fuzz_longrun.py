"""Time-bounded fuzzing of discovery + decoding (the long run of issue 7.3).

    .venv/bin/python tests/tools/fuzz_longrun.py --minutes 10 [--mode python|dali|both] [--seed N]

Same mutations and guard as tests/test_fuzz.py (tests/support/fuzzlib.py), driven by a seeded
``random.Random`` for a fixed time rather than a fixed count. Every input that breaks the
contract is saved (once per distinct failure) to ``--found`` with a ``.why.txt``; copy
the ones worth keeping into tests/fuzz_regressions/ (with a line in its README) once
fixed. Exit status 1 when anything was found. Prints a table of outcomes per seed file.
"""
from __future__ import annotations

import argparse
import collections
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for support/

from support import fuzzlib  # noqa: E402
from support import hostile_inputs as hi  # noqa: E402


def run(minutes: float, modes: list[str], seed: int, found: Path, timeout_s: float) -> int:
    seeds = hi.seeds()
    rng = random.Random(seed)
    guard = fuzzlib.GuardedDecoder(timeout_s=timeout_s)
    table: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
    distinct: dict[str, Path] = {}
    slowest = (0.0, "")
    deadline = time.monotonic() + minutes * 60
    n = 0
    try:
        while time.monotonic() < deadline:
            name = rng.choice(sorted(seeds))
            mode = modes[n % len(modes)]
            data, steps = fuzzlib.mutate(name, seeds[name], lambda k: rng.randrange(k) if k > 1 else 0, seeds)
            outcome = guard.run(data, "." + name.rsplit(".", 1)[1], mode)
            n += 1
            table[(name, mode)][outcome.kind] += 1
            if outcome.seconds > slowest[0]:
                slowest = (outcome.seconds, f"{name} {steps}")
            problem = fuzzlib.judge(outcome)
            if problem:
                key = f"{mode}:{problem.strip().splitlines()[-1][:160]}"
                if key not in distinct:
                    distinct[key] = fuzzlib.save_finding(found, name, data, f"{mode}: {problem}\nsteps: {steps}")
                    print(f"FOUND ({mode}) {name} {steps}\n  {problem.strip().splitlines()[-1]}\n  -> {distinct[key]}",
                          flush=True)
    finally:
        guard.close()
    kinds = ("ok", "error_row", "bug", "crash", "hang")
    print(f"\n{n} mutants in {minutes:g} min (seed {seed}); slowest {slowest[0]:.2f}s: {slowest[1]}")
    print(f"{'seed file':<18} {'mode':<7} " + " ".join(f"{k:>9}" for k in kinds))
    for (name, mode), counts in sorted(table.items()):
        print(f"{name:<18} {mode:<7} " + " ".join(f"{counts[k]:>9}" for k in kinds))
    print(f"\n{len(distinct)} distinct problem(s)" + (f", saved under {found}" if distinct else ""))
    return 1 if distinct else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="how long to fuzz")
    ap.add_argument("--mode", choices=["python", "dali", "both"], default="both",
                    help="decoder path(s): the Python decoders, the DALI CPU pipeline, or alternate")
    ap.add_argument("--seed", type=int, default=int(time.time()), help="random seed (printed; rerun to reproduce)")
    ap.add_argument("--found", type=Path, default=Path("/tmp/fracture-batch-fuzz-found"),
                    help="where failing inputs are saved")
    ap.add_argument("--timeout", type=float, default=fuzzlib.DEFAULT_TIMEOUT_S, help="seconds before a mutant is a hang")
    args = ap.parse_args(argv)
    modes = ["python", "dali"] if args.mode == "both" else [args.mode]
    if "dali" in modes:
        from fracture_batch.decode.select import has_dali

        ok, reason = has_dali()
        if not ok:
            print(f"DALI path skipped: {reason}")
            modes = [m for m in modes if m != "dali"] or ["python"]
    return run(args.minutes, modes, args.seed, args.found, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
