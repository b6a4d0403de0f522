"""A progress bar that counts images, with a total and an ETA whenever the number of inputs is known (a list, a
table, Parquet footers, a folder once its listing has ended: the total appears then), units of work (tar shards)
against theirs otherwise, and images per second always."""

from __future__ import annotations

import itertools
import os
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm, convert_inf
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from typing_extensions import override


class ImagesPerSecondBar(TQDMProgressBar):
    """TQDM bar for ``predict`` counting this process's images (failures included) against its share of the inputs
    (:meth:`~lit_infer.data.dataset.UnitDataset.expected_items`) when known, else its units of work against its share
    of them (:meth:`~lit_infer.data.dataset.UnitDataset.rank_units`), with the running images/s."""

    def __init__(self, refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self._images = 0
        self._t0 = 0.0
        self._bar_started = False
        self._counts_images = False  # set with the bar (a disabled bar, on ranks other than 0, keeps no ``unit``)
        self._counts_units = False
        self._units_done = 0
        self._leases: Any = None
        self._leased_images: list[int] | None = None  # images in the first k leased units, k = 0 .. all
        self._listing: Any = None  # a folder still being listed: the bar has no total until it ends

    @override
    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The bar starts with the first batch, so that the lines logged as the loop starts (the module's "what
        # preprocessing was assumed") print on their own lines, before it, not glued to its first frame.
        self._bar_started = False

    @override
    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._bar_started and not self.is_disabled:
            # This rank read no batch: under leasing the other ranks took every unit (a run smaller than the group).
            # The bar it shows is the whole run's, so its last frame is still drawn: everything handed out.
            self.predict_progress_bar = self.init_predict_tqdm()
            self._bar_started = True
            if self._leases is not None:
                self.predict_progress_bar.n = self._leased_done()
            self.predict_progress_bar.refresh()
        if self._bar_started:
            super().on_predict_end(trainer, pl_module)

    @override
    def on_predict_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self._t0 == 0.0:
            self._t0 = time.perf_counter()
        if self._bar_started:
            super().on_predict_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)
            return
        # Made once, with its total: Lightning's bar draws itself empty when made, again when reset to the loader's
        # length, and a third time when renamed, three frames before the first batch.
        self.has_dataloader_changed(dataloader_idx)  # Lightning's tracker of the current loader
        self.predict_progress_bar = self.init_predict_tqdm()
        self._bar_started = True

    @override
    def init_predict_tqdm(self) -> Tqdm:
        dataset = getattr(getattr(self.trainer, "datamodule", None), "dataset", None)
        expected = dataset.expected_items() if hasattr(dataset, "expected_items") else None
        # Images, not batches (units end short), against a total when it is known; else the units of work (tar
        # shards, whose images are only known once read) against theirs, so the ETA still holds; else (not our
        # data module) Lightning's count of batches.
        images = self._counts_images = hasattr(dataset, "expected_items")
        # A folder still being listed: its images, with the total from the moment its listing ends.
        self._listing = dataset if images and not dataset.source.ended() else None
        self._counts_units = images and expected is None and self._listing is None and hasattr(dataset, "rank_units")
        unit = "img" if images else "it"
        self._leases = getattr(dataset, "leases", None) if images else None
        kind_unit = {"tar": "shard", "parquet": "file"}.get(
            getattr(getattr(dataset, "source", None), "kind", ""), "unit"
        )
        if self._listing is not None:
            self._leases, total, unit = None, None, "img"
        elif self._leases is not None:
            # Units leased as ranks become free: no rank knows its share, so the bar is the whole run's: what the
            # group's store has handed out so far, in images when every unit's size is known, else in units.
            sizes = dataset.pending_items(dataset.source.all_units())  # every rank's units, in lease order
            if sizes is not None:
                self._leased_images = list(itertools.accumulate(sizes, initial=0))
                self._counts_units, total, unit = False, self._leased_images[-1], "img"
            else:
                self._leased_images = None
                self._counts_units, total, unit = True, self._leases.count, kind_unit
        elif self._counts_units:
            total, unit = len(dataset.rank_units()), kind_unit
            self._units_done = 0
        else:
            total = expected if images else convert_inf(self.total_predict_batches_current_dataloader)
        return Tqdm(
            desc=self.predict_description,
            total=total,
            unit=unit,
            position=(2 * self.process_position),
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            file=sys.stdout,
            smoothing=0,
            bar_format=self.BAR_FORMAT,
        )

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
        if self._counts_units:
            self._units_done += bool(getattr(getattr(batch, "unit", None), "last", False))
        if elapsed > 0:
            postfix = {"img": self._images} if self._counts_units else {}
            bar.set_postfix({**postfix, "img/s": f"{self._images / elapsed:.1f}"}, refresh=False)
        if not self._counts_images:  # not our data module: Lightning's count of batches
            super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
        elif (batch_idx + 1) % max(1, self.refresh_rate) == 0:
            if self._leases is not None:
                bar.n = 0 if bar.disable else self._leased_done()  # a round trip to the store: shown bars only
            else:
                bar.n = self._units_done if self._counts_units else self._images
            if self._listing is not None and self._listing.source.ended():  # the folder's listing ended: a total now
                bar.total, self._listing = self._listing.expected_items(), None
            bar.refresh()

    def _leased_done(self) -> int:
        """What the group's store has handed out so far: images when every unit's size is known, else units."""
        taken = self._leases.taken()
        return self._leased_images[taken] if self._leased_images is not None else taken


def quiet_trainer(trainer: L.Trainer) -> None:
    """A Trainer built with Lightning's defaults, made as quiet as the CLI's (``lit_infer.predict`` calls this).

    Its default logger goes: prediction logs nothing, and it would write ``lightning_logs/`` (a logger the user chose
    stays). Lightning's stock bar becomes :class:`ImagesPerSecondBar` (a subclass of it the user chose stays).
    """
    default = [
        logger
        for logger in trainer.loggers
        if isinstance(logger, (CSVLogger, TensorBoardLogger))
        and logger.name == "lightning_logs"
        and os.path.abspath(str(logger.save_dir)) == os.path.abspath(trainer.default_root_dir)
    ]
    if default and len(default) == len(trainer.loggers):
        trainer.loggers = []
    for i, callback in enumerate(trainer.callbacks):
        if type(callback) is TQDMProgressBar:
            trainer.callbacks[i] = ImagesPerSecondBar(refresh_rate=callback.refresh_rate)
