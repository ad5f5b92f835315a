"""onnxruntime backend: CPU EP everywhere; TensorRT EP and CUDA EP where onnxruntime-gpu is installed.

Precision lives in the ONNX graph (fp32/fp16/int8 Q/DQ files from export), so the
backend takes no precision flag; it casts the input to the graph's input type.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from fracture_batch.backends.base import (
    BackendError,
    BackendKind,
    BackendOptions,
    DeviceKind,
    check_input,
    to_numpy,
)
from fracture_batch.model.spec import ModelSpec

log = logging.getLogger(__name__)

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def has_cuda_provider() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def resolve_providers(device: DeviceKind, options: BackendOptions) -> list:
    """Providers in preference order for the device; CPU always last as the fallback."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    providers: list = []
    if device is DeviceKind.CUDA:
        if "CUDAExecutionProvider" not in available:
            raise BackendError(
                "onnxruntime has no CUDA provider: install onnxruntime-gpu "
                "(pip install 'fracture-batch[gpu]') or use --device cpu"
            )
        if "TensorrtExecutionProvider" in available:
            trt = {"device_id": options.device_id, "trt_timing_cache_enable": True}
            if options.engine_cache_dir:
                # Engines are built once per model/GPU and reused on the next run.
                os.makedirs(options.engine_cache_dir, exist_ok=True)
                trt.update(
                    trt_engine_cache_enable=True,
                    trt_engine_cache_path=options.engine_cache_dir,
                    trt_timing_cache_path=options.engine_cache_dir,
                )
            providers.append(("TensorrtExecutionProvider", trt))
        providers.append(("CUDAExecutionProvider", {"device_id": options.device_id}))
    providers.append("CPUExecutionProvider")
    return providers


class OnnxRuntimeBackend:
    kind = BackendKind.ONNXRUNTIME

    def __init__(self, model_path: str | Path, device: DeviceKind, options: BackendOptions):
        import onnxruntime as ort

        path = Path(model_path)
        check_external_data(path)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.inter_op_num_threads = 1
        if options.intra_op_threads > 0:
            so.intra_op_num_threads = options.intra_op_threads
        # Decode threads share the cores: ORT's spin-waiting workers would steal their time.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = resolve_providers(device, options)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as exc:
            raise BackendError(f"onnxruntime cannot load {path}: {exc}") from None
        self.spec = _spec_from_session(self.session, path)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = _ORT_TYPES.get(inp.type, np.float32)
        self.output_name = self.session.get_outputs()[0].name
        batch_dim = inp.shape[0] if inp.shape else None
        self.max_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None
        self.device = device
        used = self.session.get_providers()
        if device is DeviceKind.CUDA and used[0] == "CPUExecutionProvider":
            raise BackendError("onnxruntime could not start a CUDA provider (no usable GPU?); use --device cpu")
        threads = options.intra_op_threads or "default"
        self.description = f"onnxruntime {ort.__version__} [{', '.join(used)}], intra-op threads {threads}"

    def predict(self, x: np.ndarray) -> np.ndarray:
        check_input(x, self.spec)
        feed = {self.input_name: to_numpy(x).astype(self.input_dtype, copy=False)}
        (logits,) = self.session.run([self.output_name], feed)
        return np.asarray(logits, dtype=np.float32)

    def close(self) -> None:
        self.session = None


def _spec_from_session(session, path: Path) -> ModelSpec:
    from fracture_batch.model.onnx_meta import OnnxModelError, spec_from_metadata

    try:
        return spec_from_metadata(session.get_modelmeta().custom_metadata_map, source=str(path))
    except OnnxModelError as exc:
        raise BackendError(str(exc)) from None


def check_external_data(path: Path) -> None:
    """Refuse external-data references that escape the model's directory (export's check)."""
    from fracture_batch.model.onnx_meta import check_external_data_safe

    try:
        check_external_data_safe(path)
    except Exception as exc:
        raise BackendError(f"refusing to load {path}: {exc}") from None
