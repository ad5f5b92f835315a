"""TensorRT bindings and CUDA stream hand-over, on CPU with fakes for TensorRT's context and
CUDA's streams/events: the 256-byte alignment rule, set_tensor_address results, chunking
past the engine's max batch, every enqueue on the engine's own stream, the event wait and
record_stream of a device tensor handed over, the engine profile's opt batch."""
from __future__ import annotations

import contextlib
import types

import numpy as np
import pytest
import torch

from fracture_batch.backends import cuda_streams
from fracture_batch.backends import tensorrt_engine as te


class FakeContext:
    """The calls TensorRTEngine makes on an IExecutionContext, with TensorRT's return values."""

    def __init__(self, max_batch=4, refuse=()):
        self.max_batch, self.refuse = max_batch, set(refuse)
        self.shape, self.bound, self.calls = None, {}, []

    def set_input_shape(self, name, shape):
        self.shape = shape
        return 1 <= shape[0] <= self.max_batch

    def get_tensor_shape(self, name):
        return (self.shape[0], 2)

    def set_tensor_address(self, name, ptr):
        self.bound[name] = ptr
        return name not in self.refuse

    def execute_async_v3(self, stream_handle):
        self.calls.append((stream_handle, dict(self.bound)))
        return True


def _engine(ctx, max_batch=4):
    e = object.__new__(te.TensorRTEngine)
    e._torch, e.device, e.max_batch, e.context = torch, torch.device("cpu"), max_batch, ctx
    e.stream = types.SimpleNamespace(cuda_stream=1234)
    e.input_name, e.output_name = "input", "logits"
    e._in_dtype = e._out_dtype = torch.float32
    e._on_stream = contextlib.nullcontext  # no CUDA here: the stream object is the fake above
    return e


def test_chunks_past_max_batch_are_bound_aligned_on_the_engine_stream():
    ctx = FakeContext()
    # 3*5*5*4 = 300 bytes per image: the chunk at image 4 starts 1200 bytes in, not a multiple of 256.
    x = np.arange(10 * 75, dtype=np.float32).reshape(10, 3, 5, 5)
    out = _engine(ctx).run(x)
    assert tuple(out.shape) == (10, 2)
    assert [c[0] for c in ctx.calls] == [1234, 1234, 1234]  # 4 + 4 + 2, all on the engine's stream
    assert all(p % te.TRT_ALIGNMENT == 0 for _, bound in ctx.calls for p in bound.values())


def test_aligned_copy_keeps_values_and_aligned_views_are_not_copied():
    t = torch.arange(2 * 75, dtype=torch.float32).reshape(2, 3, 5, 5)
    view = t[1:]  # 300 bytes in
    copy = te.as_aligned(torch, view)
    assert copy.data_ptr() % 256 == 0 and torch.equal(copy, view)
    a = te.aligned_empty(torch, (4, 3, 5, 5), torch.float32, "cpu")
    assert a.data_ptr() % 256 == 0 and te.as_aligned(torch, a) is a


def test_a_refused_or_misaligned_address_is_an_error():
    with pytest.raises(te.EngineRunError, match="refused the address for 'logits'"):
        _engine(FakeContext(refuse={"logits"})).run(np.zeros((2, 3, 5, 5), np.float32))
    with pytest.raises(te.EngineRunError, match="not 256-byte aligned"):
        te.bind(FakeContext(), "input", 1200)


def test_a_shape_outside_the_profile_is_an_error():
    e = _engine(FakeContext(max_batch=2), max_batch=4)  # engine claims 4, profile takes 2
    with pytest.raises(te.EngineRunError, match="outside the engine's profile"):
        e.run(np.zeros((3, 3, 5, 5), np.float32))


def test_chunk_bounds():
    assert te.chunk_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert te.chunk_bounds(3, 32) == [(0, 3)]
    with pytest.raises(ValueError):
        te.chunk_bounds(3, 0)


class FakeStream:
    def __init__(self):
        self.waited = []

    def wait_event(self, ev):
        self.waited.append(ev)


class FakeTensor:
    def __init__(self):
        self.streams = []

    def record_stream(self, s):
        self.streams.append(s)


def test_hand_over_waits_once_per_event_and_keeps_memory_for_the_consumer():
    consumer, ev1, ev2 = FakeStream(), object(), object()
    tensors = [FakeTensor() for _ in range(3)]
    cuda_streams.adopt(consumer, tensors, [ev1, ev1, None, ev2])
    assert consumer.waited == [ev1, ev2]  # device-side waits; no host synchronisation
    assert all(t.streams == [consumer] for t in tensors)


def test_predictor_hands_device_slices_over_to_the_backend_stream(monkeypatch):
    """scoring.predictor._stack: adopt on the backend's stream, then stack inside it."""
    from fracture_batch.scoring import predictor

    seen = {}

    class Slice:
        is_cuda = True

    monkeypatch.setattr(cuda_streams, "on_stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(cuda_streams, "adopt", lambda s, t, r: seen.update(stream=s, n=len(t), ready=list(r)))
    monkeypatch.setattr(torch, "stack", lambda ts: ("stacked", len(ts)))
    stream, ev = object(), object()
    assert predictor._stack([Slice(), Slice()], [ev, ev], stream) == ("stacked", 2)
    assert seen == {"stream": stream, "n": 2, "ready": [ev, ev]}


def test_engine_profile_opt_batch_is_the_batch_the_runner_feeds():
    from export.tensorrt_build import BuildSettings, optimisation_batches

    assert optimisation_batches(32) == (1, 32, 32)  # scorer default --batch-size 32 = export --max-batch 32
    assert optimisation_batches(256, 32) == (1, 32, 256)
    with pytest.raises(ValueError):
        optimisation_batches(16, 32)
    assert BuildSettings().opt_batch is None and BuildSettings(device_id=1).device_id == 1


def test_export_config_checks_opt_batch(tmp_path):
    from export.config import ExportConfig

    with pytest.raises(ValueError, match="--opt-batch 64"):
        ExportConfig(checkpoint=tmp_path / "m.pt", out_dir=tmp_path, max_batch=32, opt_batch=64)
    assert ExportConfig(checkpoint=tmp_path / "m.pt", out_dir=tmp_path, device_id=2).device_id == 2
