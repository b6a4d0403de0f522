"""Settings found by measuring: ``batch_size: auto`` and the split of CPU cores between the model and the decoders.

Both run once, in ``ImageDataModule.predict_dataloader()``: the network is on its device by then and no DataLoader
worker has started, so the measurements see an idle machine.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_info

from lit_infer.system import is_out_of_memory

GROWTH = 1.05
"""A doubled batch must raise images/s by at least this factor to be worth its memory."""


def search_batch_size(
    measure: Callable[[int], float],
    start: int = 16,
    limit: int = 2048,
    growth: float = GROWTH,
) -> int:
    """The largest batch that fits, doubling from ``start``; stops early when throughput stops growing.

    Args:
        measure: Runs one batch of the given size and returns images/s; raises an out-of-memory error when it does
            not fit.
        start: First batch size tried (also the answer when nothing larger fits).
        limit: Largest batch size tried.
        growth: Keep doubling only while images/s grows by at least this factor.

    Returns:
        The chosen batch size. When even ``start`` does not fit, the out-of-memory error propagates.
    """
    best, best_ips = start, measure(start)
    size = start * 2
    while size <= limit:
        try:
            ips = measure(size)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            break
        if ips < best_ips * growth:
            break
        best, best_ips = size, ips
        size *= 2
    return best


def find_batch_size(
    module: torch.nn.Module,
    crop_size: int,
    device: torch.device,
    forward_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    start: int = 16,
    limit: int | None = None,
) -> int:
    """``batch_size: auto`` for one process: times the module's ``preprocess``-shaped input through its network.

    Under DDP every rank searches on its own device and all take the smallest answer, so no rank runs out of memory.
    """
    limit = limit or (4096 if device.type == "cuda" else 512)
    net = getattr(module, "net", module)
    dtype = getattr(module, "input_dtype", torch.float32)
    memory_format = torch.channels_last if getattr(module, "use_channels_last", False) else torch.contiguous_format
    if getattr(module, "net_channels_last", False):
        # The layout the run will use (the module's on_predict_start sets it too, later): memory and speed differ.
        net.to(memory_format=torch.channels_last)

    def measure(n: int) -> float:
        x = torch.randn(n, 3, crop_size, crop_size, device=device, dtype=dtype).contiguous(memory_format=memory_format)
        try:
            with torch.inference_mode(), forward_context():
                net(x)  # warm-up: cudnn picks its algorithms, allocator grows
                _sync(device)
                begin = time.perf_counter()
                net(x)
                _sync(device)
            return n / (time.perf_counter() - begin)
        finally:
            del x
            if device.type == "cuda":
                torch.cuda.empty_cache()

    size = search_batch_size(measure, start=start, limit=limit)
    if dist.is_available() and dist.is_initialized():
        agreed = torch.tensor([size], device=device if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(agreed, op=dist.ReduceOp.MIN)
        size = int(agreed.item())
    rank_zero_info(f"lit-infer: batch_size auto -> {size}")
    return size


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main_threads(cores: int, workers: int, model_core_ms: float, decode_core_ms: float) -> int:
    """Intra-op threads for the process that runs the model on the CPU, next to ``workers`` decoding processes.

    When decoding an image costs more CPU than the model spends on it (data-bound), the model's threads would only
    fight the decoders for the same cores: a parallel op then waits for a thread the scheduler has parked behind a
    decoder, and every batch pays it. One thread is then faster overall. A compute-bound model keeps every core.

    Args:
        cores: Cores this process may use.
        workers: DataLoader worker processes (0: decoding in this process).
        model_core_ms: CPU milliseconds the network spends per image (one thread).
        decode_core_ms: CPU milliseconds decoding and resizing spend per image.
    """
    if workers == 0 or cores <= 1:
        return cores
    if decode_core_ms >= model_core_ms:
        return 1
    # Compute-bound: the decoders need decode/model of the cores; the rest is the model's.
    return max(1, min(cores, round(cores * model_core_ms / (model_core_ms + decode_core_ms))))


def cpu_costs(
    module: torch.nn.Module, crop_size: int, decode: Callable[[int], object], samples: Sequence[int]
) -> tuple[float, float]:
    """(model, decode) CPU milliseconds per image, measured single-threaded on a few real items."""
    net = getattr(module, "net", module)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = torch.randn(2, 3, crop_size, crop_size)
        with torch.inference_mode():
            net(x[:1])  # warm-up: one image keeps this cheap for a heavy network
            begin = time.thread_time()
            net(x)
            model_ms = (time.thread_time() - begin) * 1000 / len(x)
        if not samples:
            return model_ms, 0.0
        decode(samples[0])
        begin = time.thread_time()
        for i in samples:
            decode(i)
        decode_ms = (time.thread_time() - begin) * 1000 / max(1, len(samples))
    finally:
        torch.set_num_threads(threads)
    return model_ms, decode_ms
