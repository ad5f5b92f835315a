"""onnxruntime backend: CPU EP everywhere; TensorRT EP and CUDA EP where onnxruntime-gpu is installed.

Precision lives in the ONNX graph (fp32/fp16/int8 Q/DQ files from export), so the
backend takes no precision flag; it casts the input to the graph's input type.
"""
from __future__ import annotations

import functools
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


# The GPU build of onnxruntime is not part of the `gpu` extra (pyproject.toml, README "GPU
# install"): it replaces the core onnxruntime in an environment of its own.
ORT_GPU_HINT = ("onnxruntime's CUDA provider needs the onnxruntime-gpu build in place of onnxruntime "
                "(README, GPU install: a separate environment); or score the TensorRT engine / the .pt on the GPU")


def _probe_model() -> bytes:
    """A one-node float model (a few hundred bytes): enough to make onnxruntime load a provider."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _load_cuda_libraries() -> None:
    """onnxruntime-gpu dlopens libcublas/libcudnn by soname; the CUDA 13 wheels keep them in
    nvidia/cu13/lib, where its own ``preload_dlls()`` (1.31) does not look. Importing torch
    (cu130, same CUDA major) loads them into the process first, as onnxruntime's docs advise."""
    try:
        import torch  # noqa: F401
    except ImportError:
        pass


@functools.lru_cache(maxsize=None)
def provider_status(provider: str, device_id: int = 0) -> tuple[bool, str]:
    """(onnxruntime can *load* ``provider`` on ``device_id``, why not). ``get_available_providers``
    lists the providers compiled in, not the loadable ones: the CUDA provider of a GPU wheel
    is listed on a machine without the driver, CUDA 13 libraries or GPU, and a session asked
    for it silently runs on the CPU. So start a session on a tiny model and look."""
    import onnxruntime as ort

    if provider not in ort.get_available_providers():
        return False, f"this onnxruntime build ({ort.__version__}) has no {provider}"
    _load_cuda_libraries()
    so = ort.SessionOptions()
    so.log_severity_level = 3  # the reason is returned once, here, not as onnxruntime's error spew
    try:
        sess = ort.InferenceSession(_probe_model(), sess_options=so,
                                    providers=[(provider, {"device_id": str(device_id)}), "CPUExecutionProvider"])
    except Exception as exc:
        return False, f"{provider} failed to start: {str(exc).strip().splitlines()[0][:300]}"
    if sess.get_providers()[0] != provider:
        return False, (f"{provider} is compiled into onnxruntime {ort.__version__} but did not load "
                       "(no NVIDIA driver/GPU, or its CUDA/cuDNN/TensorRT libraries are missing or for another version)")
    return True, f"{provider} loads on device {device_id}"


def has_cuda_provider(device_id: int = 0) -> bool:
    return provider_status("CUDAExecutionProvider", device_id)[0]


def graph_input(path: str | Path) -> tuple[str, list]:
    """(name, dims) of the model's first input, read without loading weights."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inp = model.graph.input[0]
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in inp.type.tensor_type.shape.dim]
    return inp.name, dims


def tensorrt_profile(input_name: str, input_size: int, batch_size: int) -> dict[str, str]:
    """The TensorRT EP's explicit shape profile: batch 1 .. the runner's batch, tuned for it.
    Without it the EP builds an engine for the first shape it sees and rebuilds when the last,
    partial batch of a run arrives (minutes for ResNet50 int8, mid-run)."""
    def shape(b: int) -> str:
        return f"{input_name}:{b}x3x{input_size}x{input_size}"

    return {"trt_profile_min_shapes": shape(1), "trt_profile_opt_shapes": shape(batch_size),
            "trt_profile_max_shapes": shape(batch_size)}


def resolve_providers(device: DeviceKind, options: BackendOptions, *, profile: dict[str, str] | None = None,
                      status=provider_status) -> list:
    """Providers in preference order for the device; CPU always last as the fallback.

    On CUDA: the TensorRT EP when it loads (with ``profile``), then the CUDA EP (which must
    load: the caller checked, BackendError otherwise), both on ``options.device_id``."""
    providers: list = []
    if device is DeviceKind.CUDA:
        ok, why = status("CUDAExecutionProvider", options.device_id)
        if not ok:
            raise BackendError(f"--device cuda: {why}; {ORT_GPU_HINT}, or use --device cpu")
        trt_ok, trt_why = status("TensorrtExecutionProvider", options.device_id)
        if trt_ok:
            trt = {"device_id": options.device_id, "trt_timing_cache_enable": True, **(profile or {})}
            if options.engine_cache_dir:
                # Engines are built once per model/GPU and reused on the next run.
                os.makedirs(options.engine_cache_dir, exist_ok=True)
                trt.update(
                    trt_engine_cache_enable=True,
                    trt_engine_cache_path=options.engine_cache_dir,
                    trt_timing_cache_path=options.engine_cache_dir,
                )
            providers.append(("TensorrtExecutionProvider", trt))
        else:
            log.info("onnxruntime TensorRT EP not used: %s", trt_why)
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
        profile = None
        if device is DeviceKind.CUDA:
            name, dims = graph_input(path)
            if dims and not isinstance(dims[0], int):  # dynamic batch: pin the profile to the runner's
                size = dims[-1] if isinstance(dims[-1], int) else 224
                profile = tensorrt_profile(name, size, options.batch_size)
        providers = resolve_providers(device, options, profile=profile)
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
        if used[0] == "TensorrtExecutionProvider" and self.max_batch is None:
            self.max_batch = options.batch_size  # the profile's max: larger batches are chunked
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
