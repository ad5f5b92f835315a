"""The model files a benchmark runs: an export directory, or ones made for the run.

``--model`` may be an export directory (``model.onnx``, ``model.fp16.onnx``,
``model.int8.onnx``, ``model.int8.trt.onnx``, optionally ``model.pt``) or a checkpoint.
Without it the bench builds a randomly initialised model of the chosen arch (speed does
not depend on the weights' values) and exports it itself: fp32 with the torch exporter,
int8 with export's own quantiser (uint8-activation Q/DQ) calibrated on a few synthetic
radiograph-like inputs. Files made here carry the model spec in their metadata like
export's, so the real backends load them unchanged.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fracture_batch.model.spec import ModelSpec

log = logging.getLogger(__name__)

ONNX_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx",
              "int8.trt": "model.int8.trt.onnx"}


@dataclass(frozen=True)
class ModelArtifacts:
    spec: ModelSpec
    checkpoint: Path | None
    onnx: dict[str, Path] = field(default_factory=dict)  # variant -> file
    source: str = ""


def flops_per_image(arch: str, input_size: int, num_classes: int = 2) -> float:
    """FLOPs (2 x MAC of convs and matmuls) for one image, counted by torch."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from fracture_batch.model.checkpoint import create_model

    model = create_model(arch, num_classes).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, input_size, input_size))
    return float(counter.get_total_flops())


def resolve_artifacts(model: str | Path | None, workdir: Path, *, arch: str = "resnet50",
                      input_size: int = 224, int8: bool = True, via_export: bool = False) -> ModelArtifacts:
    """``via_export``: make the files with the project's own ``export.api.export_model``
    (the same fp32/fp16/int8/int8.trt files users get; ~1 min for ResNet50) instead of
    the bench's quick exporter; falls back to the latter if export fails."""
    workdir.mkdir(parents=True, exist_ok=True)
    if model is None and (workdir / "model.pt").is_file() and (workdir / ONNX_FILES["fp32"]).is_file():
        cached = _from_dir(workdir)  # made by an earlier run with the same arch/size
        if cached.spec.arch == arch and cached.spec.input_size == input_size:
            return ModelArtifacts(cached.spec, cached.checkpoint, cached.onnx, f"random-weight {arch} at "
                                  f"{input_size} px (cached in {workdir})")
    if model is not None:
        model = Path(model)
        if model.is_dir():
            return _from_dir(model)
        if model.suffix == ".onnx":
            from fracture_batch.model.onnx_meta import read_spec_from_onnx

            return ModelArtifacts(read_spec_from_onnx(model), None, {"fp32": model}, f"given file {model}")
        from fracture_batch.model.checkpoint import load_checkpoint

        torch_model, spec = load_checkpoint(model)
        source = f"checkpoint {model}, exported by the bench"
        ckpt = model
    else:
        from fracture_batch.model.checkpoint import create_model, save_checkpoint

        spec = ModelSpec(arch=arch, input_size=input_size)
        torch_model = create_model(arch, spec.num_classes).eval()
        ckpt = workdir / "model.pt"
        spec = save_checkpoint(ckpt, torch_model, spec)
        source = f"random-weight {arch} at {input_size} px, exported by the bench"
    if via_export:
        try:
            return _via_export(ckpt, workdir, source)
        except Exception as exc:  # the bench still runs; the report says which exporter made the files
            log.warning("export.api.export_model failed (%s); using the bench's quick exporter", exc)
    onnx_files = {"fp32": _export_fp32(torch_model, spec, workdir / ONNX_FILES["fp32"])}
    if int8:
        onnx_files["int8"] = _quantize_int8(onnx_files["fp32"], spec, workdir / ONNX_FILES["int8"])
    return ModelArtifacts(spec, ckpt, onnx_files, source)


