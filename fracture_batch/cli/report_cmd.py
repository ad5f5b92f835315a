"""``fracture-batch report``: a self-contained HTML triage page for a scored run."""
from __future__ import annotations

from pathlib import Path

import click


@click.command(context_settings={"show_default": True})
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The run's torch checkpoint (model.pt): adds a Grad-CAM overlay (captum) to every thumbnail, "
                   "captioned as where the model looked, not a localisation.")
@click.option("--top", type=click.IntRange(0), default=20, help="How many of the most suspicious studies to show.")
@click.option("--views", "max_views", type=click.IntRange(1), default=4, help="Thumbnails shown per study at most.")
@click.option("--max-errors", type=click.IntRange(0), default=200, help="Error rows listed (all are counted).")
@click.option("--out", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              show_default=False, help="The HTML file to write (default OUT_DIR/_report.html: readers of the dataset skip names starting with _).")
def report(out_dir: Path, checkpoint, top: int, max_views: int, max_errors: int, report_path) -> None:
    """Write one HTML file (no network needed: CSS inline, images embedded) with the run summary,
    the probability histogram with the threshold, the TOP most suspicious studies with
    windowed thumbnails, and every error's message.

    Reads the dataset with pyarrow and decodes only the thumbnails it shows.
    """
    from fracture_batch.report.html import ReportConfig, build_report

    cfg = ReportConfig(out=str(out_dir), report_path=str(report_path) if report_path else None,
                       checkpoint=str(checkpoint) if checkpoint else None, top=top, max_views=max_views,
                       max_errors=max_errors)
    try:
        path = build_report(cfg)
    except (FileNotFoundError, RuntimeError) as exc:  # RuntimeError: captum missing, not a ResNet
        raise click.ClickException(str(exc)) from None
    click.echo(f"report: {path} ({path.stat().st_size / 1e6:.1f} MB); open it in a browser")
