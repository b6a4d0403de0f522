"""A progress bar that counts images, with a total and an ETA whenever the number of inputs is known before they
are read (a list, a listed folder, a table, Parquet footers), and images per second always."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from typing_extensions import override


class ImagesPerSecondBar(TQDMProgressBar):
    """TQDM bar for ``predict`` counting this process's images (failures included) against its share of the inputs
    (:meth:`~lit_infer.data.dataset.UnitDataset.expected_items`) when known, with the running images/s."""

    def __init__(self, refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self._images = 0
        self._t0 = 0.0
        self._bar_started = False

    @override
    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The bar starts with the first batch, so that the lines logged as the loop starts (the module's "what
        # preprocessing was assumed") print on their own lines, before it, not glued to its first frame.
        self._bar_started = False

    @override
    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bar_started:
            super().on_predict_end(trainer, pl_module)

    @override
    def on_predict_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        first = not self._bar_started
        if first:
            super().on_predict_start(trainer, pl_module)
            self._bar_started = True
        if self._t0 == 0.0:
            self._t0 = time.perf_counter()
        super().on_predict_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)
        bar = self.predict_progress_bar
        dataset = getattr(getattr(trainer, "datamodule", None), "dataset", None)
        if first and bar is not None and hasattr(dataset, "expected_items"):  # images, not batches (units end short)
            bar.reset(total=dataset.expected_items())  # after Lightning's own reset to its count of batches
            bar.unit = "img"

    @override
    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._images += getattr(batch, "size", 0)
        elapsed = time.perf_counter() - self._t0
        bar = self.predict_progress_bar
        if bar is None:
            return
        if elapsed > 0:
            bar.set_postfix({"img/s": f"{self._images / elapsed:.1f}"}, refresh=False)
        if bar.unit != "img":  # not our data module: Lightning's count of batches
            super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
        elif (batch_idx + 1) % max(1, self.refresh_rate) == 0:
            bar.n = self._images
            bar.refresh()
