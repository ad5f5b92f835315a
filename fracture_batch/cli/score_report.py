"""Output of `score`: progress (a bar on a terminal, lines in a log) and the summary table."""
from __future__ import annotations


def start_line(s) -> str:
    """Which backend/device/decoder was picked, and why (printed before any input is read)."""
    return (f"backend {s.backend} on {s.device} ({s.backend_reason}); {s.backend_detail}; "
            f"decoder {s.decoder}, {s.threads.get('decode_workers')} worker(s)")


class ProgressBar:
    """Rows committed, created on first use (``progress.create_progress``: tqdm on a
    terminal, a line per 5 % elsewhere); the total appears once discovery ends."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._bar = None

    def update(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            from fracture_batch.progress import create_progress

            self._bar = create_progress(None, "scoring", "img", leave=True)
        if total is not None and self._bar.total != total:
            self._bar.total = total
            self._bar.refresh()
        if done > self._bar.n:
            self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def format_summary(s, studies: dict | None = None) -> str:
    rows = [
        ("files found", f"{s.files_seen:,}"),
        ("already done (resumed)", f"{s.already_done:,}"),
        ("scored this run", f"{s.scored:,}"),
        ("  ok", f"{s.ok:,}"),
        ("  errors", f"{s.errors:,}"),
        ("skipped (not files)", f"{len(s.skipped):,}"),
        ("rows in dataset", f"{s.dataset_rows:,}"),
        ("time", f"{s.seconds:.1f} s"),
        ("images/s", f"{s.images_per_s:.1f}"),
        ("backend", f"{s.backend} on {s.device} ({s.backend_reason})"),
        ("", s.backend_detail),
        ("decoder", f"{s.decoder}, {s.threads.get('decode_workers')} worker(s)"),
        ("output", s.out),
    ]
    if studies:  # from _SUCCESS: the study table rebuilt at the end of the run
        rules = studies.get("rules", {})
        rows.append(("studies", f"{studies.get('n', 0):,} in {studies.get('path')}/ (by {rules.get('study_key')}, "
                                f"{rules.get('aggregate')} of the views)"))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    for item in s.skipped[:10]:
        lines.append(f"  skipped {item['path']}: {item['reason']}")
    if len(s.skipped) > 10:
        lines.append(f"  … and {len(s.skipped) - 10} more (see _SUCCESS)")
    return "\n".join(lines)
