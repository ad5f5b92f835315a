"""``fracture-batch demo``: the whole job on a CPU in one command (what ``make demo`` runs).

synth -> train -> export -> score -> studies (score, evaluate, report) -> bench, each
stage through the same command a user would type, with the embedded demo defaults, then
one recap of the results.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import click

# Images over all splits: 70 % (~2,000) train the demo recipe, sized so its epochs fit the
# train stage's time limit on a 2-core CPU (train.config.DEMO_TRAIN_CONFIG).
DEMO_N_IMAGES = 2860


def _stage(title: str) -> float:
    click.echo("")
    click.secho(f"== {title} ".ljust(78, "="), bold=True)
    return time.perf_counter()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("demo_out"),
              show_default=True,
              help="Everything the demo writes: data/, run/, export/, scores/, bench/. A rerun reuses the "
                   "data set and replaces the rest.")
@click.option("--n", "n_images", type=click.IntRange(24), default=None,
              help="Synthetic images in all splits (default: the demo recipe's size).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for data and training.")
@click.option("--pretrained", default="auto", show_default=True,
              help="Initial weights: auto (torch hub cache when present, else random init), none, imagenet "
                   "or a path to a compatible state dict.")
@click.option("--bench/--no-bench", "with_bench", default=True, show_default=True,
              help="Finish with `fracture-batch bench --quick` on the exported model.")
@click.pass_context
def demo(ctx: click.Context, workdir: Path, n_images: int | None, seed: int, pretrained: str,
         with_bench: bool) -> None:
    """Run synth -> train -> export -> score -> studies -> bench on the demo defaults and print the results.

    Takes about 10-15 minutes on a 2-core CPU. No pretrained weights are reachable offline, so
    training starts from random initialisation unless --pretrained (or the torch hub cache)
    provides weights; the train stage says which.
    """
    from fracture_batch.cli.bench_cmd import bench
    from fracture_batch.cli.export_cmd import export
    from fracture_batch.cli.score_cmd import score
    from fracture_batch.cli.synth_cmd import synth
    from fracture_batch.cli.train_cmd import _echo_summary
    from train.config import demo_train_config
    from train.fit import fit

    workdir = workdir.absolute()
    data, run, exp, scores = (workdir / d for d in ("data", "run", "export", "scores"))
    timings: dict[str, float] = {}

    t = _stage("1/6 synth: radiograph-like images, ImageFolder layout")
    if (data / "train").is_dir():
        click.echo(f"reusing the data set in {data}")
    else:
        ctx.invoke(synth, out_dir=data, n=n_images or DEMO_N_IMAGES, seed=seed)
    timings["synth"] = time.perf_counter() - t

    t = _stage("2/6 train: ResNet50, frozen head then unfrozen fine-tuning")
    result = fit(demo_train_config(data, run, seed=seed, pretrained=pretrained))
    _echo_summary(result)
    timings["train"] = time.perf_counter() - t

    t = _stage("3/6 export: ONNX fp32, fp16, int8 with parity against torch")
    scored_model = exp / "model.int8.onnx"
    try:
        ctx.invoke(export, checkpoint=Path(result.model_path), out_dir=exp, precisions="fp32,fp16,int8",
                   data_dir=data)
    except SystemExit as exc:
        if exc.code != 1:  # 1: a variant missed its parity bar; anything else is fatal
            raise
        # The export said which variant missed its bar (above, and in export_report.json).
        # The demo scores on the CPU with the onnxruntime int8 flavour (model.int8.onnx): if
        # that one passed, a miss of the TensorRT flavour does not concern this run; otherwise
        # it goes on with the fp32 file rather than score with a file that failed its check.
        scored_model = _cpu_scoring_file(exp)
        click.secho(f"a variant missed its parity bar (see the table above): scoring with {scored_model.name}",
                    fg="yellow")
    timings["export"] = time.perf_counter() - t

    t = _stage(f"4/6 score: the test split through {scored_model.name} into Parquet")
    ctx.invoke(score, inputs=(str(data / "test"),), model=str(scored_model), out=str(scores),
               overwrite=True)
    timings["score"] = time.perf_counter() - t

    t = _stage("5/6 studies: MURA-like studies scored, evaluated per image and per study, triage report")
    _studies_stage(ctx, workdir, Path(result.model_path), scored_model, seed)
    timings["studies"] = time.perf_counter() - t

    if with_bench:
        t = _stage("6/6 bench --quick: model only, decode, end to end vs the naive scorer")
        ctx.invoke(bench, model=exp, quick=True, out=workdir / "bench", workdir=workdir / "bench_cache")
        timings["bench"] = time.perf_counter() - t

    _recap(workdir, run, exp, scores, timings)


# Small on purpose: this stage must add well under a minute to the demo on 2 cores
# (~70 images to score; Grad-CAM on the shown views dominates the report's time).
DEMO_STUDIES = 24
DEMO_REPORT_TOP = 8


def _cpu_scoring_file(exp: Path) -> Path:
    """model.int8.onnx when its own parity check passed, else model.onnx."""
    report = exp / "export_report.json"
    variants = json.loads(report.read_text()).get("variants", []) if report.is_file() else []
    int8_ok = any(v.get("variant") == "int8" and v.get("passed") for v in variants)
    return exp / ("model.int8.onnx" if int8_ok else "model.onnx")


def _studies_stage(ctx: click.Context, workdir: Path, checkpoint: Path, model: Path, seed: int) -> None:
    """synth --studies -> score -> evaluate -> report, each as the user would type it."""
    from fracture_batch.cli.evaluate_cmd import evaluate
    from fracture_batch.cli.report_cmd import report
    from fracture_batch.cli.score_cmd import score
    from fracture_batch.cli.synth_cmd import synth

    data, scores = workdir / "studies", workdir / "study_scores"
    if (data / "valid").is_dir():
        click.echo(f"reusing the studies in {data}")
    else:
        ctx.invoke(synth, out_dir=data, n_studies=DEMO_STUDIES, seed=seed, formats=("png8", "dicom-mono2"))
    ctx.invoke(score, inputs=(str(data / "valid"),), model=str(model), out=str(scores), overwrite=True)
    click.echo("")
    ctx.invoke(evaluate, out_dir=scores)
    from fracture_batch.report.thumbs import has_captum

    ok, hint = has_captum()
    if not ok:
        click.echo(f"no class-activation overlays: {hint}")
    ctx.invoke(report, out_dir=scores, checkpoint=checkpoint if ok else None, top=DEMO_REPORT_TOP)


def _recap(workdir: Path, run: Path, exp: Path, scores: Path, timings: dict[str, float]) -> None:
    from fracture_batch.machine import cpu_label
    from train.report import phase_caption, phase_table

    _stage("results")
    click.echo(f"measured on: {cpu_label()}")
    click.echo("")
    metrics = json.loads((run / "metrics.json").read_text())
    click.echo(phase_table(metrics))
    click.echo(phase_caption(metrics))
    click.echo(_train_headroom(metrics, timings.get("train", 0.0)))
    report = exp / "export_report.json"
    if report.is_file():
        click.echo("")
        click.echo("export parity against torch fp32 (held-out images):")
        for v in json.loads(report.read_text()).get("variants", []):
            p = v.get("parity", {})
            click.echo(f"  {v.get('variant', '?'):<9} max|dp| {p.get('max_abs_diff', float('nan')):.2e}  "
                       f"agreement {p.get('agreement', float('nan')):.3f} ({p.get('flips', '?')} flips, "
                       f"{p.get('near_threshold', '?')} near the threshold)  "
                       f"passed {v.get('passed')} (judged by {v.get('judged_by', '?')})")
    success = scores / "_SUCCESS"
    if success.is_file():
        s = json.loads(success.read_text())
        click.echo("")
        click.echo(f"scored {s.get('files_seen')} files: {s.get('ok')} ok, {s.get('errors')} errors, "
                   f"{s.get('images_per_s', 0):.1f} images/s -> {scores}")
    evaluation = workdir / "study_scores" / "_evaluation" / "evaluation.json"
    if evaluation.is_file():
        from fracture_batch.report.evaluate import Evaluation, format_table

        click.echo("")
        click.echo("synthetic MURA-like studies, image and study level:")
        click.echo(format_table(Evaluation.from_dict(json.loads(evaluation.read_text()))))
        click.echo(f"triage report: {workdir / 'study_scores' / '_report.html'}")
    click.echo("")
    click.echo("stage times: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items())
               + f"; total {sum(timings.values()) / 60:.1f} min")
    click.echo(f"everything is under {workdir}")


def _train_headroom(metrics: dict, train_s: float) -> str:
    """Whether the recipe ran whole, and how far the train stage stayed under its guard."""
    cfg = metrics["config"]
    budget = 60.0 * float(cfg.get("max_minutes") or 0.0)
    cut = [p for p, r in metrics["phases"].items() if r.get("stopped_by") == "time_budget"]
    ran = ", ".join(f"{p} {r['epochs_run']}" for p, r in metrics["phases"].items())
    line = f"epochs run: {ran} (recipe: frozen {cfg['frozen_epochs']}, unfrozen {cfg['epochs']})"
    if not budget:
        return line
    if cut:
        return line + f"; the {budget / 60:.0f}-min time guard cut the {', '.join(cut)} phase: the recipe did not finish"
    return line + (f"; train stage {train_s / 60:.1f} min, {1 - train_s / budget:.0%} headroom under the "
                   f"{budget / 60:.0f}-min guard")
