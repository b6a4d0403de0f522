"""PredictionWriter: commit every batch to its unit's part; the end merges the parts into one ordered output."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Literal

import lightning as L
from typing_extensions import override

from lit_infer.errors import ConfigError, RunError
from lit_infer.lifecycle.budget import check_max_errors, too_many_errors
from lit_infer.lifecycle.finalize import RankStats, finalize_run
from lit_infer.lifecycle.parts_run import PartsRun, check_layout
from lit_infer.lifecycle.plan import plan_run, work_dir_for
from lit_infer.modules.outputs import as_predictions
from lit_infer.output.disk import output_error
from lit_infer.output.formats import check_columns, check_format, output_files
from lit_infer.output.lock import release
from lit_infer.output.ownership import check_filename
from lit_infer.plan import OutputOptions, Plan
from lit_infer.ragged import column_spec
from lit_infer.records import Failure, Predictions, UnitMark


class PredictionWriter(L.Callback):
    """Writes predictions as they come and leaves one file ordered by dataset index, every input exactly once.

    Every source is read in units of work (a page of a folder or table, a range of a list, a tar shard, a Parquet
    file). Each rank stages its batches per unit and commits after each batch, so memory stays flat and a killed run
    resumes where it stopped; a unit's last batch commits its part (a file and its record: rows, size, SHA-256). At
    the end rank 0 writes the manifest of the parts and, for ``layout: single``, merges them (verified) into
    ``<output_dir>/<filename>.<format>``, plus ``errors.jsonl`` (one record per input that failed) and
    ``summary.json``.

    The writer only carries out the run's lifecycle: ``setup`` has the run planned (``lifecycle/plan.py``), and
    :func:`~lit_infer.lifecycle.finalize.finalize_run` ends it: after ``Trainer.predict`` returns under
    ``lit_infer.predict`` and the CLI, or in this callback's ``teardown`` under a plain ``Trainer.predict``.

    Example::

        summary = lit_infer.predict(module, dm, writer=PredictionWriter("outputs/run1", format="jsonl"))
        # or as a plain callback:
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
            local disks, ``layout: single``): each rank keeps its parts in its own ``work_dir`` and rank 0 gathers
            them over the process group before merging.
        work_dir: Folder for the stages (and the parts of ``layout: single``) until the merge. ``None``:
            ``<output_dir>/.lit_infer``. Environment variables expand, e.g. ``$TMPDIR/lit_infer`` for node-local
            scratch.
        layout: ``single``: one file ordered like the input, merged from the parts at the end (the parts are kept
            in ``work_dir`` until the merged file is published, then removed). ``parts``: the parts themselves in
            ``output_dir``, then ``_manifest.json`` and ``_SUCCESS``; no process reads the predictions back
            (``lit-infer merge`` makes the single file later, byte for byte the single layout's). For large runs
            and object storage; see docs/scaling.md.
        storage_options: fsspec options when ``output_dir`` is a URL (``s3://bucket/run``, ``layout: parts``).
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
        layout: Literal["single", "parts"] = "single",
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_layout(layout, output_dir)
        self.layout, self.storage_options = layout, storage_options
        self.parts: PartsRun | None = None
        """The run's parts, from ``setup`` on: a part per unit, committed as each unit is done."""
        check_format(format)
        self.max_errors = check_max_errors(max_errors)
        self._failed = 0
        self._first_failures: list[Failure] = []
        check_filename(filename, output_files(format, "", filename, {})["table"].rsplit(".", 1)[1])
        if output_dir is not None and not os.fspath(output_dir):
            raise ConfigError(
                "writer.output_dir", "", "is empty", "Give a folder, or leave it unset for outputs/<source>"
            )
        self.output_dir = os.fspath(output_dir) if output_dir is not None else None
        self.format = format
        self.filename = filename
        self.overwrite = overwrite
        self.fsync = fsync
        self.shared_filesystem = shared_filesystem
        self._work_dir = work_dir
        self.plan: Plan | None = None
        """The run's plan, from ``setup`` on."""
        self.summary: dict[str, Any] = {}
        """The run's summary (as in ``summary.json``), once finalized."""
        self.finalize_in_teardown = True
        """``teardown`` ends the run (a plain ``Trainer.predict``). ``lit_infer.predict`` and the CLI set it off and
        call :func:`~lit_infer.lifecycle.finalize.finalize_run` once ``Trainer.predict`` has returned."""
        self._parts_open = False
        self._pending: tuple[Predictions, UnitMark | None] | None = None
        self._started = 0.0
        self._seen = 0
        self._steady_from: tuple[float, int] | None = None  # (time, count) when the first batch was committed

    @property
    def work_dir(self) -> str:
        if self.plan is not None:
            return self.plan.work_dir
        assert self.output_dir is not None, "the output folder is known once the run is planned"
        return work_dir_for(self.output_dir, self._work_dir)

    # ---- setup: the plan, this rank's parts ------------------------------------------------------------------
    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # The lifecycle plans the run here, the first moment the process group exists; the writer carries it out.
        options = OutputOptions(
            output_dir=self.output_dir,
            format=self.format,
            filename=self.filename,
            overwrite=self.overwrite,
            fsync=self.fsync,
            max_errors=self.max_errors,
            shared_filesystem=self.shared_filesystem,
            work_dir=self._work_dir,
            layout=self.layout,
            storage_options=self.storage_options,
        )
        self.plan, self.parts = plan_run(trainer, pl_module, trainer.datamodule, options)
        self.output_dir = self.plan.output_dir
        self._parts_open = True
        self._pending = None
        self._seen = self._failed = 0
        self._steady_from = None
        self._first_failures = []
        trainer.strategy.barrier("lit_infer_writer_setup")
        self._started = time.perf_counter()

    # ---- per batch --------------------------------------------------------------------------------------
    # A plain Callback, not Lightning's BasePredictionWriter: that one makes the predict loop look for the indices
    # of every batch in a batch sampler, which a loader of whole batches from units has not (Lightning then warns
    # "Couldn't infer the batch indices"). Each batch carries its own indices; nothing is taken from the loop.
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
        prediction = as_predictions(outputs, batch)  # a subclass's tensor or dict of columns is written too
        # One batch in flight on a GPU: this batch's outputs are still on their way to the host while the GPU starts
        # the next one; the previous batch's have arrived and are committed now (the last at the end, or on a stop).
        # Outputs already on the host are committed at once.
        mark = getattr(batch, "unit", None)
        previous, self._pending = self._pending, (prediction, mark) if prediction.in_flight else None
        if previous is not None:
            self._commit(*previous)
        if not prediction.in_flight:
            self._commit(prediction, mark)

    def _commit(self, prediction: Predictions, mark: UnitMark | None = None) -> None:
        if self.format == "npy":  # refused at the first batch, not at the merge after the whole run
            check_columns(self.format, {name: column_spec(c) for name, c in prediction.columns.items()})
        try:
            assert self.parts is not None and mark is not None, "every batch comes from a unit, listed in setup"
            self.parts.append(prediction, mark)
        except OSError as exc:  # disk full, read-only: say so; every batch committed before stays
            raise RunError(output_error(self.work_dir, exc, resumable=True)) from None
        self._seen += len(prediction) + len(prediction.failures)
        if self._steady_from is None:  # steady images/s count from here: start-up and warm-up are behind
            self._steady_from = (time.perf_counter(), self._seen)
        self._failed += len(prediction.failures)
        self._first_failures += prediction.failures[: max(0, 5 - len(self._first_failures))]
        if isinstance(self.max_errors, int) and self._failed > self.max_errors:
            # A count this rank alone exceeds is exceeded overall: fail now rather than after hours (all committed).
            first = "; ".join(f"{f.path} ({f.error_type}: {f.message})" for f in self._first_failures)
            known = self.plan.data.num_items if self.plan is not None else None  # tar shards: not known
            total = known or self._seen
            raise too_many_errors(self._failed, total, self.max_errors, f"the first ones: {first}")

    def _commit_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and self._parts_open:
            self._commit(*pending)

    @override
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # A stop or a failure after batch k: batch k was predicted, so commit it and a rerun will not redo it. If
        # the device itself failed, its outputs cannot be read: the rerun predicts that batch again.
        with contextlib.suppress(Exception):
            self._commit_pending()
        if self._failed_before_any_work() and self.parts is not None:
            # A failed start (a module's check, a bad setting found late): no attempt ever committed anything here,
            # so the work folder this attempt made holds nothing to resume. Only its own files go (never a user's).
            self.parts.remove_fresh()
        if self.output_dir is not None:
            release(self.output_dir)  # the folder's lock, held by rank 0 since the plan

    def _failed_before_any_work(self) -> bool:
        # One process only: under DDP another rank may have committed batches this one never saw.
        plan = self.plan
        return (
            plan is not None
            and plan.world_size == 1
            and plan.attempt == 1
            and not plan.done_units
            and not plan.done_positions
            and self._seen == 0
            and self._pending is None
        )

    # ---- the end --------------------------------------------------------------------------------------------
    def close(self) -> RankStats | None:
        """Commit the batch still in flight and close this rank's stages; what this rank did in this run, or
        ``None`` when it was closed already (or never opened)."""
        if not self._parts_open:
            return None
        self._commit_pending()
        if self.parts is not None:
            self.parts.close()
        now, steady = time.perf_counter(), 0.0
        if self._steady_from is not None and now > self._steady_from[0]:
            steady = (self._seen - self._steady_from[1]) / (now - self._steady_from[0])
        self._parts_open = False
        return RankStats(self._seen, now - self._started, steady)

    @override
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # A plain ``Trainer.predict`` with this callback: the run ends here. Not on_predict_end: Lightning skips that
        # hook on a rank that got no batch, and every rank must reach finalize's collectives. Teardown hooks run
        # only after a successful loop, so an interrupted run is never merged. ``lit_infer.predict`` and the CLI
        # finalize after ``Trainer.predict`` returns instead, independent of Lightning's teardown order.
        if stage == "predict" and self.finalize_in_teardown and self._parts_open:
            finalize_run(trainer, pl_module, self)
