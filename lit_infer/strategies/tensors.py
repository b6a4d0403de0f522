"""Moving, splitting and joining network outputs that may be tensors, tuples, lists or dicts of tensors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from lit_infer.modules.outputs import per_image


def move(value: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """``value`` on ``device``. A CUDA tensor copied to another device is first recorded on its own device's
    current stream (which the copy makes wait for it): its memory, freed once the caller drops it, is then not
    handed to the stream that made it (a replica's, a stage's) while the copy may still be reading it."""
    if isinstance(value, torch.Tensor):
        if value.is_cuda and value.device != torch.device(device):
            value.record_stream(torch.cuda.current_stream(value.device))
        return value.to(device, non_blocking=non_blocking)
    if isinstance(value, Mapping):
        return {k: move(v, device, non_blocking) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(move(v, device, non_blocking) for v in value)
    return value


def cat_outputs(parts: Sequence[Any], sizes: Sequence[int] | None = None) -> Any:
    """Join per-chunk outputs along the batch dimension, keeping their structure and order. With the chunks'
    ``sizes``, lists with one element per image (a detector's dicts) are joined end to end."""
    first = parts[0]
    if len(parts) == 1:
        return first
    if sizes is not None and any(per_image(p, n) for p, n in zip(parts, sizes, strict=True)):
        return [item for p in parts for item in p]
    if isinstance(first, torch.Tensor):
        return torch.cat(list(parts), dim=0)
    if isinstance(first, Mapping):
        return {k: cat_outputs([p[k] for p in parts]) for k in first}
    if isinstance(first, (list, tuple)):
        return type(first)(cat_outputs([p[i] for p in parts]) for i in range(len(first)))
    raise TypeError(f"cannot join network outputs of type {type(first).__name__} across devices")


def record_stream(value: Any, stream: torch.cuda.Stream) -> None:
    """Tell the CUDA allocator that ``stream`` uses these tensors, so their memory is not reused under it."""
    if isinstance(value, torch.Tensor):
        if value.is_cuda and value.device == stream.device:  # other devices' tensors are copied, not shared
            value.record_stream(stream)
    elif isinstance(value, Mapping):
        for v in value.values():
            record_stream(v, stream)
    elif isinstance(value, (list, tuple)):
        for v in value:
            record_stream(v, stream)


@contextlib.contextmanager
def on_stream(stream: torch.cuda.Stream | None) -> Iterator[None]:
    """Run on ``stream`` and its device; nothing to enter without one (a CPU)."""
    if stream is None:
        yield
    else:
        with torch.cuda.device(stream.device), torch.cuda.stream(stream):
            yield


def arrive(x: Any, device: torch.device, stream: torch.cuda.Stream | None, ready: Any) -> Any:
    """``x`` on ``device`` for work on ``stream`` (entered with :func:`on_stream`), once the event ``ready``, recorded
    where ``x`` was made, has passed. Non-blocking only towards a GPU: a non-blocking copy to the CPU may be read
    before it lands."""
    if stream is not None and ready is not None:
        stream.wait_event(ready)
    elif ready is not None:
        ready.synchronize()
    x = move(x, device, non_blocking=device.type == "cuda")
    if stream is not None:
        record_stream(x, stream)  # made on another stream (the caller's, the previous stage's), read on this one
    return x
