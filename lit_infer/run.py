"""``lit_infer.predict``: one call for a whole run from Python, the same lifecycle as ``lit-infer predict``.

Above both the lifecycle and the writer (it puts the writer among the trainer's callbacks, then finalizes): ``lifecycle/``
never imports ``callbacks/``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.strategies import DDPStrategy

from lit_infer.callbacks.lightning_internals import process_group_timeout
from lit_infer.callbacks.progress import quiet_trainer
from lit_infer.callbacks.timings import BatchTimings
from lit_infer.callbacks.writer import PredictionWriter
from lit_infer.lifecycle.finalize import finalize_run
from lit_infer.lifecycle.process import join_process_group
from lit_infer.system import leave_process_group_at_exit, start_run_clock


def predict(
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    trainer: L.Trainer | None = None,
    writer: PredictionWriter | None = None,
) -> dict[str, Any]:
    """Predict every input of ``datamodule`` with ``module``, write the outputs and return the run's summary.

    The run's three steps, in plain sight: the writer's ``setup`` plans it (fingerprint, resume, output paths, handed
    to the data module and the module), ``Trainer.predict`` runs Lightning's loop (the writer only appends and
    commits), and :func:`~lit_infer.lifecycle.finalize.finalize_run` ends it once the loop has returned, on every
    rank (barrier, gather, merge, summary, metrics, error budget). The CLI does the same. Under DDP every rank runs
    the script, so every rank calls this function and gets the same summary.

    Example::

        summary = lit_infer.predict(
            ImageClassifier(factory="torchvision.models.resnet18"),
            ImageDataModule("photos/"),
            writer=PredictionWriter("outputs/photos", format="jsonl"),
        )
        print(summary["num_predicted"], summary["metrics"])

    Args:
        module: The prediction module.
        datamodule: The data.
        trainer: The Trainer to run on. ``None``: one on the automatic accelerator, without logger or checkpoints.
        writer: The writer. ``None``: the trainer's own PredictionWriter callback if it has one, else a default
            ``PredictionWriter()`` (``outputs/<source name>/predictions.csv``). A writer given here joins the
            trainer's callbacks.

    Returns:
        The summary, as in ``summary.json``.
    """
    start_run_clock()
    if trainer is None:
        trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_model_summary=False)
    quiet_trainer(trainer)  # a Trainer with Lightning's defaults: no lightning_logs/, the images/s bar
    present = [c for c in trainer.callbacks if isinstance(c, PredictionWriter)]
    if writer is None:
        writer = present[0] if present else PredictionWriter()
    if writer not in present:
        if present:
            raise ValueError("the trainer already has a PredictionWriter; pass it as `writer` or leave `writer` out")
        trainer.callbacks.append(writer)
    if not any(isinstance(c, BatchTimings) for c in trainer.callbacks):
        trainer.callbacks.append(BatchTimings())  # per-batch timings for the run's report
    writer.finalize_in_teardown = False
    if isinstance(trainer.strategy, DDPStrategy):  # under torchrun: through this restart attempt's own keys
        join_process_group(trainer.strategy, process_group_timeout(trainer.strategy))
    leave_process_group_at_exit()  # a gloo group left to the finalizing interpreter can abort the process
    try:
        trainer.predict(module, datamodule=datamodule, return_predictions=False)
    finally:
        writer.finalize_in_teardown = True
    return finalize_run(trainer, module, writer)
