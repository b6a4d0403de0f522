"""What the machine gives this process: its cores, when it started, whether an error means it ran out of memory, and
its process group's end before the interpreter's."""

from __future__ import annotations

import atexit
import os
import time

import torch
from lightning.pytorch.utilities.memory import is_oom_error

_IMPORTED_AT = time.time()
_run_started_at: float | None = None
_whole_process = False


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


def process_started_at() -> float:
    """The wall-clock time this process started (Linux: from ``/proc``), else when lit_infer was imported.

    The interpreter, torch and Lightning take seconds to import and set up before the first batch; a rate that
    leaves them out flatters short runs ("images/s over the whole command" counts from here).
    """
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()  # after the command name, which may hold spaces
        start_ticks = int(fields[19])  # field 22 of proc(5), counted from the state field (3)
        with open("/proc/stat", "rb") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        started = boot + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED_AT
    # btime has whole-second resolution and clocks can be stepped: never later than our own import.
    return min(started, _IMPORTED_AT)


def count_from_process_start() -> None:
    """The ``lit-infer`` command: its whole-command rate counts from the process's start, imports included."""
    global _whole_process
    _whole_process = True


def start_run_clock() -> None:
    """``lit_infer.predict`` called from Python: count from this call, not from the interpreter's start (a notebook
    may have run for hours before)."""
    global _run_started_at
    _run_started_at = time.time()


def command_started_at() -> float:
    """When "the whole command" began: the process's start for the CLI, else the ``lit_infer.predict`` call (the
    process's start when neither is known, as with a plain ``Trainer.predict``)."""
    if _whole_process or _run_started_at is None:
        return process_started_at()
    return _run_started_at


_leaving = False


def leave_process_group_at_exit() -> None:
    """Destroy the default process group at exit, before the interpreter finalizes (once per process; a no-op when
    no group is initialized then, or someone destroyed it already). A finished run has no collective in flight, so
    this returns at once; after a failure it waits as long as finalization would have, no longer."""
    global _leaving
    if not _leaving:
        _leaving = True
        atexit.register(_leave_process_group)


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
