"""``score --engine ray``: the local runner's contract, executed by Ray Data.

    driver: discovery (+ resume filter) -> from_arrow blocks of (path, relpath, size, error)
      -> map_batches(decode_batch)              Ray CPU tasks (decode_stage.decode_one)
      -> map_batches(PredictStage, ActorPool)   the runner's Predictor, GPU actors when asked
      -> write_parquet(OUT/.ray-staging-<run>)  rows.schema with the spec in its metadata
    driver: commit staged files as sink parts, then ``_SUCCESS``

Everything the local runner guarantees holds: fatal problems (inputs missing, --out not
writable or locked, model not loadable *on the workers*, another model's results in
--out) stop before any input is read; one row per input, error rows for bad files;
re-running resumes (committed inputs are skipped; files staged by a killed run are
recovered, see ``staging``); ``_SUCCESS`` is written last. The output directory must be
on storage every node and the driver see at the same path (see README.md, "Scoring on a Ray cluster").
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fracture_batch.backends import BackendError, BackendKind, DeviceKind, file_sha256
from fracture_batch.decode.workers import DecodeOptions
from fracture_batch.model.spec import ModelSpec
from fracture_batch.scoring import sink
from fracture_batch.scoring.config import ScoreAborted, ScoreConfig, ScoreSummary
from fracture_batch.scoring.discover import DiscoveryStats
from fracture_batch.scoring.pipeline import iter_chunks, run_info
from fracture_batch.scoring.ray import staging
from fracture_batch.scoring.ray.stages import PredictStage, decode_batch, probe, work_table
from fracture_batch.scoring.session import Counts, Session, open_session

log = logging.getLogger(__name__)

INSTALL_HINT = "--engine ray needs Ray Data: pip install 'fracture-batch[ray]'"
DECODER_NAME = "python (Ray tasks)"
RESUME_HINT = ("{what}; committed parts are intact and rows already staged are recovered: "
               "re-run the same command to resume")


class RayNotInstalledError(RuntimeError):
    """Raised with the one-line install hint when ``ray[data]`` is missing."""


def has_ray() -> tuple[bool, str]:
    """(Ray Data importable, its version or the install hint)."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        return False, INSTALL_HINT
    return True, f"ray {ray.__version__}"


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayNotInstalledError(INSTALL_HINT) from None
    return ray


@dataclass(frozen=True)
class RayConfig:
    address: str | None = None  # None: RAY_ADDRESS or a new local instance; "auto"; "ray://host:10001"
    workers: int = 0  # Predictor actors; 0: one per GPU share, or 3/4 of the CPUs on a CPU cluster
    gpus_per_worker: float = 0.0  # fractions share a GPU between actors (e.g. 0.5: two per GPU)
    cpus_per_worker: float = 1.0  # also the actor's intra-op threads
    decode_cpus: float = 1.0  # CPUs reserved by each decode task
    decode_memory_mb: int = 512  # memory each decode task reserves (a batch of decoded images)
    block_rows: int = 0  # rows per input block handed to Ray; 0: 4 x batch size
    progress: bool = False  # Ray Data's progress bars
    fuse_decode: bool = False  # let Ray decode inside the actors (CPU-only clusters: fewer transfers)


