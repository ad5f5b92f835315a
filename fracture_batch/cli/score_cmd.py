"""`fracture-batch score`: stream input directories through a model into a Parquet dataset."""
from __future__ import annotations

import signal
import sys

import click

from fracture_batch.backends.base import BackendKind, DeviceKind
from fracture_batch.backends.openvino_backend import InferencePrecision
from fracture_batch.decode.types import DecoderKind, IdentifierMode, ReduceOverride
from fracture_batch.scoring.config import DecodeIsolation
from fracture_batch.scoring.config import Engine
from fracture_batch.scoring.config import StudyAggregate, StudyKey


def _choice(enum_cls) -> click.Choice:
    return click.Choice([e.value for e in enum_cls], case_sensitive=False)


@click.command(context_settings={"show_default": True})
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--model", "model", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="Model file to score with: .onnx (onnxruntime or OpenVINO), .plan + .json sidecar (TensorRT), or .pt (torch).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Output directory (a Parquet dataset). Created if its parent exists; re-running resumes.")
@click.option("--backend", type=_choice(BackendKind), default="auto",
              help="Inference backend. auto: chosen from the model file type and the device, and printed; for "
                   "an .onnx on the CPU the faster of onnxruntime and OpenVINO (a short probe, cached) among "
                   "those within their recorded parity bar. openvino: pip install 'fracture-batch[openvino]'.")
@click.option("--device", type=_choice(DeviceKind), default="auto",
              help="auto: CUDA when a GPU is present and the backend can use it (else CPU, with a warning "
                   "saying why when a GPU is there); cuda: fail at once, before reading any input, if it cannot.")
@click.option("--device-id", type=click.IntRange(0), default=0, show_default=True,
              help="CUDA device for the backend and the DALI decoders.")
@click.option("--decoder", type=_choice(DecoderKind), default="auto",
              help="Decoder family. auto: DALI on a GPU, the Python decoders (PIL/pydicom) on CPU. "
                   "nvimgcodec: DICOM decoded on the device by nvImageCodec + torch (JPEG, JPEG 2000, HTJ2K; "
                   "LUT/window/resize there, CPU fallback per file counted in _SUCCESS), other formats by Python.")
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
@click.option("--decode-reduce", type=_choice(ReduceOverride), default="spec",
              help="spec: decode only what the model sees, by the model spec's rule (JPEG 2000/HTJ2K "
                   "resolution levels, JPEG DCT scaling, box means; see README 'Archives are DICOM'). "
                   "off: decode every pixel for this run (a check against the full decode).")
@click.option("--dicom-ids", type=_choice(IdentifierMode), default="hash",
              help="DICOM Study/Series/SOP Instance UIDs in the output: hash (SHA-256 of salt + UID: "
                   "joinable across runs, raw UIDs stay at the site), keep (as is), drop. Patient name, "
                   "ID and birth date are never written.")
@click.option("--uid-salt", default="", envvar="FRACTURE_BATCH_UID_SALT", show_default=False,
              help="Salt for --dicom-ids hash (or env FRACTURE_BATCH_UID_SALT); same salt, same tokens.")
@click.option("--amp", is_flag=True, help="torch backend: autocast (bf16 on CPU, fp16 on CUDA).")
@click.option("--inference-precision", type=_choice(InferencePrecision), default="auto",
              help="openvino: arithmetic of the ops the file does not quantise. auto: bf16 for a fp32 file on "
                   "a CPU with AMX/AVX512-BF16 (within its parity bar), else f32. bf16 needs such a CPU.")
@click.option("--openvino-cache", type=click.Path(file_okay=False, path_type=str), default=None,
              help="openvino: compiled-model cache directory, so start-up skips compilation "
                   "(default: ~/.cache/fracture-batch/openvino).")
@click.option("--engine-cache", type=click.Path(file_okay=False, path_type=str), default=None,
              help="onnxruntime TensorRT EP engine cache directory (default: OUT/_engine_cache).")
@click.option("--study-key", type=_choice(StudyKey), default=StudyKey.AUTO.value,
              help="How images form the study table OUT/_studies: auto (DICOM StudyInstanceUID, as --dicom-ids "
                   "writes it, else the study folder), folder (the nearest MURA-style studyN*/ folder, else the "
                   "parent folder, even for DICOM), parent (each file's parent folder). Recorded in its metadata.")
@click.option("--study-aggregate", type=_choice(StudyAggregate), default=StudyAggregate.MEAN.value,
              help="A study's probability from its images': mean (MURA's rule) or max; decided at the model's "
                   "threshold. Rebuilt from every committed row at the end of each run.")
@click.option("--progress/--no-progress", default=True,
              help="Progress on stderr: a bar on a terminal, a line per 5 % in a log file or pipe.")
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
          decode_isolation, decode_timeout, part_rows, part_seconds, resume, overwrite, max_pixels, decode_reduce, dicom_ids,
          uid_salt, amp, inference_precision, openvino_cache, engine_cache, study_key, study_aggregate, progress, engine, address, workers, gpus_per_worker, cpus_per_worker):
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
        identifiers=dicom_ids, uid_salt=uid_salt, decode_reduce=decode_reduce, amp=amp, engine_cache_dir=engine_cache,
        study_key=StudyKey(study_key), study_aggregate=StudyAggregate(study_aggregate),
        inference_precision=inference_precision, openvino_cache_dir=openvino_cache,
    )
    show = progress
    bar = ProgressBar(enabled=show)
    previous = _sigterm_as_interrupt()
    try:
        if Engine(engine) is Engine.RAY:  # RayNotInstalledError (a RuntimeError): the one-line install hint
            from fracture_batch.scoring.ray.engine import RayConfig, run_ray

            ray_cfg = RayConfig(address=address, workers=workers, gpus_per_worker=gpus_per_worker,
                                cpus_per_worker=cpus_per_worker,
                                progress=show and sys.stderr.isatty())  # Ray's bars are terminal-only
            summary = run_ray(cfg, ray_cfg, on_start=lambda s: click.echo(start_line(s), err=True))
        else:
            summary = run_score(cfg, on_progress=bar.update, on_start=lambda s: click.echo(start_line(s), err=True))
    except (SinkError, BackendError, ScoreAborted, RuntimeError) as exc:  # RuntimeError: e.g. no DALI
        raise click.ClickException(str(exc)) from None
    finally:
        bar.close()
        signal.signal(signal.SIGTERM, previous)
    from fracture_batch.scoring.sink import read_success

    click.echo(format_summary(summary, (read_success(summary.out) or {}).get("studies")))


def _sigterm_as_interrupt():
    """A batch scheduler's SIGTERM stops the run like Ctrl-C: complete rows are committed first."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)
