"""PredictionWriter: stream every batch to this rank's shard, then merge all shards into one ordered output."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from lit_infer.callbacks.errors_budget import check_max_errors, over_budget, too_many_errors
from lit_infer.callbacks.stop import raise_if_stopping
from lit_infer.errors import ConfigError, RunError
from lit_infer.lifecycle.finalize import read_summary, report, write_outputs
from lit_infer.lifecycle.fingerprint import run_fingerprint
from lit_infer.lifecycle.resume import decide
from lit_infer.output.formats import FORMATS, check_format
from lit_infer.output.shards import ShardWriter
from lit_infer.records import Failure, Predictions

WORK_DIR = ".lit_infer"
"""Inside the output directory: shards, manifests and the run's fingerprint, until the merge succeeds."""


class PredictionWriter(BasePredictionWriter):
    """Writes predictions as they come and leaves one file ordered by dataset index, every input exactly once.

    Each rank appends its batches to its own shard and commits after each batch, so memory stays flat and a killed
    run resumes where it stopped. At the end rank 0 merges every shard into ``<output_dir>/<filename>.<format>``,
    plus ``errors.jsonl`` (one record per input that failed) and ``summary.json``.

    Example::

        trainer = Trainer(callbacks=[PredictionWriter("outputs/run1", format="jsonl")])
        trainer.predict(module, datamodule=dm, return_predictions=False)

    Args:
        output_dir: Folder for the outputs. ``None``: ``outputs/<name of the data source>``.
        format: ``csv``, ``jsonl``, ``parquet`` (needs pyarrow), or ``npy``: vector columns such as embeddings
            go to ``<column>.npy`` (rows in dataset order) beside a ``<filename>.csv`` table of index and path.
        filename: Base name of the predictions file.
        overwrite: Delete an earlier run's outputs in ``output_dir`` and start again. Otherwise an unfinished run
            with the same model, data and options resumes, and a different one is refused.
        fsync: Flush each committed batch to disk (survives a power loss, not only a killed process).
        max_errors: Inputs that may fail (corrupt, unreadable, refused) before the run fails: a count (``10``) or a
            fraction of the inputs (``0.01``). ``None``: no limit. A count stops the run as soon as one process
            alone exceeds it (the message lists the first failures); otherwise the outputs and ``errors.jsonl``
            are written and then the run fails.
        shared_filesystem: Whether all ranks see one ``output_dir`` (one filesystem). ``False`` (nodes with only
            local disks): each rank keeps its shard in its own ``work_dir`` and rank 0 gathers them over the
            process group before merging.
        work_dir: Folder for shards and manifests until the merge. ``None``: ``<output_dir>/.lit_infer``.
            Environment variables expand, e.g. ``$TMPDIR/lit_infer`` for node-local scratch.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike | None = None,
        format: Literal["csv", "jsonl", "parquet", "npy"] = "csv",
        filename: str = "predictions",
        overwrite: bool = False,
        fsync: bool = True,
        max_errors: int | float | None = None,
        shared_filesystem: bool = True,
        work_dir: str | None = None,
    ) -> None:
        super().__init__(write_interval="batch")
        check_format(format)
        self.max_errors = check_max_errors(max_errors)
        self._failed = 0
        self._first_failures: list[Failure] = []
        if not filename or os.sep in filename:
            raise ConfigError(
                "writer.filename", filename, "must be a plain file name", "Give a name such as 'predictions'"
            )
        self.output_dir = os.fspath(output_dir) if output_dir is not None else None
        self.format = format
        self.filename = filename
        self.overwrite = overwrite
        self.fsync = fsync
        self.shared_filesystem = shared_filesystem
        self._work_dir = work_dir
        self.num_items = 0
        self.summary: dict[str, Any] = {}
        self._shard: ShardWriter | None = None
        self._pending: Predictions | None = None
        self._started = 0.0
        self._seen = 0
        self._complete = False

    @property
    def work_dir(self) -> str:
        if self._work_dir is not None:
            return os.path.expanduser(os.path.expandvars(self._work_dir))
        assert self.output_dir is not None
        return os.path.join(self.output_dir, WORK_DIR)

    # ---- setup: fingerprint, resume, attempt number --------------------------------------------------------
    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        if self.output_dir is None:
            source = getattr(datamodule, "source", None) or "predictions"
            self.output_dir = os.path.join("outputs", os.path.splitext(os.path.basename(os.path.normpath(source)))[0])
        dataset = getattr(datamodule, "dataset", None)
        if dataset is None:
            raise ConfigError(
                "data",
                type(datamodule).__name__,
                "PredictionWriter needs a data module with a `dataset`",
                "Use lit_infer.ImageDataModule or give your data module a dataset attribute",
            )
        self.num_items = len(dataset)
        output = {"format": self.format, "filename": self.filename}
        fingerprint = run_fingerprint(pl_module, datamodule, self.num_items, output)
        strategy = trainer.strategy
        decision: dict[str, Any] = {}
        if trainer.is_global_zero:
            decision = decide(self.output_dir, self.work_dir, fingerprint, self.num_items, self.overwrite)
        decision = strategy.broadcast(decision, src=0)
        if "error" in decision:
            raise RunError(decision["error"])
        done = np.asarray(decision["done"], dtype=np.int64)
        self._complete = bool(decision["complete"])
        if hasattr(datamodule, "skip"):
            datamodule.skip = np.arange(self.num_items) if self._complete else done
        elif len(done):
            raise RunError(
                f"{type(datamodule).__name__} cannot skip finished items; use writer.overwrite=true to start again"
            )
        if self._complete:
            rank_zero_info(f"lit_infer: {self.output_dir} is already complete ({self.num_items} inputs); nothing to do")
        elif len(done):
            rank_zero_info(
                f"lit_infer: resuming {self.output_dir}: {len(done)} of {self.num_items} inputs already done"
            )
        os.makedirs(self.work_dir, exist_ok=True)  # rank 0 made it, unless this rank has its own disk
        self._shard = ShardWriter(self.work_dir, decision["attempt"], trainer.global_rank, self.fsync)
        self._pending = None
        strategy.barrier("lit_infer_writer_setup")
        self._started = time.perf_counter()
        self._seen = 0

    # ---- per batch --------------------------------------------------------------------------------------
    @override
    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        if not isinstance(prediction, Predictions):
            raise TypeError(
                f"predict_step returned {type(prediction).__name__}; PredictionWriter needs lit_infer.Predictions"
            )
        # One batch in flight on a GPU: this batch's outputs are still on their way to the host while the GPU starts
        # the next one; the previous batch's have arrived and are committed now (the last at the end, or on a stop).
        # Outputs already on the host are committed at once.
        previous, self._pending = self._pending, prediction if prediction.in_flight else None
        if previous is not None:
            self._commit(previous)
        if not prediction.in_flight:
            self._commit(prediction)

    def _commit(self, prediction: Predictions) -> None:
        assert self._shard is not None
        self._shard.append(prediction)
        self._seen += len(prediction) + len(prediction.failures)
        self._failed += len(prediction.failures)
        self._first_failures += prediction.failures[: max(0, 5 - len(self._first_failures))]
        if isinstance(self.max_errors, int) and self._failed > self.max_errors:
            # A count this rank alone exceeds is exceeded overall: fail now rather than after hours (all committed).
            first = "; ".join(f"{f.path} ({f.error_type}: {f.message})" for f in self._first_failures)
            raise too_many_errors(self._failed, self.num_items, self.max_errors, f"the first ones: {first}")

    def _commit_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and self._shard is not None:
            self._commit(pending)

    @override
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # A stop or a failure after batch k: batch k was predicted, so commit it and a rerun will not redo it. If
        # the device itself failed, its outputs cannot be read: the rerun predicts that batch again.
        with contextlib.suppress(Exception):
            self._commit_pending()

    # ---- the end: metrics, merge, summary -----------------------------------------------------------------
    @override
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Not on_predict_end: Lightning skips that hook on a rank that got no batch (fewer inputs than ranks, or a
        # resumed run with nothing left), and every rank must reach the collectives below. Teardown hooks run only
        # after a successful predict loop, so an interrupted run is never merged.
        if stage != "predict" or self._shard is None:
            return
        assert self.output_dir is not None
        self._commit_pending()
        self._shard.close()
        # A rank asked to stop joins no collective: its peers then fail fast on the closed connection instead of
        # merging a run that is being shut down. Its batches are committed; the rerun merges.
        raise_if_stopping(trainer.global_rank)
        metrics = pl_module.compute_metrics() if hasattr(pl_module, "compute_metrics") else {}
        seen = int(
            trainer.strategy.reduce(
                # The strategy's device, not the module's: Lightning moved the module to the CPU before teardown.
                torch.tensor(self._seen, dtype=torch.int64, device=trainer.strategy.root_device),
                reduce_op="sum",
            ).item()
        )
        wall = time.perf_counter() - self._started
        trainer.strategy.barrier("lit_infer_writer_merge")
        if not self.shared_filesystem and trainer.world_size > 1:
            from lit_infer.output.gather import gather_shards  # torch.distributed only when asked for

            gather_shards(self._shard.path, self.work_dir, trainer.global_rank)
        summary: dict[str, Any] = {}
        if trainer.is_global_zero and self._complete:
            summary = read_summary(self.output_dir)
        elif trainer.is_global_zero:
            stats = {
                "num_processed_this_run": seen,
                "wall_seconds": wall,
                "metrics": metrics,
                "world_size": trainer.world_size,
                "strategy": type(trainer.strategy).__name__,
            }
            summary = write_outputs(self.output_dir, self.work_dir, self.num_items, self.format, self.filename, stats)
            rank_zero_info(report(self.output_dir, summary))
        self.summary = trainer.strategy.broadcast(summary, src=0)
        self._shard = None
        if not self.shared_filesystem and not trainer.is_global_zero:
            shutil.rmtree(self.work_dir, ignore_errors=True)  # rank 0 holds and has merged a copy
        if over_budget(self.summary["num_failed"], self.summary["num_items"], self.max_errors):
            errors_file = os.path.join(self.output_dir, self.summary["files"].get("errors", "errors.jsonl"))
            where = f"each one is listed in {errors_file}"
            raise too_many_errors(self.summary["num_failed"], self.summary["num_items"], self.max_errors, where)


__all__ = ["FORMATS", "PredictionWriter"]
