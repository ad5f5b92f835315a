"""Unit tests of the training package that need no training run (seconds in total)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fracture_batch.decode import decode_file  # noqa: E402
from fracture_batch.model.checkpoint import create_model  # noqa: E402
from fracture_batch.model.preprocess import to_model_input  # noqa: E402
from fracture_batch.model.spec import ModelSpec  # noqa: E402
from support.train_helpers import make_dataset  # noqa: E402
from train import data as D  # noqa: E402
from train.calibration import choose_threshold, fit_temperature, nll  # noqa: E402
from train.config import (AmpDtype, DEMO_TRAIN_CONFIG, DeviceKind, LrSchedule, ThresholdMethod, TrainConfig,  # noqa: E402
                          Unfreeze, demo_train_config)
from train.loops import EarlyStopping, resolve_precision, set_trainable, train_mode  # noqa: E402
from train.metrics import binary_metrics, bootstrap_ci  # noqa: E402
from train.pretrained import PretrainedError, apply_pretrained, resolve_pretrained  # noqa: E402


# ---- config -------------------------------------------------------------------------
def test_config_round_trips_through_json(tmp_path):
    cfg = TrainConfig(data_dir=Path("/d"), out_dir=Path("/o"), unfreeze=Unfreeze.LAYER3_PLUS,
                      threshold_rule=ThresholdMethod.YOUDEN, amp_dtype=AmpDtype.BF16)
    cfg.save(tmp_path / "c.json")
    assert TrainConfig.load(tmp_path / "c.json") == cfg
    assert json.loads((tmp_path / "c.json").read_text())["unfreeze"] == "layer3+"


def test_config_rejects_nonsense():
    with pytest.raises(ValueError, match="epoch"):
        TrainConfig(data_dir=Path("."), out_dir=Path("."), frozen_epochs=0, epochs=0)
    with pytest.raises(ValueError, match="target_sensitivity"):
        TrainConfig(data_dir=Path("."), out_dir=Path("."), target_sensitivity=1.5)


def test_mode_strings_become_their_enums_so_the_chosen_branch_runs():
    # A plain string once reached `is LrSchedule.COSINE` and silently trained with StepLR.
    cfg = DEMO_TRAIN_CONFIG.replace(lr_schedule="cosine", unfreeze="layer4")
    assert cfg.lr_schedule is LrSchedule.COSINE and cfg.unfreeze is Unfreeze.LAYER4
    with pytest.raises(ValueError, match="LrSchedule"):
        DEMO_TRAIN_CONFIG.replace(lr_schedule="warmup")


def test_demo_config_is_resnet50_and_points_at_given_dirs():
    cfg = demo_train_config(Path("/data"), Path("/run"))
    assert cfg.arch == "resnet50" and cfg.data_dir == Path("/data") and cfg.out_dir == Path("/run")
    assert cfg.image_size == DEMO_TRAIN_CONFIG.image_size and cfg.amp and cfg.cache


# ---- calibration ----------------------------------------------------------------------
def test_temperature_recovers_overconfidence():
    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 1.5, 4000)
    labels = (rng.random(4000) < 1 / (1 + np.exp(-true_logit))).astype(int)
    # Logits 3x too large: the fitted T should be ~3 (tolerance 10%: 4000 samples).
    logits = np.stack([np.zeros_like(true_logit), 3 * true_logit], 1)
    t = fit_temperature(logits, labels)
    assert abs(t - 3.0) / 3.0 < 0.1
    assert nll(logits, labels, t) < nll(logits, labels, 1.0)


def test_threshold_for_target_sensitivity_is_the_highest_that_reaches_it():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(100), np.zeros(100)].astype(int)
    p = np.r_[rng.beta(5, 2, 100), rng.beta(2, 5, 100)]
    t, detail = choose_threshold(y, p, ThresholdMethod.TARGET_SENSITIVITY, 0.95)
    assert np.mean(p[y == 1] >= t) >= 0.95
    higher = np.sort(p[p > t])[0]  # the next candidate above t loses a positive
    assert np.mean(p[y == 1] >= higher) < 0.95
    assert "0.95" in detail
    ty, dy = choose_threshold(y, p, ThresholdMethod.YOUDEN)
    j = lambda th: np.mean(p[y == 1] >= th) - np.mean(p[y == 0] >= th)  # noqa: E731
    assert j(ty) >= max(j(th) for th in p) - 1e-12 and "Youden" in dy
    assert choose_threshold(y, p, ThresholdMethod.DEFAULT)[0] == 0.5


# ---- metrics ---------------------------------------------------------------------------
def test_metrics_match_sklearn_and_cis_are_seeded():
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 200)
    p = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    m = binary_metrics(y, p, 0.5)
    pred = (p >= 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    assert m["precision"] == pytest.approx(precision_score(y, pred))
    assert m["recall"] == m["sensitivity"] == pytest.approx(recall_score(y, pred))
    assert m["specificity"] == pytest.approx(recall_score(1 - y, 1 - pred))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    ci = bootstrap_ci(y, p, 0.5, n_boot=200, seed=3)
    assert ci == bootstrap_ci(y, p, 0.5, n_boot=200, seed=3)
    for k, (lo, hi) in ci.items():
        assert lo <= m[k] <= hi, k
    perfect = bootstrap_ci(y, y.astype(float), 0.5, n_boot=50, seed=0)
    assert perfect["accuracy"] == (1.0, 1.0)


# ---- data ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("d"), n_per_class={"train": 4, "val": 2, "test": 2},
                        sixteen_bit_every=3, corrupt=1)


def test_scan_counts_and_fingerprint(tiny_data, tmp_path):
    names = D.resolve_class_names(tiny_data, "fractured")
    assert names == ("fractured", "not_fractured")
    train = D.scan_split(tiny_data, "train", names)
    assert D.class_counts(train, names) == {"fractured": 5, "not_fractured": 4}  # +1 corrupt file
    fp = D.data_fingerprint({"train": train})
    f = tiny_data / "train" / "not_fractured" / "000.png"
    changed = [D.Sample(s.path, s.relpath, s.label, s.size + (s.path == f)) for s in train]
    assert D.data_fingerprint({"train": changed}) != fp
    with pytest.raises(ValueError, match="positive class"):
        D.resolve_class_names(tiny_data, "broken")


def test_eval_items_are_exactly_the_scorers_preprocessing(tiny_data):
    spec = ModelSpec(input_size=32)
    samples = D.scan_split(tiny_data, "val", spec.class_names)
    ds = D.XrayDataset(samples, spec, train=False)
    for i, s in enumerate(samples):
        x, label, idx = ds[i]
        ref = to_model_input(decode_file(s.path).pixels, spec)
        assert label == s.label and idx == i
        np.testing.assert_array_equal(x.numpy(), ref)  # same function, bit-identical
    D.fill_cache(ds, num_workers=0)
    np.testing.assert_allclose(ds[0][0].numpy(), to_model_input(decode_file(samples[0].path).pixels, spec),
                               atol=1e-6)  # cached resize + normalise: float rounding only


def test_train_items_are_augmented_and_bad_files_skipped(tiny_data):
    spec = ModelSpec(input_size=32)
    samples = D.scan_split(tiny_data, "train", spec.class_names)
    ds = D.XrayDataset(samples, spec, train=True)
    bad = [i for i, s in enumerate(samples) if s.path.name.startswith("broken")]
    assert len(bad) == 1
    x0, msg, _ = ds[bad[0]]
    assert x0 is None and "broken_0.png" in msg
    torch.manual_seed(0)
    good = [i for i in range(len(ds)) if i != bad[0]]
    a, b = ds[good[0]][0], ds[good[0]][0]
    assert a.shape == (3, 32, 32) and not torch.equal(a, b)  # random augmentation
    batch = D.collate_skip_bad([ds[i] for i in range(len(ds))])
    assert batch["x"].shape == (len(ds) - 1, 3, 32, 32) and len(batch["bad"]) == 1
    unreadable = D.fill_cache(ds, num_workers=0)
    assert len(unreadable) == 1 and ds[bad[0]][0] is None


# ---- pretrained ------------------------------------------------------------------------
def test_pretrained_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    none = resolve_pretrained("none", "resnet18")
    assert none.source == "none"
    scratch = create_model("resnet18", 2)
    apply_pretrained(scratch, none)  # from scratch: residual blocks start as the identity
    assert all(not b.bn2.weight.detach().any() for b in scratch.layer1)
    assert resolve_pretrained("auto", "resnet18").state_dict is None  # empty cache: random init
    with pytest.raises(PretrainedError, match="hub cache"):
        resolve_pretrained("imagenet", "resnet18")
    src = create_model("resnet18", 1000)
    ckpt = tmp_path / "torch_home" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save(src.state_dict(), ckpt)
    w = resolve_pretrained("auto", "resnet18")
    assert w.source == "imagenet:resnet18-f37072fd.pth"
    model = create_model("resnet18", 2)
    apply_pretrained(model, w)
    assert torch.equal(model.conv1.weight, src.conv1.weight)
    assert model.fc.out_features == 2  # head left fresh
    path = tmp_path / "radimagenet.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()}}, path)
    w2 = resolve_pretrained(str(path), "resnet18")
    assert w2.source.startswith("file:")
    model2 = create_model("resnet18", 2)
    apply_pretrained(model2, w2)
    assert torch.equal(model2.layer4[0].conv1.weight, src.layer4[0].conv1.weight)
    with pytest.raises(PretrainedError, match="different arch"):
        apply_pretrained(create_model("resnet50", 2), w2)


# ---- loops -----------------------------------------------------------------------------
def test_unfreeze_modes_and_frozen_batchnorm():
    model = create_model("resnet18", 2)
    head, backbone = set_trainable(model, None)
    assert len(head) == 2 and backbone == []
    train_mode(model)
    assert model.bn1.training  # default: frozen layers' BN statistics adapt (seed behaviour)
    train_mode(model, freeze_bn_stats=True)
    assert not model.bn1.training and model.fc.training  # frozen BN keeps its statistics
    _, l4 = set_trainable(model, Unfreeze.LAYER4)
    _, l34 = set_trainable(model, Unfreeze.LAYER3_PLUS)
    _, everything = set_trainable(model, Unfreeze.ALL)
    assert 0 < len(l4) < len(l34) < len(everything)
    assert len(everything) + 2 == len(list(model.parameters()))


def test_cpu_precision_is_bf16_autocast():
    prec = resolve_precision(DeviceKind.CPU, True, AmpDtype.AUTO, True)
    assert prec.amp_dtype == "bfloat16" and not prec.needs_scaler
    with prec.autocast():
        out = torch.nn.Linear(4, 2)(torch.randn(3, 4))
    assert out.dtype == torch.bfloat16
    assert resolve_precision(DeviceKind.CPU, False, AmpDtype.AUTO, False).amp_dtype is None
    with pytest.raises(ValueError, match="bf16"):
        resolve_precision(DeviceKind.CPU, True, AmpDtype.FP16, False)


def test_early_stopping_restores_best_weights():
    model = torch.nn.Linear(2, 1)
    es = EarlyStopping(patience=2)
    best = model.weight.detach().clone()
    assert not es.step(1.0, 0, model)
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not es.step(1.5, 1, model)
    assert es.step(1.2, 2, model)  # two epochs without improvement
    es.restore_best(model)
    assert torch.equal(model.weight, best) and es.best_epoch == 0
    assert EarlyStopping.from_state_dict(es.state_dict()).bad_epochs == 2


# ---- benchmark script ------------------------------------------------------------------
def test_bench_train_measures_one_precision_and_renders_table():
    from fracture_batch.bench.train_bench import markdown, one

    row = one("resnet18", 32, 4, "bf16", warmup=0, repeats=1, max_seconds=10, threads=None)
    assert row["autocast"] == "bfloat16" and row["images_per_s"] > 0 and row["repeats"] == 1
    row.update(train_gflop_per_image=0.1, achieved_gflops=1.0, speedup_vs_fp32=1.0)
    assert "| bf16 | resnet18 | 32 | 4 |" in markdown({"machine": {}, "rows": [row]})


def test_bench_train_splits_one_step_by_onednn_primitive():
    from fracture_batch.bench.train_bench import markdown, parse_onednn_verbose, primitives

    lines = ["onednn_verbose,v1,primitive,exec,cpu,convolution,brgconv_bwd_w:avx10_1_512_amx,backward_weights,"
             "src:bf16,alg:convolution_direct,mb32_ic512oc512,22.5",
             "onednn_verbose,v1,primitive,exec,cpu,convolution,brgconv_bwd_w:avx10_1_512_amx,backward_weights,x,1.5",
             "onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core,forward_training,x,2.0",
             "onednn_verbose,v1,primitive,create:cache_miss,cpu,convolution,jit,forward_training,x,9.0",
             "unrelated output"]
    g = parse_onednn_verbose(lines)
    assert g["convolution/backward_weights"] == {"ms": 24.0, "calls": 2, "impls": ["brgconv_bwd_w:avx10_1_512_amx"]}
    assert g["convolution/forward"]["ms"] == 2.0 and len(g) == 2  # the create line is not an execution
    # The real thing on a tiny model: oneDNN runs the convolutions, in every direction.
    p = primitives("resnet18", 32, 2, 1)
    assert {"convolution/forward", "convolution/backward_data", "convolution/backward_weights"} <= set(p["groups"])
    assert all(v["ms"] > 0 for v in p["groups"].values()) and p["step_s"] > 0
    assert "| after | 32 | 2 |" in markdown({"machine": {}, "rows": [], "primitives": [{"variant": "after", **p}]})


def test_no_augment_trains_on_the_scorers_preprocessing(tiny_data, tmp_path):
    from train.fit import prepare_data

    base = dict(data_dir=tiny_data, out_dir=tmp_path, num_workers=0, progress=False)
    on = prepare_data(TrainConfig(**base), ModelSpec(input_size=32), {})
    off = prepare_data(TrainConfig(**base, augment=False), ModelSpec(input_size=32), {})
    assert on.datasets["train"].train and not off.datasets["train"].train
    assert not on.datasets["val"].train and on.counts["val"] == {"fractured": 2, "not_fractured": 2}
