"""``fracture-batch export``: checkpoint -> checked ONNX variants (+ TensorRT engine)."""
from __future__ import annotations

import sys
from pathlib import Path

import click

# export.config.Precision's values, spelled out so --help does not import export (onnx, torch);
# tests/test_cli.py checks they match.
PRECISIONS = ("fp32", "fp16", "int8")

# Exit codes: 1 = a variant missed its parity bar (or another export error);
# 3 = --tensorrt asked for on a machine without TensorRT/CUDA (ONNX files were written).
EXIT_PARITY = 1
EXIT_NO_TENSORRT = 3


def _parse_precisions(ctx, param, value: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(p.strip().lower() for p in value.split(",") if p.strip()))
    bad = [p for p in items if p not in PRECISIONS]
    if bad or not items:
        raise click.BadParameter(f"choose from {', '.join(PRECISIONS)} (comma-separated), got {value!r}")
    return items


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for model.onnx, model.fp16.onnx, model.int8.onnx, model.int8.trt.onnx and export_report.json.")
@click.option("--precision", "precisions", default="fp32,fp16,int8", show_default=True, callback=_parse_precisions,
              help="Comma-separated variants to write. fp32 is always written (the others derive from it). "
                   "int8 writes two Q/DQ files: model.int8.onnx (onnxruntime CPU, uint8 activations) and "
                   "model.int8.trt.onnx (TensorRT, symmetric int8).")
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Training dataset root with train/ val/ test/ splits of class folders: parity runs on test/ "
                   "(else val/), int8 calibration on another split. Default: the data_dir recorded in "
                   "config.json next to the checkpoint (a `fracture-batch train` run directory).")
@click.option("--calib-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of real images for int8 calibration. Without --data-dir it is split into disjoint "
                   "calibration and parity parts.")
@click.option("--calib-n", default=128, show_default=True, type=click.IntRange(min=1),
              help="Number of calibration images (passed through the model spec's preprocessing).")
@click.option("--parity-n", default=512, show_default=True, type=click.IntRange(min=1),
              help="Maximum number of held-out images for the parity checks.")
@click.option("--tensorrt", is_flag=True,
              help="Also build a TensorRT engine model.<precision>.plan (+ .plan.json sidecar). Needs CUDA and "
                   "TensorRT >= 10.12; without them exits with code 3 after writing the ONNX files.")
@click.option("--trt-precision", type=click.Choice(PRECISIONS),
              help="ONNX variant the engine is built from. Default: the lowest precision exported.")
@click.option("--max-batch", default=32, show_default=True, type=click.IntRange(min=1),
              help="Largest batch of the engine's optimisation profile (profile: 1..B).")
@click.option("--opt-batch", default=None, type=click.IntRange(min=1),
              help="Batch the engine's kernels are tuned for: the --batch-size you score with "
                   "(fracture-batch score's default, 32). Default: --max-batch.")
@click.option("--device-id", default=0, show_default=True, type=click.IntRange(min=0),
              help="CUDA device to build the TensorRT engine on.")
@click.option("--workspace-gb", default=4.0, show_default=True, type=click.FloatRange(min=0.25),
              help="TensorRT builder workspace memory limit.")
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path),
              help="TensorRT timing cache file, reused across builds. Default: one per GPU model and "
                   "TensorRT version under ~/.cache/fracture-batch/.")
@click.option("--opset", default=18, show_default=True, type=click.IntRange(min=17),
              help="ONNX opset of the exported graphs.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1),
              help="Batch size for calibration and parity runs.")
def export(checkpoint, out_dir, precisions, data_dir, calib_dir, calib_n, parity_n, tensorrt, trt_precision,
           max_batch, opt_batch, device_id, workspace_gb, timing_cache, opset, batch_size) -> None:
    """Export CHECKPOINT (model.pt) to ONNX fp32/fp16/int8, each checked against torch on held-out images."""
    from export import ExportConfig, ParityError, Precision, export_model
    from export.images import ImageSourceError
    from export.tensorrt_build import TensorRTUnavailable
    from fracture_batch.model.checkpoint import CheckpointError

    if isinstance(precisions, str):  # ctx.invoke (e.g. from `demo`) skips option callbacks
        precisions = _parse_precisions(None, None, precisions)
    config = ExportConfig(
        checkpoint=checkpoint,
        out_dir=out_dir,
        precisions=tuple(Precision(p) for p in precisions),
        data_dir=data_dir,
        calib_dir=calib_dir,
        calib_n=calib_n,
        parity_n=parity_n,
        batch_size=batch_size,
        opset=opset,
        tensorrt=tensorrt,
        trt_precision=Precision(trt_precision) if trt_precision else None,
        max_batch=max_batch,
        opt_batch=opt_batch,
        device_id=device_id,
        workspace_gb=workspace_gb,
        timing_cache=timing_cache,
    )
    try:
        report = export_model(config)
    except (ImageSourceError, ValueError) as exc:  # ValueError: inconsistent options
        raise click.UsageError(str(exc)) from None
    except CheckpointError as exc:
        raise click.ClickException(str(exc)) from None
    except ParityError as exc:
        _echo_table(exc)
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_PARITY)
    except TensorRTUnavailable as exc:
        _echo_table(exc)
        click.echo(f"Error: --tensorrt: {exc}", err=True)
        sys.exit(EXIT_NO_TENSORRT)
    click.echo(report.table())
    click.echo(f"report: {Path(out_dir) / 'export_report.json'}")


def _echo_table(exc: Exception) -> None:
    """The parity table of the report written before the failure, when there is one."""
    report = getattr(exc, "report", None)
    if report is not None:
        click.echo(report.table())
