"""What the machine gives this process: its cores, and whether an error means it ran out of memory."""

from __future__ import annotations

import os

import torch
from lightning.pytorch.utilities.memory import is_oom_error


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which SLURM and containers narrow), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def is_out_of_memory(exc: BaseException) -> bool:
    """An out-of-memory error that a smaller batch may avoid; anything else is not ours to retry.

    Lightning's ``is_oom_error`` (CUDA's message, cuDNN's ``NOT_SUPPORTED`` on oversized inputs, the CPU allocator's
    failure) plus torch's own ``OutOfMemoryError`` type, which other accelerators (MPS, XPU) raise with their own
    wording.
    """
    return isinstance(exc, torch.OutOfMemoryError) or is_oom_error(exc)
