"""Prediction columns on their way from a GPU to the host, copied without waiting for the GPU.

``predict_step`` returns tensors still on the device; waiting for them there would idle the GPU at every batch.
Here each one starts copying into pinned host memory behind the kernels that make it, and a CUDA event per device
marks when the copies have landed: the writer reads them one batch later, while the GPU runs the next batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def on_a_gpu(columns: Mapping[str, Any]) -> bool:
    return any(isinstance(c, torch.Tensor) and c.device.type == "cuda" for c in columns.values())


class HostCopies:
    """Starts the copies of the CUDA tensors among ``columns``; :meth:`wait` returns every column as numpy."""

    def __init__(self, columns: Mapping[str, Any]) -> None:
        self._columns = dict(columns)
        self._copied: set[str] = set()
        self._events: list[torch.cuda.Event] = []
        devices = set()
        for name, column in self._columns.items():
            if isinstance(column, torch.Tensor) and column.device.type == "cuda":
                host = torch.empty(column.shape, dtype=column.dtype, pin_memory=True)
                host.copy_(column.detach(), non_blocking=True)  # queued behind the kernels that make the column
                self._columns[name] = host
                self._copied.add(name)
                devices.add(column.device)
        for device in devices:
            with torch.cuda.device(device):
                event = torch.cuda.Event()
                event.record()
                self._events.append(event)

    def wait(self) -> dict[str, Any]:
        """Wait for the copies and return the columns as numpy arrays (non-tensor columns as they are)."""
        for event in self._events:
            event.synchronize()
        return {name: host_array(column, own=name in self._copied) for name, column in self._columns.items()}


def host_array(column: Any, own: bool = False) -> Any:
    """A column as numpy. A tensor this module did not copy itself (``own``) is copied: it may share memory with
    a buffer that the next batch overwrites (a CPU net returning a view of its reused input)."""
    if not isinstance(column, torch.Tensor):
        return column
    array = column.detach().cpu().numpy()
    return array if own else array.copy()
