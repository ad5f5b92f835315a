"""Reading what an ONNX file says about itself, safely, for the runtime.

``export`` writes the model spec into ``metadata_props``; the scorer reads it back
here (``fracture_batch`` never imports ``export``). Before a session is created the
runtime also checks that no tensor's external data points outside the model's own
folder: an ONNX file from another site must not make us read ``/etc/passwd`` or
``../../secrets`` as weights.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator, Mapping

from fracture_batch.model.spec import SPEC_METADATA_KEY, ModelSpec

log = logging.getLogger(__name__)

# Extra metadata keys written by export next to the spec (all plain strings).
VARIANT_METADATA_KEY = "fracture_batch.variant"  # fp32 | fp16 | int8 | int8.trt
MODEL_SHA256_METADATA_KEY = "fracture_batch.model_sha256"


class OnnxModelError(Exception):
    """An ONNX file the runtime must not or cannot use; the message says why."""


def _load_proto(path: str | Path):
    import onnx

    path = Path(path)
    if not path.is_file():
        raise OnnxModelError(f"ONNX model not found: {path}")
    try:
        # Never follow external data here: only the graph and its metadata are read.
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several unrelated types
        raise OnnxModelError(f"cannot read ONNX model {path}: {exc}") from None


def read_metadata(path: str | Path) -> dict[str, str]:
    """``metadata_props`` of an ONNX file as a dict."""
    return {p.key: p.value for p in _load_proto(path).metadata_props}


def spec_from_metadata(metadata: Mapping[str, str], *, source: str = "model") -> ModelSpec:
    """The spec from a metadata map (``onnx`` props, or an onnxruntime
    ``session.get_modelmeta().custom_metadata_map``)."""
    text = metadata.get(SPEC_METADATA_KEY)
    if text is None:
        raise OnnxModelError(
            f"{source} has no {SPEC_METADATA_KEY!r} metadata: it was not exported by "
            "fracture-batch. Re-export it with `fracture-batch export model.pt --out DIR`."
        )
    try:
        return ModelSpec.from_json(text)
    except Exception as exc:
        raise OnnxModelError(f"{source}: unreadable model spec metadata: {exc}") from None


def read_spec_from_onnx(path: str | Path) -> ModelSpec:
    return spec_from_metadata(read_metadata(path), source=str(path))


def _all_tensors(graph) -> Iterator:
    """Every TensorProto in a graph, including node attributes and subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for sub in attr.graphs:
                yield from _all_tensors(sub)


def check_external_data_safe(path: str | Path) -> list[Path]:
    """Raise ``OnnxModelError`` unless every external-data file of the model lies inside
    the model's own folder (after resolving ``..`` and symlinks) and exists.

    Returns the external files (empty for the usual single-file model).
    """
    from onnx import TensorProto

    path = Path(path)
    model = _load_proto(path)
    root = path.resolve().parent
    files: list[Path] = []
    tensors = list(_all_tensors(model.graph))
    for fn in model.functions:
        for node in fn.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    tensors.append(attr.t)
    for tensor in tensors:
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        entries = {e.key: e.value for e in tensor.external_data}
        location = entries.get("location", "")
        if not location:
            raise OnnxModelError(f"{path}: tensor {tensor.name!r} has external data without a location")
        if os.path.isabs(location) or Path(location).drive:
            raise OnnxModelError(
                f"{path}: tensor {tensor.name!r} points to an absolute external data path "
                f"{location!r}; only files inside the model's folder are allowed"
            )
        target = (root / location).resolve()
        if not target.is_relative_to(root):
            raise OnnxModelError(
                f"{path}: tensor {tensor.name!r} external data {location!r} resolves outside the "
                f"model's folder ({target}); refusing to load it"
            )
        if not target.is_file():
            raise OnnxModelError(f"{path}: external data file {location!r} for {tensor.name!r} is missing")
        if target not in files:
            files.append(target)
    return files
