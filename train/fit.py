"""``fit(config)``: the seed project's two-phase recipe, as a short loop over named steps.

``fit`` = start_run -> prepare_data -> create_run_parts -> for each phase: run_phase
(train/phase.py: optimiser, resume, per-epoch seed, time budget, epoch, history,
``last.pt``) -> finish_phase -> finish_run.

Phase "frozen": head only. Phase "unfrozen": head + the backbone layers named by
``--unfreeze`` at a lower learning rate. Each phase: Adam, StepLR or cosine, early stopping on
validation loss restoring the best weights, then temperature + threshold fitted on
validation and the test split evaluated with bootstrap CIs. The last phase's model is
saved as ``model.pt`` with its spec. ``last.pt`` after every epoch makes a killed run
resumable (``fit(config, resume=True)``); per-epoch seeding makes the resumed run's
results identical to an uninterrupted one.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


from fracture_batch.model.spec import ModelSpec, ThresholdMethod
from train import data as D
from train.calibration import choose_threshold, fit_temperature
from train.config import Imbalance, Loader, TrainConfig
from train.loops import EarlyStopping, MixedPrecision, evaluate, resolve_precision
from train.metrics import curves, evaluate_predictions
from train.phase import RunParts, RunRecord, run_phase
from train.pretrained import apply_pretrained, resolve_pretrained
from train.resume import LAST_NAME, load_resume_state, seed_everything, set_deterministic

log = logging.getLogger(__name__)

PHASES = ("frozen", "unfrozen")


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    model_path: Path
    spec: ModelSpec
    metrics: dict[str, Any]
    report_path: Path


@dataclass
class _Data:
    class_names: tuple[str, ...]
    samples: dict[str, list[D.Sample]]
    datasets: dict[str, D.XrayDataset]
    counts: dict[str, dict[str, int]]
    fingerprint: str


def _versions() -> dict[str, str]:
    import torch
    import torchvision

    import fracture_batch

    return {"torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
            "fracture_batch": str(fracture_batch.__version__)}


def prepare_data(config: TrainConfig, spec: ModelSpec, bad: dict[str, str]) -> _Data:
    class_names = D.resolve_class_names(config.data_dir, config.positive_class)
    samples = {s: D.scan_split(config.data_dir, s, class_names) for s in D.SPLITS}
    counts = {s: D.class_counts(v, class_names) for s, v in samples.items()}
    # train=True means augmented; --no-augment trains on the scorer's exact preprocessing.
    datasets = {s: D.XrayDataset(v, spec.replace(class_names=class_names),
                                 train=(s == "train" and config.augment))
                for s, v in samples.items()}
    if config.cache:
        for s, ds in datasets.items():
            for msg in D.fill_cache(ds, config.num_workers, progress=config.progress):
                bad.setdefault(msg.split(":", 1)[0], msg)
    return _Data(class_names, samples, datasets, counts, D.data_fingerprint(samples))


def class_weights(counts: dict[str, int]) -> list[float]:
    """N / (K * n_c): each class contributes equally to the loss (sklearn 'balanced')."""
    n, k = sum(counts.values()), len(counts)
    return [n / (k * c) if c else 0.0 for c in counts.values()]


def _phase_epochs(config: TrainConfig) -> list[tuple[str, int]]:
    return [(p, n) for p, n in zip(PHASES, (config.frozen_epochs, config.epochs)) if n > 0]


def evaluate_phase(model, data: _Data, loaders: dict[str, Any], criterion, prec: MixedPrecision,
                   config: TrainConfig, on_bad) -> dict[str, Any]:
    """Calibrate on val, then test metrics at argmax (0.5) and at the operating threshold."""
    pos = data.class_names.index(config.positive_class)
    kw = dict(on_bad=on_bad, progress=config.progress)
    val = evaluate(model, loaders["val"], criterion, prec, desc="calibrate (val)", **kw)
    test = evaluate(model, loaders["test"], criterion, prec, desc="test", **kw)
    temperature = fit_temperature(val["logits"], val["labels"]) if config.calibrate else 1.0
    probe = ModelSpec(class_names=data.class_names, positive_class=config.positive_class,
                      temperature=temperature)
    val_prob, test_prob = probe.probabilities(val["logits"]), probe.probabilities(test["logits"])
    threshold, detail = choose_threshold(val["labels"] == pos, val_prob, config.threshold_rule,
                                         config.target_sensitivity)
    y_test = (test["labels"] == pos).astype(int)
    boot = dict(n_boot=config.bootstrap, seed=config.seed)
    return {
        "temperature": temperature, "threshold": threshold, "threshold_detail": detail,
        "val_loss": val["loss"], "test_loss": test["loss"],
        "at_0.5": evaluate_predictions(y_test, test_prob, 0.5, **boot),
        "at_threshold": evaluate_predictions(y_test, test_prob, threshold, **boot),
        "curves": curves(y_test, test_prob),
        "test_predictions": {"relpath": [data.samples["test"][i].relpath for i in test["index"]],
                             "label": [int(v) for v in y_test], "prob": [float(p) for p in test_prob]},
    }


def fit(config: TrainConfig, *, resume: bool = False,
        on_epoch_end: Callable[[str, int], None] | None = None) -> TrainResult:
    """Train, calibrate, evaluate, report. ``on_epoch_end(phase, epoch)`` runs after
    ``last.pt`` is written (tests use it to simulate a kill)."""
    t_start = time.perf_counter()
    run_dir, state = start_run(config, resume)
    prec = resolve_precision(config.device, config.amp, config.amp_dtype, config.channels_last)
    prev_det = set_deterministic(prec.device, config.deterministic)
    seed_everything(config.seed)
    try:
        weights = resolve_pretrained(config.pretrained if state is None else "none", config.arch)
        base_spec = ModelSpec(arch=config.arch, input_size=config.image_size, resize_mode=config.resize_mode,
                              pretrained=state["pretrained"] if state else weights.source,
                              decode_reduce=config.decode_reduce, reduce_min_ratio=config.reduce_min_ratio,
                              positive_class=config.positive_class, versions=_versions())
        record = RunRecord.from_resume(state) if state else RunRecord(weights.source, "")
        data = prepare_data(config, base_spec, record.bad)
        if state and state["data_fingerprint"] != data.fingerprint:
            raise ValueError(f"the data in {config.data_dir} changed since this run started; cannot resume")
        record.fingerprint = data.fingerprint
        base_spec = base_spec.replace(class_names=data.class_names, data_fingerprint=data.fingerprint)
        weights_c = class_weights(data.counts["train"])
        _announce(config, prec, record.pretrained, data, weights_c)
        parts = create_run_parts(config, prec, data, weights_c, weights, state)

        global_epoch = 0
        for phase, n_epochs in _phase_epochs(config):
            if phase not in record.phase_results:
                stopper, stopped_by = run_phase(parts, record, config, phase, n_epochs, global_epoch,
                                                run_dir=run_dir, state=state, t_start=t_start,
                                                on_epoch_end=on_epoch_end)
                finish_phase(parts, record, data, config, phase, stopper, stopped_by)
                state = None
            global_epoch += n_epochs
        return finish_run(run_dir, config, parts, record, data, base_spec, weights_c)
    finally:
        import torch

        torch.use_deterministic_algorithms(prev_det)


def start_run(config: TrainConfig, resume: bool) -> tuple[Path, dict[str, Any] | None]:
    """-> (run directory, the resume state or None). A new run never overwrites another."""
    run_dir = Path(config.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        return run_dir, load_resume_state(run_dir)
    if (run_dir / LAST_NAME).exists() or (run_dir / "model.pt").exists():
        raise FileExistsError(f"{run_dir} already holds a run; use --resume {run_dir} or another --out")
    config.save(run_dir / "config.json")
    return run_dir, None


def create_run_parts(config: TrainConfig, prec: MixedPrecision, data: _Data, weights_c: list[float],
                     weights, state: dict[str, Any] | None) -> RunParts:
    """Model (initial or resumed weights), losses, evaluation loaders, sampler, DALI loader."""
    import torch

    from fracture_batch.model.checkpoint import create_model

    model = create_model(config.arch, len(data.class_names))
    apply_pretrained(model, weights)
    model.to(prec.device)
    if prec.channels_last:
        model.to(memory_format=torch.channels_last)
    if state:
        model.load_state_dict(state["model"])
    use_w = config.imbalance is Imbalance.WEIGHTED_LOSS
    criterion = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights_c, device=prec.device) if use_w else None)
    eval_criterion = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights_c) if use_w else None)
    sampler_w = None
    if config.imbalance is Imbalance.SAMPLER:
        sampler_w = [weights_c[s.label] for s in data.samples["train"]]
    eval_loaders = {s: D.create_loader(data.datasets[s], batch_size=config.batch_size, shuffle=False,
                                       seed=config.seed, num_workers=config.num_workers)
                    for s in ("val", "test")}
    dali_loader = None
    if config.loader is Loader.DALI:
        from train.dali_loader import DaliTrainLoader

        # Built once: DALI owns shuffling and augmentation (seeded, but a resumed run
        # is not bit-identical to an uninterrupted one, unlike the torch loader).
        dali_loader = DaliTrainLoader(data.samples["train"], data.datasets["train"].spec,
                                      batch_size=config.batch_size, seed=config.seed,
                                      num_threads=max(1, config.num_workers), device=prec.device)
    return RunParts(model, prec, criterion, eval_criterion, data.datasets["train"], eval_loaders, sampler_w,
                    dali_loader)


def finish_phase(parts: RunParts, record: RunRecord, data: _Data, config: TrainConfig, phase: str,
                 stopper: EarlyStopping, stopped_by: str) -> None:
    """Best weights back, then calibration and test metrics of the phase into ``record``."""
    stopper.restore_best(parts.model)
    result = evaluate_phase(parts.model, data, parts.eval_loaders, parts.eval_criterion, parts.prec, config,
                            record.on_bad)
    result["best_epoch"] = stopper.best_epoch + 1
    result["epochs_run"] = sum(1 for h in record.history if h["phase"] == phase)
    result["stopped_by"] = stopped_by
    record.phase_results[phase] = result


def finish_run(run_dir: Path, config: TrainConfig, parts: RunParts, record: RunRecord, data: _Data,
               base_spec: ModelSpec, weights_c: list[float]) -> TrainResult:
    """``model.pt`` with the last phase's threshold and temperature, metrics, report."""
    import torch

    from fracture_batch.model.checkpoint import save_checkpoint
    from train.report import write_outputs

    final = record.phase_results[_phase_epochs(config)[-1][0]]
    spec = base_spec.replace(threshold=final["threshold"], threshold_method=ThresholdMethod(config.threshold_rule),
                             threshold_detail=final["threshold_detail"], temperature=final["temperature"])
    model = parts.model.to("cpu").to(memory_format=torch.contiguous_format)
    spec = save_checkpoint(run_dir / "model.pt", model, spec)
    use_w = config.imbalance is Imbalance.WEIGHTED_LOSS
    metrics = {
        "config": {k: v for k, v in config.to_dict().items() if k not in ("out_dir", "progress")},
        "spec": spec.to_dict(), "class_counts": data.counts,
        "imbalance": config.imbalance.value, "class_weights": weights_c if use_w else None,
        "precision_mode": parts.prec.amp_dtype or "float32", "device": parts.prec.device,
        "skipped_files": sorted(record.bad.values()), "history": record.history,
        "phases": {p: {k: v for k, v in r.items() if k not in ("curves", "test_predictions")}
                   for p, r in record.phase_results.items()},
    }
    report = write_outputs(run_dir, metrics, record.phase_results, record.timings)
    (run_dir / LAST_NAME).unlink(missing_ok=True)  # done: the optimizer state is not needed
    return TrainResult(run_dir, run_dir / "model.pt", spec, metrics, report)


def _announce(config: TrainConfig, prec: MixedPrecision, pretrained: str, data: _Data, w: list[float]) -> None:
    init = "random initialisation" if pretrained == "none" else pretrained
    imb = {Imbalance.WEIGHTED_LOSS: f"weighted loss (class weights {', '.join(f'{x:.3f}' for x in w)})",
           Imbalance.SAMPLER: "class-balanced WeightedRandomSampler", Imbalance.NONE: "none"}
    log.info("training %s at %d px from %s on %s", config.arch, config.image_size, init, prec.describe())
    for split, c in data.counts.items():
        log.info("  %-5s %s", split, ", ".join(f"{k} {v}" for k, v in c.items()))
    log.info("  imbalance handling: %s", imb[config.imbalance])


def load_metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "metrics.json").read_text())
