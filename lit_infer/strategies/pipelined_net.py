"""The pipeline's executor: stages on devices, run as a wavefront over micro-batches.

Stage ``k`` has its own worker thread (and CUDA stream), so stage ``k`` works on micro-batch ``i`` while stage
``k + 1`` works on ``i - 1``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
import torch.nn as nn

from lit_infer.strategies.split import micro_batch_sizes
from lit_infer.strategies.tensors import arrive, cat_outputs, move, on_stream, record_stream


class PipelinedNet(nn.Module):
    """Stages on devices, run as a wavefront over micro-batches; outputs come back on the input's device."""

    def __init__(
        self,
        stages: Sequence[nn.Module],
        devices: Sequence[torch.device],
        micro_batches: int,
        context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.devices = list(devices)
        self.micro_batches = micro_batches
        self.context = context
        self.streams = [torch.cuda.Stream(d) if d.type == "cuda" else None for d in self.devices]
        # One thread per stage: FIFO per stage keeps the micro-batches in order at every stage.
        self.workers = [ThreadPoolExecutor(1, thread_name_prefix=f"lit_infer_stage{k}") for k in range(len(stages))]
        for stage, device in zip(self.stages, self.devices, strict=True):
            stage.to(device)

    def forward(self, x: torch.Tensor) -> Any:
        sizes = micro_batch_sizes(x.shape[0], self.micro_batches)
        ready = None
        if x.is_cuda:  # the input was made on this thread's stream; the first stage waits for it
            ready = torch.cuda.Event()
            ready.record(torch.cuda.current_stream(x.device))
        futures: list[Future] = []
        for chunk in x.split(sizes):
            future: Future | None = None
            for k in range(len(self.stages)):
                source = (chunk, ready) if future is None else future
                future = self.workers[k].submit(self._run_stage, k, source)
            assert future is not None
            futures.append(future)
        outputs = []
        for future in futures:
            out, event = future.result()
            if event is not None:
                event.synchronize()
            out = move(out, x.device)
            if x.is_cuda:  # made on the last stage's stream, read on this thread's
                record_stream(out, torch.cuda.current_stream(x.device))
            outputs.append(out)
        return cat_outputs(outputs, sizes)

    def _run_stage(self, k: int, source: tuple[Any, Any] | Future) -> tuple[Any, torch.cuda.Event | None]:
        x, event = source.result() if isinstance(source, Future) else source
        stream = self.streams[k]
        # Grad mode, inference mode and autocast are per thread: enter them again in this stage's thread.
        with torch.inference_mode(), self.context(), on_stream(stream):
            out = self.stages[k](arrive(x, self.devices[k], stream, event))
            done = None
            if stream is not None:
                done = torch.cuda.Event()
                done.record(stream)
        return out, done

    def close(self) -> None:
        for worker in self.workers:
            worker.shutdown(wait=True)
