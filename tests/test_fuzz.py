"""Fuzz discovery + decoding with mutated valid PNG/JPEG/BMP/TIFF/DICOM files (issue 7.3).

Each mutant (bit flips, truncation, deletions, insertions, header length/size fields set
to boundary values, splices from other formats, repeated chunks; PNG CRCs optionally
fixed so the parser is reached) is written to a directory, discovered, and decoded in a
guarded child process (tests/support/fuzzlib.py). It must give exactly one row: decoded pixels
that honour the pixel contract, or a readable error. Another exception type, a dead
process, no answer within the timeout, a single file taking > 10 s, or > 2.5 GB of RSS
growth fails the test and the mutant is saved to $FUZZ_FOUND_DIR (default
/tmp/fracture-batch-fuzz-found) for tests/fuzz_regressions/.

The run in `make test` is short and derandomized (the same mutants every time, a few
seconds); `FUZZ_EXAMPLES=20000 pytest tests/test_fuzz.py` draws fresh random mutants, and
`python tests/tools/fuzz_longrun.py --minutes 10` fuzzes for a fixed time (tests/fuzz_regressions/README.md).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from support import fuzzlib
from support import hostile_inputs as hi

SEEDS = hi.seeds()
REGRESSIONS = sorted(p for p in (Path(__file__).parent / "fuzz_regressions").iterdir() if not p.name.endswith((".txt", ".md")))
FOUND_DIR = Path(os.environ.get("FUZZ_FOUND_DIR", "/tmp/fracture-batch-fuzz-found"))
# Budget in `make test` (2 shared cores): ~3-8 ms a mutant in the child plus hypothesis'
# own cost, so 2000 Python-path mutants take ~8-15 s and 400 DALI-path mutants ~3-6 s.
EXPLICIT = "FUZZ_EXAMPLES" in os.environ
PY_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "2000"))
DALI_EXAMPLES = int(os.environ.get("FUZZ_DALI_EXAMPLES", str(max(PY_EXAMPLES // 5, 1))))
FUZZ_SETTINGS = dict(
    deadline=None,  # the child enforces its own timeout; hypothesis' deadline would count the IPC
    derandomize=not EXPLICIT,  # `make test` is reproducible; explicit long runs explore
    database=None,
    # No shrinking: a finding is saved as drawn (fuzzlib.mutate descriptions say what it is),
    # and shrinking a hang would cost one timeout per attempt.
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=list(HealthCheck),
)


def _suffix(name: str) -> str:
    return "." + name.rsplit(".", 1)[1]


@st.composite
def mutants(draw):
    name = draw(st.sampled_from(sorted(SEEDS)))

    def choose(n: int) -> int:
        return draw(st.integers(0, n - 1)) if n > 1 else 0

    data, steps = fuzzlib.mutate(name, SEEDS[name], choose, SEEDS)
    return name, data, steps


@pytest.fixture(scope="module")
def guard():
    g = fuzzlib.GuardedDecoder()
    yield g
    g.close()


def _check(guard, name: str, data: bytes, steps: list[str], mode: str) -> None:
    outcome = guard.run(data, _suffix(name), mode)
    problem = fuzzlib.judge(outcome)
    if problem:
        saved = fuzzlib.save_finding(FOUND_DIR, name, data, f"{mode}: {problem}\nsteps: {steps}")
        pytest.fail(f"{name} mutated by {steps} ({mode} path): {problem}\nsaved to {saved}")


def test_seeds_are_valid_and_decode(guard):
    # The mutants start from files that decode: otherwise the fuzzer only ever tests refusals.
    assert {_suffix(n) for n in SEEDS} >= {".png", ".jpg", ".bmp", ".tif", ".dcm"}
    for name, data in SEEDS.items():
        outcome = guard.run(data, _suffix(name))
        assert outcome.kind == "ok", (name, outcome)


def test_the_guard_catches_hangs_crashes_and_stray_exceptions():
    # The fuzz tests are only as strong as the guard: prove it reports each failure kind.
    g = fuzzlib.GuardedDecoder(timeout_s=3.0)
    try:
        assert g.run(b"", ".png", "selftest-raise").kind == "bug"
        assert g.run(b"", ".png", "selftest-crash").kind == "crash"
        assert g.run(b"", ".png", "selftest-hang").kind == "hang"
        assert g.run(SEEDS["gray8.png"], ".png").kind == "ok"  # restarted after the kill
    finally:
        g.close()


@settings(max_examples=PY_EXAMPLES, **FUZZ_SETTINGS)
@given(case=mutants())
def test_mutants_become_one_row_python_decoders(guard, case):
    _check(guard, *case, mode="python")


@pytest.mark.skipif(not __import__("fracture_batch.decode.select", fromlist=["has_dali"]).has_dali()[0],
                    reason="NVIDIA DALI is not installed (pip install nvidia-dali-cuda130)")
@settings(max_examples=DALI_EXAMPLES, **FUZZ_SETTINGS)
@given(case=mutants())
def test_mutants_become_one_row_dali_cpu_pipeline(guard, case):
    _check(guard, *case, mode="dali")


@pytest.mark.parametrize("path", REGRESSIONS, ids=lambda p: p.name)
@pytest.mark.parametrize("mode", ["python", "dali"])
def test_fuzz_regressions(guard, path, mode):
    if mode == "dali" and not __import__("fracture_batch.decode.select", fromlist=["has_dali"]).has_dali()[0]:
        pytest.skip("NVIDIA DALI is not installed")
    outcome = guard.run(path.read_bytes(), path.suffix, mode)
    # One row, in time and memory: a readable refusal, or pixels (e.g. the PNG whose IDAT
    # length claims 4 GB decodes from the bytes that are there, as PIL reads it).
    assert fuzzlib.judge(outcome) is None, outcome
    assert outcome.kind in ("ok", "error_row") and outcome.detail.strip(), outcome
