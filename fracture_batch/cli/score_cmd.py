"""`fracture-batch score`: stream input directories through a model into a Parquet dataset."""
from __future__ import annotations

import signal
import sys

import click

from fracture_batch.backends.base import BackendKind, DeviceKind
from fracture_batch.decode.types import DecoderKind, IdentifierMode
from fracture_batch.scoring.config import DecodeIsolation
from fracture_batch.scoring.config import Engine


def _choice(enum_cls) -> click.Choice:
    return click.Choice([e.value for e in enum_cls], case_sensitive=False)


@click.command(context_settings={"show_default": True})
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--model", "model", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="Model file to score with: .onnx (onnxruntime), .plan + .json sidecar (TensorRT), or .pt (torch).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Output directory (a Parquet dataset). Created if its parent exists; re-running resumes.")
@click.option("--backend", type=_choice(BackendKind), default="auto",
              help="Inference backend. auto: chosen from the model file type and the device, and printed.")
@click.option("--device", type=_choice(DeviceKind), default="auto",
              help="auto: CUDA when a GPU is present and the backend can use it (else CPU, with a warning "
                   "saying why when a GPU is there); cuda: fail at once, before reading any input, if it cannot.")
@click.option("--device-id", type=click.IntRange(0), default=0, show_default=True,
              help="CUDA device for the backend and the DALI decoders.")
@click.option("--decoder", type=_choice(DecoderKind), default="auto",
              help="Decoder family. auto: DALI on a GPU, the Python decoders (PIL/pydicom) on CPU.")
@click.option("--batch-size", type=click.IntRange(1), default=32, help="Images per inference batch.")
@click.option("--decode-workers", type=click.IntRange(0), default=0,
              help="Decode workers (0: half the cores, at least 2). They share the cores with inference: "
                   "onnxruntime threads do not spin, so the OS gives a core to whichever stage has work.")
@click.option("--intra-op-threads", type=click.IntRange(0), default=0,
              help="Inference threads (0: every core).")
@click.option("--decode-isolation", type=_choice(DecodeIsolation), default="process",
              help="process: each decode worker uses a child process, so --decode-timeout is enforced by "
                   "killing it. thread: decode in threads (less overhead, no hard timeout).")
@click.option("--decode-timeout", type=click.FloatRange(min=0.1), default=60.0,
              help="Seconds one file may take to decode before it becomes an error row. Enforced with "
                   "--decode-isolation process only (a thread cannot be stopped).")
@click.option("--part-rows", type=click.IntRange(1), default=5000,
              help="Rows per Parquet part; a part is committed atomically (temp name, fsync, rename).")
@click.option("--part-seconds", type=click.FloatRange(min=0.0), default=60.0,
              help="Commit a part at least this often, so a long run loses little when killed.")
@click.option("--resume/--no-resume", default=True,
              help="Skip inputs already in committed parts of --out. --no-resume refuses a non-empty --out.")
@click.option("--overwrite", is_flag=True, help="Remove this tool's existing parts in --out and start again.")
@click.option("--max-pixels", type=click.IntRange(1), default=100_000_000,
              help="Refuse (error row) images with more pixels than this: protects memory from decode bombs.")
@click.option("--dicom-ids", type=_choice(IdentifierMode), default="hash",
              help="DICOM Study/Series/SOP Instance UIDs in the output: hash (SHA-256 of salt + UID: "
                   "joinable across runs, raw UIDs stay at the site), keep (as is), drop. Patient name, "
                   "ID and birth date are never written.")
@click.option("--uid-salt", default="", envvar="FRACTURE_BATCH_UID_SALT", show_default=False,
              help="Salt for --dicom-ids hash (or env FRACTURE_BATCH_UID_SALT); same salt, same tokens.")
