"""``fracture-batch train``: options -> TrainConfig -> train.fit.fit, then the phase table."""
from __future__ import annotations

from pathlib import Path

import click

from fracture_batch.backends.base import DeviceKind
from fracture_batch.model.spec import DecodeReduce, ResizeMode, ThresholdMethod

# Enum values spelled out here so `--help` does not import torch/train.
# The values of train.config's Unfreeze / Imbalance / Loader / AmpDtype / LrSchedule, spelled out so --help
# does not import train (tests/test_cli.py checks they match the enums).
UNFREEZE = ("layer4", "layer3+", "all")
IMBALANCE = ("weighted_loss", "sampler", "none")
LOADERS = ("torch", "dali")
AMP_DTYPES = ("auto", "bf16", "fp16")
LR_SCHEDULES = ("step", "cosine", "onecycle")


@click.command(context_settings={"show_default": True})
@click.argument("data_dir", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Run directory for model.pt, metrics.json, report.md and plots (required unless --resume).")
@click.option("--resume", "resume_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Continue a killed run from its last epoch checkpoint (RUN_DIR/last.pt) with its saved options.")
@click.option("--arch", type=click.Choice(["resnet18", "resnet34", "resnet50", "resnet101"]), default="resnet50",
              help="Backbone. ResNet50 as in the seed project; smaller ones for quick tests.")
@click.option("--image-size", type=int, default=224, help="Square model input size in pixels.")
@click.option("--resize-mode", type=click.Choice([m.value for m in ResizeMode]), default=ResizeMode.SQUASH.value,
              help="How an image becomes square: squash the whole image, or shorter side + centre crop.")
@click.option("--decode-reduce", type=click.Choice([m.value for m in DecodeReduce]), default=DecodeReduce.AUTO.value,
              help="auto: decode only what the model sees (JPEG 2000/HTJ2K levels, JPEG DCT scaling, box "
                   "means), recorded in the model spec so evaluation, export parity and scoring do the same; "
                   "off: decode every pixel.")
@click.option("--reduce-min-ratio", type=click.FloatRange(1.0, 64.0), default=2.0,
              help="With --decode-reduce auto: decoded pixels kept per resized pixel, per side, at least.")
@click.option("--frozen-epochs", type=int, default=5, help="Phase 1 epochs: backbone frozen, head only (0 skips).")
@click.option("--epochs", type=int, default=10, help="Phase 2 epochs: backbone unfrozen per --unfreeze (0 skips).")
@click.option("--unfreeze", type=click.Choice(UNFREEZE), default="all",
              help="Backbone layers trained in phase 2: layer4 only, layer3 and layer4, or all.")
@click.option("--freeze-bn-stats/--adapt-bn-stats", default=False,
              help="Batch-norm statistics of frozen layers: keep fixed, or let them adapt to the data "
                   "(the seed's behaviour; needed from random initialisation).")
@click.option("--batch-size", type=int, default=32, help="Images per optimisation step.")
@click.option("--lr", type=float, default=1e-3, help="Adam learning rate of the classification head.")
@click.option("--backbone-lr", type=float, default=1e-4,
              help="Adam learning rate of unfrozen backbone layers (lower than the head's).")
@click.option("--weight-decay", type=float, default=0.0, help="Adam weight decay.")
@click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default="step",
              help="Learning rate over each phase: step (StepLR per epoch, --step-size/--gamma), cosine (per "
                   "epoch, from the set rate down to 1 % of it) or onecycle (per batch: warm up to the set rate "
                   "over the first 25 %, then anneal).")
@click.option("--step-size", type=int, default=7, help="StepLR: epochs between learning-rate drops.")
@click.option("--gamma", type=float, default=0.1, help="StepLR: factor of each drop.")
@click.option("--patience", type=int, default=3,
              help="Early stopping: epochs without a lower validation loss before a phase stops "
                   "(best weights restored; 0 disables).")
@click.option("--imbalance", type=click.Choice(IMBALANCE), default="weighted_loss",
              help="Class imbalance: class-weighted loss, class-balanced sampler, or none.")
@click.option("--augment/--no-augment", default=True,
              help="Training augmentation: random resized crop, flip, rotation ±10°, brightness/contrast.")
@click.option("--cache/--no-cache", default=False,
              help="Decode every image once and keep it, downsized, in memory (fast for small data sets).")
@click.option("--loader", type=click.Choice(LOADERS), default="torch",
              help="Training input pipeline: PyTorch DataLoader workers, or NVIDIA DALI (GPU decode and "
                   "augmentation on CUDA; raster formats only, no DICOM). Evaluation always uses the "
                   "scorer's preprocessing.")
