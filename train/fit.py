"""``fit(config)``: the seed project's two-phase recipe, as small steps.

Phase "frozen": head only. Phase "unfrozen": head + the backbone layers named by
``--unfreeze`` at a lower learning rate. Each phase: Adam, StepLR, early stopping on
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

import numpy as np

from fracture_batch.model.spec import ModelSpec, ThresholdMethod
from train import data as D
from train.calibration import choose_threshold, fit_temperature
from train.config import Imbalance, Loader, TrainConfig
from train.loops import (EarlyStopping, MixedPrecision, resolve_precision, set_trainable, train_one_epoch,
                         evaluate)
from train.metrics import curves, evaluate_predictions
from train.pretrained import apply_pretrained, resolve_pretrained
from train.resume import (LAST_NAME, load_resume_state, save_resume_state, seed_everything,
                          set_deterministic, set_rng_state)

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


def _make_optimizer(model, config: TrainConfig, phase: str):
    import torch

    head, backbone = set_trainable(model, None if phase == "frozen" else config.unfreeze)
    groups = [{"params": head, "lr": config.lr}]
    if backbone:
        groups.append({"params": backbone, "lr": config.backbone_lr})
    # fused: one kernel over all tensors; on CPU ~5x less time per step than the default
    # per-tensor loop (ResNet50 has 161 parameter tensors), the same Adam update.
    opt = torch.optim.Adam(groups, weight_decay=config.weight_decay, fused=True)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=config.step_size, gamma=config.gamma)
    return opt, sched


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
    import torch

    from fracture_batch.model.checkpoint import create_model, save_checkpoint
    from train.report import write_outputs

    t_fit = time.perf_counter()
    run_dir = Path(config.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = load_resume_state(run_dir) if resume else None
    if not resume:
        if (run_dir / LAST_NAME).exists() or (run_dir / "model.pt").exists():
            raise FileExistsError(f"{run_dir} already holds a run; use --resume {run_dir} or another --out")
        config.save(run_dir / "config.json")
    prec = resolve_precision(config.device, config.amp, config.amp_dtype, config.channels_last)
    prev_det = set_deterministic(prec.device, config.deterministic)
    seed_everything(config.seed)
    try:
        weights = resolve_pretrained(config.pretrained if state is None else "none", config.arch)
        pretrained_source = state["pretrained"] if state else weights.source
        base_spec = ModelSpec(arch=config.arch, input_size=config.image_size,
                              resize_mode=config.resize_mode, pretrained=pretrained_source,
                              positive_class=config.positive_class, versions=_versions())
        bad: dict[str, str] = dict(state["bad_files"]) if state else {}

        def on_bad(msgs: list[str]) -> None:
            for m in msgs:
                key = m.split(":", 1)[0]
                if key not in bad:
                    log.warning("skipping unreadable file %s", m)
                    bad[key] = m

        data = prepare_data(config, base_spec, bad)
        base_spec = base_spec.replace(class_names=data.class_names, data_fingerprint=data.fingerprint)
        if state and state["data_fingerprint"] != data.fingerprint:
            raise ValueError(f"the data in {config.data_dir} changed since this run started; cannot resume")
        weights_c = class_weights(data.counts["train"])
        _announce(config, prec, pretrained_source, data, weights_c)

        model = create_model(config.arch, len(data.class_names))
        apply_pretrained(model, weights)
        model.to(prec.device)
        if prec.channels_last:
            model.to(memory_format=torch.channels_last)
        if state:
            model.load_state_dict(state["model"])
        use_w = config.imbalance is Imbalance.WEIGHTED_LOSS
        criterion = torch.nn.CrossEntropyLoss(
            weight=torch.tensor(weights_c, device=prec.device) if use_w else None)
        eval_criterion = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights_c) if use_w else None)
        sampler_w = None
        if config.imbalance is Imbalance.SAMPLER:
            sampler_w = [weights_c[s.label] for s in data.samples["train"]]
        eval_loaders = {s: D.create_loader(data.datasets[s], batch_size=config.batch_size, shuffle=False,
                                           seed=config.seed, num_workers=config.num_workers)
                        for s in ("val", "test")}

        history: list[dict[str, Any]] = list(state["history"]) if state else []
        phase_results: dict[str, Any] = dict(state["phase_results"]) if state else {}
        timings: list[dict[str, Any]] = list(state.get("timings", [])) if state else []
        dali_loader = None
        if config.loader is Loader.DALI:
            from train.dali_loader import DaliTrainLoader

            # Built once: DALI owns shuffling and augmentation (seeded, but a resumed run
            # is not bit-identical to an uninterrupted one, unlike the torch loader).
            dali_loader = DaliTrainLoader(data.samples["train"], data.datasets["train"].spec,
                                          batch_size=config.batch_size, seed=config.seed,
                                          num_threads=max(1, config.num_workers), device=prec.device)
        global_epoch = 0
        budget_s = config.max_minutes * 60.0
        for phase, n_epochs in _phase_epochs(config):
            if phase in phase_results:
                global_epoch += n_epochs
                continue
            optimizer, scheduler = _make_optimizer(model, config, phase)
            scaler = torch.amp.GradScaler("cuda") if prec.needs_scaler else None
            stopper = EarlyStopping(config.patience, config.min_delta)
            start = 0
            if state and state["phase"] == phase:
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
                if scaler is not None and state.get("scaler"):
                    scaler.load_state_dict(state["scaler"])
                stopper = EarlyStopping.from_state_dict(state["early_stopping"])
                start = state["epoch"] + 1
                set_rng_state(state["rng"])
                log.info("resuming phase %s at epoch %d/%d", phase, start + 1, n_epochs)
            stopped = state is not None and state["phase"] == phase and state["stopped"]
            stopped_by = "early_stopping" if stopped else ""
            for epoch in range(start, n_epochs):
                if stopped:
                    break
                if budget_s and timings and (time.perf_counter() - t_fit + _last_epoch_s(timings, phase)
                                             > budget_s):
                    log.warning("time budget of %.1f min reached: %s phase ends after %d epochs",
                                config.max_minutes, phase, epoch)
                    stopped_by = "time_budget"
                    break
                ep_seed = config.seed * 100_003 + global_epoch + epoch
                torch.manual_seed(ep_seed)  # main-process augmentation when num_workers=0
                loader = dali_loader or D.create_loader(
                    data.datasets["train"], batch_size=config.batch_size, shuffle=True, seed=ep_seed,
                    num_workers=config.num_workers, sampler_weights=sampler_w,
                    drop_last=len(data.samples["train"]) > config.batch_size)
                t0, c0 = time.perf_counter(), _cpu_seconds()
                tr = train_one_epoch(model, loader, criterion, optimizer, prec, scaler=scaler,
                                     freeze_bn_stats=config.freeze_bn_stats,
                                     on_bad=on_bad, progress=config.progress,
                                     desc=f"{phase} {epoch + 1}/{n_epochs}")
                t1 = time.perf_counter()
                va = evaluate(model, eval_loaders["val"], eval_criterion, prec, on_bad=on_bad,
                              progress=config.progress, desc="val")
                t2, c2 = time.perf_counter(), _cpu_seconds()
                scheduler.step()
                stopped = stopper.step(va["loss"], epoch, model)
                stopped_by = "early_stopping" if stopped else ""
                history.append({"phase": phase, "epoch": epoch + 1, "train_loss": tr["loss"],
                                "train_accuracy": tr["accuracy"], "val_loss": va["loss"],
                                "val_accuracy": va["accuracy"], "lr": [g["lr"] for g in optimizer.param_groups]})
                timings.append({"phase": phase, "epoch": epoch + 1, "train_s": t1 - t0, "val_s": t2 - t1,
                                "cpu_s": c2 - c0,  # this process + its reaped workers: load-independent
                                "train_images_per_s": tr["n"] / max(t1 - t0, 1e-9)})
                log.info("%s epoch %d/%d: train loss %.4f acc %.3f | val loss %.4f acc %.3f | %.1f img/s%s",
                         phase, epoch + 1, n_epochs, tr["loss"], tr["accuracy"], va["loss"],
                         va["accuracy"], timings[-1]["train_images_per_s"],
                         " | early stop" if stopped else "")
                save_resume_state(run_dir, {
                    "phase": phase, "epoch": epoch, "stopped": stopped, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else {},
                    "early_stopping": stopper.state_dict(), "history": history, "timings": timings,
                    "phase_results": phase_results, "bad_files": bad, "pretrained": pretrained_source,
                    "data_fingerprint": data.fingerprint})
                if on_epoch_end is not None:
                    on_epoch_end(phase, epoch)
            stopper.restore_best(model)
            phase_results[phase] = evaluate_phase(model, data, eval_loaders, eval_criterion, prec, config, on_bad)
            phase_results[phase]["best_epoch"] = stopper.best_epoch + 1
            phase_results[phase]["epochs_run"] = sum(1 for h in history if h["phase"] == phase)
            phase_results[phase]["stopped_by"] = stopped_by or "epochs"
            global_epoch += n_epochs
            state = None

        final = phase_results[_phase_epochs(config)[-1][0]]
        method = ThresholdMethod(config.threshold_rule)
        spec = base_spec.replace(threshold=final["threshold"], threshold_method=method,
                                 threshold_detail=final["threshold_detail"],
                                 temperature=final["temperature"])
        model.to("cpu").to(memory_format=torch.contiguous_format)
        spec = save_checkpoint(run_dir / "model.pt", model, spec)
        metrics = {
            "config": {k: v for k, v in config.to_dict().items() if k not in ("out_dir", "progress")},
            "spec": spec.to_dict(), "class_counts": data.counts,
            "imbalance": config.imbalance.value, "class_weights": weights_c if use_w else None,
            "precision_mode": prec.amp_dtype or "float32", "device": prec.device,
            "skipped_files": sorted(bad.values()), "history": history,
            "phases": {p: {k: v for k, v in r.items() if k not in ("curves", "test_predictions")}
                       for p, r in phase_results.items()},
        }
        report = write_outputs(run_dir, metrics, phase_results, timings)
        (run_dir / LAST_NAME).unlink(missing_ok=True)  # done: the optimizer state is not needed
        return TrainResult(run_dir, run_dir / "model.pt", spec, metrics, report)
    finally:
        import torch as _t

        _t.use_deterministic_algorithms(prev_det)


def _last_epoch_s(timings: list[dict[str, Any]], phase: str) -> float:
    """Duration of the last epoch of ``phase`` (or of any phase: a lower bound)."""
    same = [t for t in timings if t["phase"] == phase] or timings
    return same[-1]["train_s"] + same[-1]["val_s"]


def _cpu_seconds() -> float:
    import os

    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


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