def export_with_project_exporter(ckpt: Path, out_dir: Path, calib_dir: Path) -> dict[str, Path]:
    """fp32/fp16/int8/int8.trt files written by ``export.api.export_model``.

    Random weights may miss export's int8 agreement bar: export then raises with the
    files already written (the error carries its report), and their speed is still what
    a benchmark measures, so that case is logged and the files are used."""
    from export.api import export_model
    from export.config import ExportConfig, Precision

    try:
        export_model(ExportConfig(checkpoint=ckpt, out_dir=out_dir, calib_dir=calib_dir, calib_n=16, parity_n=16,
                                  precisions=(Precision.FP32, Precision.FP16, Precision.INT8)))
    except Exception as exc:
        if getattr(exc, "report", None) is None:
            raise
        log.warning("export parity bars missed (%s); using the written files", exc)
    return _from_dir(out_dir).onnx


def _via_export(ckpt: Path, workdir: Path, source: str) -> ModelArtifacts:
    from fracture_batch.synth.corpus import make_regime_corpus

    calib = workdir / "calib"
    make_regime_corpus(calib, "small", 16, seed=7)
    files = export_with_project_exporter(ckpt, workdir, calib)
    spec = _from_dir(workdir).spec
    return ModelArtifacts(spec, ckpt, files, source.replace("exported by the bench", "exported by fracture-batch export"))


def _from_dir(d: Path) -> ModelArtifacts:
    from fracture_batch.model.onnx_meta import read_spec_from_onnx

    files = {v: d / name for v, name in ONNX_FILES.items() if (d / name).is_file()}
    if "fp32" not in files and not (d / "model.pt").is_file():
        raise FileNotFoundError(f"{d} has neither model.onnx nor model.pt (run `fracture-batch export`)")
    ckpt = d / "model.pt" if (d / "model.pt").is_file() else _checkpoint_from_report(d)
    if files:
        spec = read_spec_from_onnx(next(iter(files.values())))
    else:
        from fracture_batch.model.checkpoint import load_checkpoint

        spec = load_checkpoint(ckpt)[1]
    return ModelArtifacts(spec, ckpt, files, f"export directory {d}")


def _checkpoint_from_report(d: Path) -> Path | None:
    """The checkpoint an export directory was made from (``export_report.json``), for
    the torch backend's rows."""
    import json

    try:
        ckpt = Path(json.loads((d / "export_report.json").read_text())["checkpoint"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return ckpt if ckpt.is_file() else None


def _stamp(path: Path, spec: ModelSpec, variant: str) -> None:
    from export.onnx_export import stamp_and_check  # the same metadata export writes

    stamp_and_check(path, spec, variant)


def _export_fp32(torch_model, spec: ModelSpec, path: Path) -> Path:
    import torch

    x = torch.zeros(2, 3, spec.input_size, spec.input_size)
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter (deprecated, still shipped): ~3 s for ResNet50 where the
        # torch.export-based one export uses takes ~20 s; the graph is the same convs,
        # and BatchNorm is folded by onnxruntime at session creation either way. Real
        # models come from `fracture-batch export` (pass its directory as --model).
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(torch_model.eval(), (x,), str(path), input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=17, dynamo=False)
    _stamp(path, spec, "fp32")
    return path


def _calib_inputs(spec: ModelSpec, n: int = 8) -> np.ndarray:
    """A few radiograph-like inputs (smooth gray ramps + noise, normalised by the spec)."""
    from fracture_batch.model.preprocess import normalize_gray

    rng = np.random.default_rng(0)
    s = spec.input_size
    ramp = np.linspace(0, 1, s, dtype=np.float32)[None, :] * np.ones((s, 1), np.float32)
    return np.stack([normalize_gray(np.clip(ramp * rng.uniform(0.3, 1) + rng.normal(0, 0.1, (s, s)), 0, 1)
                                    .astype(np.float32), spec) for _ in range(n)]).astype(np.float32)


def _quantize_int8(fp32: Path, spec: ModelSpec, path: Path) -> Path:
    """export's quantiser (same Q/DQ form as ``model.int8.onnx``) on synthetic inputs:
    the speed of a Q/DQ graph does not depend on its calibrated ranges."""
    from export.quantize import Int8Flavour, pre_process, quantize_int8

    pre = path.with_name("model.preprocessed.onnx")
    pre_process(fp32, pre)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs one line per tensor on the root logger
    try:
        quantize_int8(pre, path, _calib_inputs(spec), Int8Flavour.ORT, spec=spec)
    finally:
        root.setLevel(level)
    pre.unlink(missing_ok=True)
    _stamp(path, spec, "int8")
    return path
