"""The one core count and the one out-of-memory test."""

from __future__ import annotations

import os

import torch

from lit_infer.system import available_cores, is_out_of_memory


def test_available_cores_is_this_process_affinity() -> None:
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert available_cores() == expected >= 1


def test_out_of_memory_errors_of_every_device_and_nothing_else() -> None:
    assert is_out_of_memory(torch.OutOfMemoryError("MPS backend out of memory"))  # by type, any wording
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert is_out_of_memory(RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if ..."))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: can't allocate memory"))
    assert not is_out_of_memory(ValueError("out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
