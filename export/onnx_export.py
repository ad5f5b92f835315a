"""torch -> ONNX with the torch.export-based exporter, plus metadata and checks.

Every file export writes has the same interface: input ``input`` (N, 3, S, S) float32
with a dynamic batch axis, output ``logits`` (N, num_classes) float32, the model spec
JSON in ``metadata_props``, weights inline (a ResNet50 is ~100 MB, far below protobuf's
2 GB limit, and a single file cannot lose its weights on a copy).
"""
from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

from fracture_batch import __version__
from fracture_batch.backends.base import file_sha256
from fracture_batch.model.onnx_meta import (
    MODEL_SHA256_METADATA_KEY,
    VARIANT_METADATA_KEY,
    read_spec_from_onnx,
)
from fracture_batch.model.spec import SPEC_METADATA_KEY, ModelSpec

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"

__all__ = ["export_onnx", "stamp_and_check", "read_spec_from_onnx", "file_sha256", "INPUT_NAME", "OUTPUT_NAME"]


def export_onnx(module, spec: ModelSpec, path: str | Path, *, opset: int, example_batch: int = 2):
    """Export an eval-mode module taking (N, 3, S, S) float32 to ``path`` (no metadata yet).

    Uses ``torch.onnx.export(dynamo=True)`` (the default exporter since torch 2.9): the
    batch axis is a named ``torch.export.Dim`` so the graph keeps it symbolic; the exporter's
    optimiser folds BatchNorm into Conv.
    """
    import onnx
    import torch

    example = torch.randn(example_batch, 3, spec.input_size, spec.input_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    # The exporter prints its progress to stdout and its graph passes log every rewrite at
    # INFO; keep both out of the CLI's summary (debug logging still shows them).
    chatter = io.StringIO()
    with torch.no_grad(), contextlib.redirect_stdout(chatter), _quiet_loggers("onnx_ir", "onnxscript"):
        program = torch.onnx.export(
            module.eval(),
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            verbose=False,
        )
    log.debug("torch.onnx: %s", chatter.getvalue())
    proto = program.model_proto
    onnx.save_model(proto, str(path), save_as_external_data=False)
    log.info("exported %s (opset %d)", path, opset)
    return Path(path)


@contextlib.contextmanager
def _quiet_loggers(*names: str):
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        if not log.isEnabledFor(logging.DEBUG):
            lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def stamp_and_check(path: str | Path, spec: ModelSpec, variant: str) -> None:
    """Write the spec and variant into ``metadata_props`` and run the full ONNX checker.

    Called on every file as the last step (quantisation tools do not keep metadata).
    """
    import onnx

    path = Path(path)
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    props.update(
        {
            SPEC_METADATA_KEY: spec.to_json(),
            VARIANT_METADATA_KEY: variant,
            MODEL_SHA256_METADATA_KEY: spec.weights_sha256,
            "fracture_batch.version": __version__,
        }
    )
    del model.metadata_props[:]
    for key in sorted(props):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, props[key]
    model.producer_name = "fracture-batch"
    model.producer_version = __version__
    model.doc_string = f"fracture-batch {spec.arch} {variant}: input {INPUT_NAME} (N,3,{spec.input_size},{spec.input_size}) -> {OUTPUT_NAME}"
    # full_check adds strict shape inference: catches a graph the exporter or a
    # quantiser left inconsistent before any runtime sees it.
    onnx.checker.check_model(model, full_check=True)
    _check_interface(model, spec)
    onnx.save_model(model, str(path), save_as_external_data=False)


def _check_interface(model, spec: ModelSpec) -> None:
    from onnx import TensorProto

    inputs, outputs = list(model.graph.input), list(model.graph.output)
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
        raise ValueError(f"unexpected graph I/O names: {[i.name for i in inputs]} -> {[o.name for o in outputs]}")
    for value in (inputs[0], outputs[0]):
        if value.type.tensor_type.elem_type != TensorProto.FLOAT:
            raise ValueError(f"{value.name} must be float32 (the runtime feeds and reads float32)")
    dims = inputs[0].type.tensor_type.shape.dim
    if not dims[0].dim_param or [d.dim_value for d in dims[1:]] != [3, spec.input_size, spec.input_size]:
        raise ValueError(f"input shape must be (batch, 3, {spec.input_size}, {spec.input_size}) with a symbolic batch")