def resolve_workers(cfg: RayConfig, resources: dict[str, float]) -> int:
    """Actor pool size for the cluster, leaving CPUs for decode and write tasks.

    An actor pool that reserves every CPU leaves Ray Data no slot for the decode tasks
    feeding it, and the pipeline waits forever: refused here with the numbers.
    """
    cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    if cfg.gpus_per_worker > 0 and gpus < cfg.gpus_per_worker:
        raise BackendError(
            f"--gpus-per-worker {cfg.gpus_per_worker:g} but the Ray cluster has {gpus:g} GPU(s); "
            "use --gpus-per-worker 0 for CPU actors"
        )
    free = cpus - cfg.decode_cpus  # at least one decode task must always find a slot
    if cfg.workers > 0:
        workers = cfg.workers
    elif cfg.gpus_per_worker > 0:
        workers = max(1, int(gpus // cfg.gpus_per_worker))
    else:  # CPU inference costs far more than decoding (~4 GMAC an image): 3/4 of the cores
        workers = max(1, min(int(cpus * 3 / 4 // cfg.cpus_per_worker), int(free // cfg.cpus_per_worker)))
    if cfg.gpus_per_worker > 0 and workers * cfg.gpus_per_worker > gpus + 1e-9:
        raise BackendError(
            f"{workers} worker(s) x {cfg.gpus_per_worker:g} GPU need more than the cluster's {gpus:g} GPU(s); "
            "a fixed actor pool that cannot start waits forever: use fewer --workers"
        )
    if workers * cfg.cpus_per_worker > free:
        raise BackendError(
            f"{workers} worker(s) x {cfg.cpus_per_worker:g} CPU leave no CPU for decoding on a Ray cluster of "
            f"{cpus:g} CPU(s) (Ray Data would wait forever); use fewer --workers or --cpus-per-worker"
        )
    return workers


def decode_options_for(score_cfg: ScoreConfig) -> dict[str, Any]:
    """The runner's DecodeOptions for this config, as plain kwargs for the Ray stages.

    Every DecodeOptions field is taken from the ScoreConfig field of the same name (the
    runner's own convention), so a new decode option reaches both engines alike.
    """
    return dataclasses.asdict(DecodeOptions(**{
        f.name: getattr(score_cfg, f.name) for f in dataclasses.fields(DecodeOptions) if hasattr(score_cfg, f.name)
    }))


def _decode_slots(cfg: RayConfig, workers: int, resources: dict[str, float]) -> int:
    return max(1, int((float(resources.get("CPU", 0)) - workers * cfg.cpus_per_worker) // cfg.decode_cpus))


def _connect(ray, cfg: RayConfig) -> bool:
    """Connect (or start a local instance); True when this call started Ray."""
    if ray.is_initialized():
        return False
    if cfg.address is None and not os.environ.get("RAY_ADDRESS"):
        # A private local instance: no dashboard, no usage reporting from a clinical machine.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(include_dashboard=False)
    else:
        ray.init(address=cfg.address)
    return True


def _probe(ray, score_cfg: ScoreConfig, cfg: RayConfig, kw: dict[str, Any]) -> dict[str, Any]:
    remote = ray.remote(num_cpus=cfg.cpus_per_worker, num_gpus=cfg.gpus_per_worker or None)(probe)
    facts = ray.get(remote.remote(**kw))
    if "error" in facts:
        raise BackendError(f"the model cannot be loaded on the Ray workers: {facts['error']}")
    local = file_sha256(score_cfg.model)
    if facts["model_sha256"] != local:
        raise BackendError(
            f"the workers read a different {score_cfg.model} (sha256 {facts['model_sha256'][:12]}…) than this "
            f"machine ({local[:12]}…): put the model on storage every node sees at the same path"
        )
    return facts


def run_ray(
    score_cfg: ScoreConfig,
    cfg: RayConfig = RayConfig(),
    *,
    on_start: Callable[[ScoreSummary], None] | None = None,
) -> ScoreSummary:
    """Score ``score_cfg.inputs`` into ``score_cfg.out`` with Ray Data (module docstring).

    Uses the runner's ScoreConfig for everything the engines share (model, backend,
    device, batch size, part rows, resume/overwrite, decode limits); ``cfg`` holds the
    cluster settings. Returns the same ScoreSummary the local runner returns.
    """
    ray = import_ray()  # before anything else: without the extra, one line and out
    with open_session(score_cfg, model_must_exist=True) as session:
        started_ray = _connect(ray, cfg)
        try:
            return _run(ray, session, cfg, on_start)
        finally:
            if started_ray:
                ray.shutdown()


def _run(ray, session: Session, cfg: RayConfig, on_start) -> ScoreSummary:
    score_cfg, out = session.cfg, session.out
    workers = resolve_workers(cfg, ray.cluster_resources())
    model = str(Path(score_cfg.model).absolute())
    decode_options = decode_options_for(score_cfg)
    device = DeviceKind(score_cfg.device)
    if device is DeviceKind.AUTO and cfg.gpus_per_worker <= 0:
        device = DeviceKind.CPU  # an actor must not use a GPU it did not reserve from Ray
    kw = dict(model=model, backend=BackendKind(score_cfg.backend).value, device=device.value,
              options={"intra_op_threads": max(1, int(cfg.cpus_per_worker)), "amp": score_cfg.amp,
                       "engine_cache_dir": score_cfg.engine_cache_dir or str(out / "_engine_cache")},
              decode_options=decode_options)
    facts = _probe(ray, score_cfg, cfg, kw)
    staging.recover(out, discard=score_cfg.overwrite)
    index = session.prepare(facts["model_sha256"])
    summary = session.new_summary(
        backend=facts["backend"], backend_detail=facts["description"], backend_reason=facts["reason"],
        device=facts["device"], decoder=DECODER_NAME,
        threads={"decode_workers": _decode_slots(cfg, workers, ray.cluster_resources()),
                 "intra_op": kw["options"]["intra_op_threads"], "ray_workers": workers},
    )
    log.info("Ray: %d Predictor actor(s) (%g CPU, %g GPU each) on %s", workers, cfg.cpus_per_worker,
             cfg.gpus_per_worker, ray.cluster_resources())
    if on_start is not None:
        on_start(summary)
    t0 = time.perf_counter()
    stats = DiscoveryStats()
    blocks, todo, already = _discover(session, index, stats, cfg.block_rows or 4 * score_cfg.batch_size)
    spec = ModelSpec.from_json(facts["spec_json"])
    parts: list[Path] = []
    if todo:
        run_id = sink.new_run_id()
        directory = staging.staging_dir(out, run_id)
        try:
            _pipeline(ray, blocks, score_cfg, cfg, workers, spec, kw, run_info(score_cfg, summary), directory)
        except KeyboardInterrupt:
            raise ScoreAborted(RESUME_HINT.format(what="interrupted")) from None
        except ray.exceptions.RayError as exc:  # infrastructure: bad inputs are rows, never raise here
            raise ScoreAborted(RESUME_HINT.format(what=f"the Ray pipeline failed ({exc.__class__.__name__}: "
                                                       f"{str(exc).strip().splitlines()[-1][:300]})")) from None
        parts = staging.commit_staged(out, directory, run_id, expected_rows=todo)
    counts = Counts(already_done=already, scored=todo, ok=_count_ok(parts),
                    parts_written=len(parts), seconds=time.perf_counter() - t0)
    return session.finish(summary, counts, stats, spec=spec, model=kw["model"], model_sha256=facts["model_sha256"],
                          extra={"engine": "ray", "ray": dataclasses.asdict(cfg) | {"workers_resolved": workers}},
                          versions=_ray_version(ray))


def _discover(session: Session, index, stats: DiscoveryStats, block_rows: int) -> tuple[list, int, int]:
    """Driver-side discovery into Arrow blocks (~100 bytes a path, never a list of objects)."""
    seen = {"already": 0}

    def fresh():
        for f in session.discover(stats):
            if f.path in index:
                seen["already"] += 1
            else:
                yield f

    blocks = [work_table(chunk) for chunk in iter_chunks(fresh(), max(1, block_rows))]
    return blocks, sum(b.num_rows for b in blocks), seen["already"]


def create_dataset(ray, blocks: list, *, batch_size: int, cfg: RayConfig, workers: int, spec: ModelSpec,
                   predictor_kwargs: dict[str, Any]):
    """from_arrow(work blocks) -> decode tasks -> Predictor actors (lazy: nothing runs yet)."""
    from ray.data import ActorPoolStrategy

    ds = ray.data.from_arrow(blocks)
    # Ray Data fuses a task map into the next actor map when their resources are equal,
    # which would decode inside the Predictor actors, serially with inference. Different
    # resources keep them apart (ray-project/ray#54433): decode tasks reserve memory for
    # the decoded images they hold, so decoding stays in CPU tasks overlapping with the
    # actors (unless fuse_decode asks for the fused form).
    ds = ds.map_batches(
        decode_batch, batch_size=batch_size, batch_format="numpy", num_cpus=cfg.decode_cpus,
        memory=None if cfg.fuse_decode else cfg.decode_memory_mb * 1024**2,
        fn_kwargs={"spec_json": spec.to_json(), "decode_options": predictor_kwargs["decode_options"]},
    )
    return ds.map_batches(
        PredictStage, batch_size=batch_size, batch_format="numpy",
        compute=ActorPoolStrategy(size=workers), num_cpus=cfg.cpus_per_worker,
        num_gpus=cfg.gpus_per_worker or None, fn_constructor_kwargs=predictor_kwargs,
    )


def _pipeline(ray, blocks, score_cfg: ScoreConfig, cfg: RayConfig, workers: int, spec: ModelSpec,
              kw: dict[str, Any], run_meta: str, directory: Path) -> None:
    from ray.data import DataContext

    from fracture_batch.scoring.rows import schema

    DataContext.get_current().enable_progress_bars = cfg.progress
    ds = create_dataset(ray, blocks, batch_size=score_cfg.batch_size, cfg=cfg, workers=workers, spec=spec,
                        predictor_kwargs=kw | {"run_meta": run_meta})
    # The schema (with the spec in its metadata) is given explicitly: Ray casts every
    # block to it, so all parts carry the same types and metadata as the local runner's.
    # min_rows_per_file makes Ray bundle the actors' batch-sized blocks into parts of
    # --part-rows, as the local runner writes them, not one small file per batch.
    ds.write_parquet(str(directory), schema=schema(spec, run_meta), compression="zstd",
                     min_rows_per_file=score_cfg.part_rows, max_rows_per_file=score_cfg.part_rows)


def _count_ok(parts: list[Path]) -> int:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    return sum(int(pc.sum(pc.equal(pq.read_table(p, columns=["status"]).column(0), "ok")).as_py() or 0)
               for p in parts)


def _ray_version(ray) -> dict[str, str]:
    return {"ray": ray.__version__}
