"""A progress bar that shows images per second, not only batches per second."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from typing_extensions import override


class ImagesPerSecondBar(TQDMProgressBar):
    """TQDM bar for ``predict`` whose postfix is the running images/s of this process (failures included)."""

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
        if not self._bar_started:
            super().on_predict_start(trainer, pl_module)
            self._bar_started = True
        if self._t0 == 0.0:
            self._t0 = time.perf_counter()
        super().on_predict_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)

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
        if elapsed > 0 and self.predict_progress_bar is not None:
            self.predict_progress_bar.set_postfix({"img/s": f"{self._images / elapsed:.1f}"}, refresh=False)
        super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
