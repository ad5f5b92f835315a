"""``fracture-batch evaluate``: a scored run against known labels (image and study level)."""
from __future__ import annotations

from pathlib import Path

import click

from fracture_batch.report.labels import LabelSource


@click.command(context_settings={"show_default": True})
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--labels", "labels_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="CSV of labels: a header with path, relpath or study plus label, or MURA's headerless "
                   "'study/folder/,1' file. Keys match by trailing path components.")
@click.option("--label-source", type=click.Choice([s.value for s in LabelSource]), default=LabelSource.AUTO.value,
              help="Where labels come from. auto: --labels when given, else MURA studyN_positive/_negative "
                   "folders when present, else class folders (fractured/, not_fractured/).")
@click.option("--bootstrap", "n_boot", type=click.IntRange(0), default=1000,
              help="Bootstrap resamples for the 95% confidence intervals (0: none).")
@click.option("--seed", type=int, default=0, help="Seed of the bootstrap (same seed, same intervals).")
@click.option("--results", "results_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              show_default=False, help="Where evaluation.json, roc.png and pr.png go (default OUT_DIR/_evaluation).")
def evaluate(out_dir: Path, labels_csv, label_source: str, n_boot: int, seed: int, results_dir) -> None:
    """Image- and study-level ROC AUC, sensitivity/specificity at the model's threshold and
    Cohen's kappa of the run in OUT_DIR, each with a bootstrap CI, plus ROC/PR plots.

    Error rows and images without a label are left out (and counted in the JSON).
    Image-level intervals resample whole studies, since the views of one study are not
    independent.
    """
    from fracture_batch.report.evaluate import EvaluateConfig, evaluate_run, format_table
    from fracture_batch.report.labels import LabelError

    cfg = EvaluateConfig(out=str(out_dir), labels_csv=str(labels_csv) if labels_csv else None,
                         source=LabelSource(label_source), n_boot=n_boot, seed=seed,
                         results_dir=str(results_dir) if results_dir else None)
    try:
        result = evaluate_run(cfg)
    except (LabelError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(format_table(result))
    click.echo("results: " + ", ".join(result.files.values()))
