"""Settings of the data module that are measured on the model itself: ``batch_size: auto``, the CPU thread split."""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_warn

from lit_infer.plan import ModelProbe
from lit_infer.system import available_cores
from lit_infer.tuning import cpu_costs, find_batch_size, main_threads


def tune(
    probe: ModelProbe | None,
    batch_size: int | Literal["auto"],
    model_threads: int | Literal["auto"] | None,
    crop_size: int,
    dataset: Any,
    workers: int,
) -> tuple[int, int | None]:
    """(batch size, model threads), before any worker starts: the batch size to read with (``batch_size: auto``
    measured) and the CPU threads for the model beside the workers (``data.loader.model_threads``), ``None`` where
    the process's own count stays (setting it for the run: :class:`ModelThreads`).

    The model to measure comes with the plan (:class:`~lit_infer.plan.ModelProbe`), on its device by now.
    """
    if probe is None:
        if batch_size == "auto":
            rank_zero_warn("lit-infer: data.batch_size=auto without a planned run (no PredictionWriter): using 64")
            return 64, None  # no model to measure (no plan, or a bare DataLoader): a safe default
        return batch_size, None
    module = probe.module
    if batch_size == "auto":
        batch_size = find_batch_size(module, crop_size, module.device, probe.forward_context)
    if not probe.alone_on_cpu or model_threads is None or workers == 0:
        return batch_size, None
    if model_threads == "auto":
        # The first unit's first items: no index needed, nothing listed or read past them.
        model_ms, decode_ms = cpu_costs(module, crop_size, dataset.probe, list(range(4)))
        model_threads = main_threads(available_cores(), workers, model_ms, decode_ms)
    return batch_size, model_threads


class ModelThreads:
    """The model's CPU threads held for one run, and the process's own count given back when it ends: from Python,
    a fit or predict after this one in the same process must not keep the count narrowed beside its workers."""

    def __init__(self) -> None:
        self._own: int | None = None

    def hold(self, threads: int | None) -> None:
        """``torch.set_num_threads(threads)`` until :meth:`release`; ``None`` leaves the process's count as it is."""
        if threads is None:
            return
        if self._own is None:
            self._own = torch.get_num_threads()
        torch.set_num_threads(threads)

    def release(self) -> None:
        if self._own is not None:
            torch.set_num_threads(self._own)
            self._own = None