@click.option("--num-workers", type=int, default=2, help="Data-loader worker processes that decode images.")
@click.option("--seed", type=int, default=0, help="Seed: two CPU runs with the same seed give identical metrics.json.")
@click.option("--deterministic/--no-deterministic", default=False,
              help="CUDA: deterministic kernels (repeatable GPU runs) instead of cudnn.benchmark's fastest "
                   "ones. CPU runs are always deterministic.")
@click.option("--device", type=click.Choice([d.value for d in DeviceKind]), default=DeviceKind.AUTO.value,
              help="auto picks CUDA when available.")
@click.option("--amp/--no-amp", default=True, help="Mixed precision (autocast): bf16 on CPU, bf16/fp16 on CUDA.")
@click.option("--amp-dtype", type=click.Choice(AMP_DTYPES), default="auto",
              help="Autocast dtype; auto = bf16 where supported, else fp16 with a gradient scaler (CUDA).")
@click.option("--channels-last/--no-channels-last", default=True, help="NHWC memory format (faster convolutions).")
@click.option("--pretrained", default="auto",
              help="Initial weights: auto (torch hub cache if present, else random), none, imagenet "
                   "(hub cache only, no download), or PATH to a compatible state dict (e.g. RadImageNet).")
@click.option("--threshold-rule", type=click.Choice([m.value for m in ThresholdMethod]), default=ThresholdMethod.TARGET_SENSITIVITY.value,
              help="How the decision threshold is chosen on the validation split.")
@click.option("--target-sensitivity", type=float, default=0.95,
              help="Sensitivity the threshold must reach on validation (--threshold-rule target_sensitivity).")
@click.option("--calibrate/--no-calibrate", default=True, help="Temperature scaling fitted on the validation split.")
@click.option("--bootstrap", type=int, default=1000, help="Bootstrap resamples for the 95% confidence intervals.")
@click.option("--positive-class", default="fractured", help="Class folder name of the positive finding.")
@click.option("--max-minutes", type=float, default=0.0,
              help="Wall-clock budget for the run (0 = none): no epoch starts that would overrun it.")
@click.option("--progress/--no-progress", default=True, help="Progress bars per epoch.")
def train(data_dir, out_dir, resume_dir, **opts) -> None:
    """Fine-tune a fracture classifier on DATA_DIR/{train,val,test}/<class>/ images.

    Phase 1 trains the head on a frozen backbone, phase 2 the unfrozen network; each
    phase stops early on validation loss and is evaluated on the test split. Writes
    RUN_DIR/model.pt (weights + model spec with temperature and threshold),
    metrics.json, report.md and PNG plots.
    """
    from train.config import TrainConfig
    from train.fit import fit
    from train.pretrained import PretrainedError

    if resume_dir is not None:
        config = TrainConfig.load(resume_dir / "config.json")
        if data_dir is not None and Path(data_dir).resolve() != Path(config.data_dir).resolve():
            raise click.UsageError(f"--resume uses the run's own data ({config.data_dir}); omit DATA_DIR")
        config = config.replace(progress=opts["progress"])
    else:
        if data_dir is None or out_dir is None:
            raise click.UsageError("DATA_DIR and --out RUN_DIR are required (or --resume RUN_DIR)")
        try:
            config = TrainConfig.from_dict({"data_dir": data_dir, "out_dir": out_dir, **opts})
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    try:
        result = fit(config, resume=resume_dir is not None)
    except (FileExistsError, FileNotFoundError, ValueError, RuntimeError, PretrainedError) as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: continue from the last finished epoch with "
                   f"`fracture-batch train --resume {config.out_dir}`", err=True)
        raise SystemExit(130) from None
    _echo_summary(result)


def _echo_summary(result) -> None:
    from train.report import phase_caption, phase_table

    m, spec = result.metrics, result.spec
    click.echo("")
    click.echo(phase_table(m))
    if phase_caption(m):
        click.echo(phase_caption(m))
    click.echo("")
    click.echo(f"initialisation: {'random' if spec.pretrained == 'none' else spec.pretrained}; "
               f"temperature {spec.temperature:.3f}; threshold {spec.threshold:.4f} ({spec.threshold_detail})")
    if m["skipped_files"]:
        click.echo(f"skipped {len(m['skipped_files'])} unreadable files (listed in report.md)")
    click.echo(f"model:  {result.model_path}")
    click.echo(f"report: {result.report_path}")
