"""The one start line of a run: what was found, where it runs, where the predictions go, what was assumed."""

from __future__ import annotations

from collections.abc import Sized

import lightning as L
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override


class StartLine(L.Callback):
    """Logs, once, on rank 0, when the loop starts (data, writer and module are set up by then)::

    lit-infer: 160 inputs in 'data/heldout' -> outputs/quickstart (csv); cpu, 1 process, SingleDeviceStrategy, 32-true
    """

    @override
    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rank_zero_info(start_line(trainer, pl_module))


def start_line(trainer: L.Trainer, pl_module: L.LightningModule) -> str:
    from lit_infer.callbacks.writer import PredictionWriter

    datamodule = trainer.datamodule
    dataset = getattr(datamodule, "dataset", None)
    if hasattr(datamodule, "describe"):
        found = datamodule.describe()  # "3 tar shards", "a list of 2,000 images"
    elif isinstance(dataset, Sized):
        found = f"{len(dataset)} inputs"
    else:
        found = "inputs"
    source = getattr(datamodule, "source", None)
    found = f"{source!r}: {found}" if source is not None else found
    writers = [c for c in trainer.callbacks if isinstance(c, PredictionWriter)]
    output = f" -> {writers[0].output_dir} ({writers[0].format})" if writers else ""
    processes = trainer.world_size
    where = (
        f"{trainer.strategy.root_device.type}, {processes} process{'es' if processes > 1 else ''}"
        f"{f' on {trainer.num_nodes} nodes' if trainer.num_nodes > 1 else ''}, {type(trainer.strategy).__name__}, "
        f"{trainer.precision}"
    )
    return f"lit-infer: {found}{output}; {where}"