@click.option("--amp", is_flag=True, help="torch backend: autocast (bf16 on CPU, fp16 on CUDA).")
@click.option("--engine-cache", type=click.Path(file_okay=False, path_type=str), default=None,
              help="onnxruntime TensorRT EP engine cache directory (default: OUT/_engine_cache).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@click.option("--engine", type=_choice(Engine), default=Engine.LOCAL.value,
              help="local: this machine's overlapped runner. ray: Ray Data on a Ray cluster, same rows and "
                   "resume (pip install 'fracture-batch[ray]'; README 'Scoring on a Ray cluster').")
@click.option("--address", default=None, show_default=False,
              help="--engine ray: cluster address, 'auto' or ray://HOST:10001 (default: $RAY_ADDRESS, "
                   "else a private Ray instance on this machine).")
@click.option("--workers", type=click.IntRange(0), default=0,
              help="--engine ray: Predictor actors (0: one per GPU share, or 3/4 of the cluster's CPUs).")
@click.option("--gpus-per-worker", type=click.FloatRange(min=0.0), default=0.0,
              help="--engine ray: GPUs each actor reserves (0: CPU actors; 0.5: two actors share a GPU).")
@click.option("--cpus-per-worker", type=click.FloatRange(min=0.0, min_open=True), default=1.0,
              help="--engine ray: CPUs each actor reserves (also its inference threads).")
def score(inputs, model, out, backend, device, device_id, decoder, batch_size, decode_workers, intra_op_threads,
          decode_isolation, decode_timeout, part_rows, part_seconds, resume, overwrite, max_pixels, dicom_ids,
          uid_salt, amp, engine_cache, progress, engine, address, workers, gpus_per_worker, cpus_per_worker):
    """Score every file under INPUTS (directories or files, walked recursively) into --out.

    One Parquet row per input file: path, relpath, status (ok|error), error, prob_fractured,
    pred_label, threshold, model_sha256 and decode facts; the model spec is in the schema
    metadata. A bad file becomes an error row and the run goes on. Re-run the same command
    after an interruption to resume; `_SUCCESS` in --out marks a finished run.
    """
    from fracture_batch.backends import BackendError
    from fracture_batch.cli.score_report import ProgressBar, format_summary, start_line
    from fracture_batch.scoring.config import ScoreAborted, ScoreConfig
    from fracture_batch.scoring.local import score as run_score
    from fracture_batch.scoring.sink import SinkError

    cfg = ScoreConfig(
        inputs=tuple(inputs), model=model, out=out, backend=BackendKind(backend), device=DeviceKind(device),
        device_id=device_id, decoder=decoder, batch_size=batch_size, decode_workers=decode_workers, intra_op_threads=intra_op_threads,
        decode_isolation=DecodeIsolation(decode_isolation), decode_timeout=decode_timeout, part_rows=part_rows,
        part_seconds=part_seconds, resume=resume, overwrite=overwrite, max_pixels=max_pixels,
        identifiers=dicom_ids, uid_salt=uid_salt, amp=amp, engine_cache_dir=engine_cache,
    )
    show = sys.stderr.isatty() if progress is None else progress
    bar = ProgressBar(enabled=show)
    previous = _sigterm_as_interrupt()
    try:
        if Engine(engine) is Engine.RAY:  # RayNotInstalledError (a RuntimeError): the one-line install hint
            from fracture_batch.scoring.ray.engine import RayConfig, run_ray

            ray_cfg = RayConfig(address=address, workers=workers, gpus_per_worker=gpus_per_worker,
                                cpus_per_worker=cpus_per_worker, progress=show)
            summary = run_ray(cfg, ray_cfg, on_start=lambda s: click.echo(start_line(s), err=True))
        else:
            summary = run_score(cfg, on_progress=bar.update, on_start=lambda s: click.echo(start_line(s), err=True))
    except (SinkError, BackendError, ScoreAborted, RuntimeError) as exc:  # RuntimeError: e.g. no DALI
        raise click.ClickException(str(exc)) from None
    finally:
        bar.close()
        signal.signal(signal.SIGTERM, previous)
    click.echo(format_summary(summary))


def _sigterm_as_interrupt():
    """A batch scheduler's SIGTERM stops the run like Ctrl-C: complete rows are committed first."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)
