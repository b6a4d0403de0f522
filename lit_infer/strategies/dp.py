"""Data parallel in one process: a replica of the module per device, made once, fed concurrently.

The strategy wraps, it does not replace: Lightning calls the module's own ``predict_step`` once per batch (a
subclass's override runs, and so do the out-of-memory split, device decoding and the metrics, as on one device).
Only the module's ``forward`` is spread: for the run it is swapped for one that cuts the input across the replicas,
runs each replica's own ``forward`` on its slice in its own thread (and CUDA stream), and joins the outputs in order
on the first device. ``nn.DataParallel`` copies the module to every device on every call; for inference the weights
never change, so here the replicas are made once, in ``setup``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import lightning as L
import torch
from typing_extensions import override

from lit_infer.strategies.devices import DeviceListStrategy
from lit_infer.strategies.split import micro_batch_sizes
from lit_infer.strategies.tensors import arrive, cat_outputs, move, on_stream, record_stream


class DataParallelStrategy(DeviceListStrategy):
    """One process, one replica of the module per device; each batch's forward is split across them, concurrently.

    ``predict_step``, ``preprocess`` and ``postprocess`` (and the metrics) run once per batch on the first device,
    as on one device; the ``forward`` of each replica runs on its slice of the preprocessed batch on its own device.

    Example::

        trainer = Trainer(strategy=DataParallelStrategy(devices=["cuda:0", "cuda:1"]))

    Args:
        devices: The devices, e.g. ``[cuda:0, cuda:1]``; a device may repeat (two replicas on one GPU, or
            ``[cpu, cpu]``). ``None``: the Trainer's ``accelerator`` and ``devices``.
    """

    strategy_name = "dp"

    def __init__(self, devices: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(devices, **kwargs)
        self.replicas: list[L.LightningModule] = []
        self._forwards: list[Callable[..., Any]] = []
        self._streams: list[torch.cuda.Stream | None] = []
        self._pool: ThreadPoolExecutor | None = None

    @override
    def setup(self, trainer: L.Trainer) -> None:
        super().setup(trainer)
        module = self.lightning_module
        assert module is not None
        devices = self.device_list
        # The memo keeps the Trainer (and what hangs off it) and the run's plan shared instead of copied into every
        # replica. A fresh memo per copy: a shared one would hand back the first copy for every further device.
        shared = [trainer, getattr(module, "plan", None)]
        self.replicas = [module] + [
            copy.deepcopy(module, {id(s): s for s in shared if s is not None}).to(d) for d in devices[1:]
        ]
        if len(self.replicas) < 2:
            return
        # Each replica's own forward (a subclass's override included), bound before the module's is swapped.
        self._forwards = [replica.forward for replica in self.replicas]
        self._streams = [torch.cuda.Stream(d) if d.type == "cuda" else None for d in devices]
        self._pool = ThreadPoolExecutor(len(devices), thread_name_prefix="lit_infer_dp")
        # An instance attribute: ``module(x)`` (nn.Module.__call__, hooks and all) now spreads over the replicas.
        module.forward = self._spread

    @override
    def on_predict_start(self) -> None:
        # Lightning calls the module's own hook (channels_last and the like); the copies need it too.
        for replica in self.replicas[1:]:
            replica.eval()  # copied in setup, before Lightning put the module in eval mode
            replica.announce = False  # the module itself has said what preprocessing runs
            replica.on_predict_start()

    def _spread(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        """The module's forward over the replicas: ``x`` cut along the batch, slices run concurrently, joined."""
        if not isinstance(x, torch.Tensor) or x.ndim == 0 or x.shape[0] < 2:
            return self._forwards[0](x, *args, **kwargs)
        sizes = [s for s in micro_batch_sizes(x.shape[0], len(self.replicas)) if s > 0]
        ready = None
        if x.is_cuda:  # made on this thread's stream; each replica's stream waits for it before copying
            ready = torch.cuda.Event()
            ready.record(torch.cuda.current_stream(x.device))
        assert self._pool is not None
        futures = [
            self._pool.submit(self._forward_on, i, chunk, ready, args, kwargs) for i, chunk in enumerate(x.split(sizes))
        ]
        results = [f.result() for f in futures]
        if x.is_cuda:
            for result in results:  # made on a replica's stream, read on this thread's
                record_stream(result, torch.cuda.current_stream(x.device))
        return cat_outputs([move(r, x.device) for r in results], sizes)

    def _forward_on(self, i: int, chunk: torch.Tensor, ready: Any, args: tuple, kwargs: dict) -> Any:
        stream = self._streams[i]
        # Inference mode and autocast are per thread: enter them again here. The precision context as a whole
        # (bf16-true's default dtype, process-wide) is held by the main thread for the whole step.
        with torch.inference_mode(), self.thread_context(), on_stream(stream):
            out = self._forwards[i](arrive(chunk, self.device_list[i], stream, ready), *args, **kwargs)
            if stream is not None:
                stream.synchronize()  # the caller reads the output on another stream
        return out

    @override
    def teardown(self) -> None:
        module = self.lightning_module
        if module is not None and "forward" in vars(module):
            del module.forward  # the class's forward again
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.replicas, self._forwards, self._streams = [], [], []
        super().teardown()
