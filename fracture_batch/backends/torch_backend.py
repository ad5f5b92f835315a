"""torch backend: eager model from a checkpoint, channels_last, inference_mode, optional autocast.

``--amp``: bf16 autocast on CPU (fast where the CPU has AVX512-BF16/AMX, emulated and
slow elsewhere, hence opt-in), fp16 autocast on CUDA (``BackendOptions.amp_dtype`` picks
bf16 there). On CUDA everything runs on the backend's own stream (backends/cuda_streams.py):
the host-to-device copy, the model and the device-to-host copy, whose event the host waits
for; never the legacy default stream, never a whole-device synchronize.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fracture_batch.backends.base import BackendError, BackendKind, BackendOptions, DeviceKind, check_input


class TorchBackend:
    kind = BackendKind.TORCH
    max_batch = None

    def __init__(self, model_path: str | Path, device: DeviceKind, options: BackendOptions):
        import torch

        from fracture_batch.model.checkpoint import CheckpointError, load_checkpoint

        if device is DeviceKind.CUDA and not torch.cuda.is_available():
            raise BackendError("--device cuda but torch sees no CUDA GPU; use --device cpu")
        try:
            model, self.spec = load_checkpoint(model_path)
        except CheckpointError as exc:
            raise BackendError(str(exc)) from None
        if options.intra_op_threads > 0:
            torch.set_num_threads(options.intra_op_threads)
        self.torch = torch
        self.device = device
        self.torch_device = torch.device(f"cuda:{options.device_id}" if device is DeviceKind.CUDA else "cpu")
        self.model = model.to(self.torch_device).to(memory_format=torch.channels_last).eval()
        self.amp_dtype = None
        if options.amp:
            default = "fp16" if device is DeviceKind.CUDA else "bf16"
            self.amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[options.amp_dtype or default]
        self.stream = None
        if device is DeviceKind.CUDA:
            from fracture_batch.backends.cuda_streams import create_stream

            self.stream = create_stream(options.device_id)
            # The weights went over on the default stream, which torch's own streams do not wait
            # for: finish that copy once here, never in predict.
            torch.cuda.current_stream(self.torch_device).synchronize()
        amp = f", autocast {str(self.amp_dtype).replace('torch.', '')}" if self.amp_dtype else ", fp32"
        self.description = f"torch {torch.__version__} on {self.torch_device}{amp}, threads {torch.get_num_threads()}"

    def predict(self, x: np.ndarray) -> np.ndarray:
        check_input(x, self.spec)
        if self.stream is None:
            return self._forward(x).float().numpy()
        from fracture_batch.backends.cuda_streams import on_stream, to_host

        with on_stream(self.stream):
            out = self._forward(x).float()
        return to_host(self.stream, out)

    def _forward(self, x):
        torch = self.torch
        t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if self.stream is not None and t.device.type == "cpu":
            t = t.pin_memory()  # an async host-to-device copy needs page-locked memory
        t = t.to(self.torch_device, dtype=torch.float32, non_blocking=True)
        t = t.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if self.amp_dtype is not None:
                with torch.autocast(device_type=self.torch_device.type, dtype=self.amp_dtype):
                    return self.model(t)
            return self.model(t)

    def close(self) -> None:
        self.model = None
