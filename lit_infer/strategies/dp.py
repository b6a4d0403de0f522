"""Data parallel in one process: a replica of the module per device, made once, fed concurrently.

``nn.DataParallel`` copies the module to every device on every forward call; for inference the weights never
change, so here the replicas are made once in ``setup`` and each batch only moves its own slice of uint8 pixels.
"""

from __future__ import annotations

import contextlib
import copy
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import lightning as L
import torch
from typing_extensions import override

from lit_infer.data.batches import split_batch
from lit_infer.records import Batch
from lit_infer.strategies.devices import DeviceListStrategy
from lit_infer.strategies.planning import micro_batch_sizes
from lit_infer.strategies.tensors import cat_outputs, move, record_stream


class DataParallelStrategy(DeviceListStrategy):
    """One process, one replica of the module per device; each batch is split across them and run concurrently.

    Preprocessing and the forward pass run on each replica's device; the outputs are gathered in order on the first
    device, where the module's ``postprocess`` (and metrics) run once for the whole batch.

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
        self._streams: list[torch.cuda.Stream | None] = []
        self._pool: ThreadPoolExecutor | None = None

    @override
    def setup(self, trainer: L.Trainer) -> None:
        super().setup(trainer)
        module = self.lightning_module
        assert module is not None
        devices = self.device_list
        # The memo keeps the Trainer (and what hangs off it) shared instead of copied into every replica.
        # A fresh memo per copy: a shared one would hand back the first copy for every further device.
        self.replicas = [module] + [copy.deepcopy(module, {id(trainer): trainer}).to(d) for d in devices[1:]]
        self._streams = [torch.cuda.Stream(d) if d.type == "cuda" else None for d in devices]
        self._pool = ThreadPoolExecutor(len(devices), thread_name_prefix="lit_infer_dp")

    @override
    def on_predict_start(self) -> None:
        # Lightning calls the module's own hook (channels_last and the like); the copies need it too.
        for replica in self.replicas[1:]:
            replica.eval()  # copied in setup, before Lightning put the module in eval mode
            replica.on_predict_start()

    @override
    def predict_step(self, *args: Any, **kwargs: Any) -> Any:
        module = self.lightning_module
        batch = args[0] if args else kwargs.get("batch")
        if (
            len(self.replicas) < 2
            or not isinstance(batch, Batch)
            or len(batch) < 2
            or batch.encoded is not None
            or not hasattr(module, "postprocess")
        ):
            return super().predict_step(*args, **kwargs)
        chunks = split_batch(batch, micro_batch_sizes(len(batch), len(self.replicas)))
        assert self._pool is not None
        # The precision context once, here, for the whole step; the threads enter only autocast (thread_context).
        with self.precision_plugin.predict_step_context():
            futures = [self._pool.submit(self._forward, i, chunk) for i, chunk in enumerate(chunks)]
            results = [f.result() for f in futures]
            if self.root_device.type == "cuda":
                for result in results:  # made on a replica's stream, read on this thread's
                    record_stream(result, torch.cuda.current_stream(self.root_device))
            outputs = cat_outputs([move(r, self.root_device) for r in results])
            return module.postprocess(outputs, batch)

    def _forward(self, i: int, chunk: Batch) -> Any:
        replica, stream = self.replicas[i], self._streams[i]
        device_ctx = torch.cuda.device(stream.device) if stream is not None else contextlib.nullcontext()
        stream_ctx = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
        # Inference mode and autocast are per thread: enter them again here.
        with torch.inference_mode(), self.thread_context(), device_ctx, stream_ctx:
            out = replica(replica.preprocess(chunk))
            if stream is not None:
                stream.synchronize()  # the caller reads the output on another stream
        return out

    @override
    def teardown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.replicas = []
        super().teardown()
