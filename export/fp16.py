"""fp16 ONNX: fp16 weights and compute inside, float32 input and output at the edges.

Rather than rewriting an fp32 graph (onnxconverter-common is not a dependency, and
graph rewriting has to guess which ops are safe), the model itself is exported in
half precision inside a wrapper that casts at the boundary. The graph then holds
``Cast(float->half)`` after ``input`` and ``Cast(half->float)`` before ``logits``;
every Conv/Gemm between them is typed float16, which is what a strongly typed
TensorRT network builds as fp16 kernels.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path

from fracture_batch.model.spec import ModelSpec

from export.onnx_export import export_onnx

log = logging.getLogger(__name__)


def create_fp16_module(model):
    """A copy of ``model`` in half precision that takes and returns float32."""
    import torch

    class HalfWithFloatIO(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x.half()).float()

    return HalfWithFloatIO(copy.deepcopy(model).half().eval()).eval()


def export_fp16(model, spec: ModelSpec, path: str | Path, *, opset: int) -> Path:
    return export_onnx(create_fp16_module(model), spec, path, opset=opset)


def count_float16_ops(path: str | Path) -> tuple[int, int]:
    """(Conv/Gemm nodes whose weight is float16, all Conv/Gemm nodes): proves the compute is fp16."""
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(path))
    dtypes = {init.name: init.data_type for init in model.graph.initializer}
    heavy = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    half = sum(1 for n in heavy if len(n.input) > 1 and dtypes.get(n.input[1]) == TensorProto.FLOAT16)
    return half, len(heavy)
