"""The acceptance run's one pass/fail table (terminal and markdown) and its result files."""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from fracture_batch.bench.records import BenchRun, Measurement, write_json

RESULTS_DIR = Path("benchmarks/results")


def _num(v, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) else ""


def _cells(r: Measurement) -> list[str]:
    return [r.name, r.device, r.status.upper(), _num(r.batch_size, "d"), _num(r.images_per_s, ",.0f"),
            _num(r.latency_p50_ms, ".2f"), _num(r.latency_p99_ms, ".2f"), r.note]


HEADER = ["check", "device", "result", "batch", "images/s", "p50 ms", "p99 ms", "detail"]


def summary_line(rows: list[Measurement]) -> str:
    counts = {s: sum(r.status == s for r in rows) for s in ("pass", "fail", "skipped")}
    return f"{counts['pass']} passed, {counts['fail']} failed, {counts['skipped']} skipped"


def format_table(rows: list[Measurement]) -> str:
    """Fixed-width text: one line per row, the pass/fail/skipped count last."""
    cells = [HEADER] + [_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1] for row in cells]
    lines.insert(1, "-" * (sum(widths) + 2 * len(widths) + 6))
    return "\n".join(lines + [summary_line(rows)])


def to_markdown(rows: list[Measurement], machine: dict, seconds: float) -> str:
    gpu = machine.get("gpu", {}) if isinstance(machine.get("gpu"), dict) else {}
    head = (f"# GPU acceptance\n\nGPU: {gpu.get('name') or 'none'} (driver {gpu.get('driver', '?')}, torch CUDA "
            f"{gpu.get('torch_cuda') or 'none'}); CPU: {machine.get('cpu_model', '?')}; {seconds:.0f} s.\n\n")
    esc = [[c.replace("|", "\\|") for c in _cells(r)] for r in rows]
    table = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    table += ["| " + " | ".join(c) + " |" for c in esc]
    return head + "\n".join(table) + f"\n\n{summary_line(rows)}\n"


def result_stem(machine: dict, when: dt.datetime | None = None) -> str:
    """acceptance-<gpu or cpu>-<UTC time>: one pair of files per run, never overwritten."""
    gpu = machine.get("gpu", {}) if isinstance(machine.get("gpu"), dict) else {}
    name = gpu.get("name") or "no-gpu"
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
    when = when or dt.datetime.now(dt.timezone.utc)
    return f"acceptance-{slug}-{when.strftime('%Y%m%dT%H%M%SZ')}"


def write_results(rows: list[Measurement], machine: dict, seconds: float, out: Path = RESULTS_DIR) -> tuple[Path, Path]:
    """JSON (every field, the machine) and markdown (the table) for the user to send back."""
    out.mkdir(parents=True, exist_ok=True)
    stem = result_stem(machine)
    js = write_json(BenchRun(machine=machine, measurements=rows, run={"kind": "acceptance", "seconds": round(seconds, 1)}),
                    out / f"{stem}.json")
    md = out / f"{stem}.md"
    md.write_text(to_markdown(rows, machine, seconds))
    return js, md
