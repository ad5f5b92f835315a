"""CUDA streams and the hand-over of device tensors between threads, as NVIDIA's samples do it.

Design (TensorRT's enqueueV3 docs: the legacy default stream makes TensorRT add
cudaDeviceSynchronize() calls; DALI's and torch's copies on it serialise with everything):
- every GPU worker owns one ``torch.cuda.Stream``: each DALI preprocessor (decode thread)
  and each inference backend (inference thread). Nothing runs on the default stream;
- a producer writes a device tensor on its own stream and records a ``torch.cuda.Event``
  there right after; the event travels with the tensor;
- the consumer makes *its* stream wait for that event (``stream.wait_event``: a device-side
  wait, the host does not block), marks the tensor as used on its stream
  (``record_stream``, so the caching allocator does not hand the memory back to the
  producer while the consumer still reads it) and only then reads it;
- the host waits for one stream's event only when it needs results on the host
  (``event.synchronize()`` after an async device-to-host copy); never ``torch.cuda.synchronize()``.
torch is imported lazily; every function takes the stream/event objects it works on, so the
logic runs with fakes in the CPU tests.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence


def create_stream(device_id: int = 0):
    import torch

    return torch.cuda.Stream(device=torch.device("cuda", device_id))


def record_ready(stream) -> Any:
    """An event recorded on ``stream`` now: 'everything enqueued so far is done'."""
    import torch

    event = torch.cuda.Event()
    event.record(stream)
    return event


def wait_ready(stream, events: Iterable[Any]) -> int:
    """Make ``stream`` wait (on the device) for each distinct event; -> how many."""
    seen: list[Any] = []
    for ev in events:
        if ev is not None and all(ev is not s for s in seen):
            stream.wait_event(ev)
            seen.append(ev)
    return len(seen)


def adopt(stream, tensors: Sequence[Any], events: Iterable[Any]) -> None:
    """Take device tensors made on another stream: wait for them, and keep their memory
    alive for ``stream`` (torch CUDA semantics: ``Tensor.record_stream``)."""
    wait_ready(stream, events)
    for t in tensors:
        t.record_stream(stream)


def on_stream(stream):
    """Context: make ``stream`` (and its device) current, so torch ops and allocations
    in the block are enqueued there and not on the legacy default stream."""
    import contextlib

    import torch

    stack = contextlib.ExitStack()
    stack.enter_context(torch.cuda.device(stream.device))
    stack.enter_context(torch.cuda.stream(stream))
    return stack


def to_host(stream, tensor):
    """A device tensor as a numpy array: async copy into page-locked memory on ``stream``,
    then wait for that stream's event only (NVIDIA samples: cudaMemcpyAsync D2H +
    stream sync), never the whole device."""
    import torch

    with on_stream(stream):
        host = torch.empty(tuple(tensor.shape), dtype=tensor.dtype, pin_memory=True)
        host.copy_(tensor, non_blocking=True)
        done = torch.cuda.Event()
        done.record(stream)
    done.synchronize()
    return host.numpy()
