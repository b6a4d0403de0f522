"""Settings of the data module that are measured on the model itself: ``batch_size: auto``, the CPU thread split."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn

from lit_infer.system import available_cores
from lit_infer.tuning import cpu_costs, find_batch_size, plan_main_threads


def tune(dm: Any, workers: int) -> None:
    """A data module's measured settings, before any worker starts: ``batch_size: auto`` and the model's CPU threads.

    The model to measure comes with the plan (:class:`~lit_infer.plan.ModelProbe`), on its device by now.
    """
    probe = dm.plan.probe if dm.plan is not None else None
    if probe is None:
        if dm.batch_size == "auto":
            dm.batch_size = 64  # no model to measure (no plan, or a bare DataLoader): a safe default
            rank_zero_warn("lit-infer: data.batch_size=auto without a planned run (no PredictionWriter): using 64")
        return
    module = probe.module
    if dm.batch_size == "auto":
        dm.batch_size = find_batch_size(module, dm.preprocessing.crop_size, module.device, probe.forward_context)
    if not probe.alone_on_cpu or dm.model_threads is None or workers == 0:
        return
    if dm.model_threads == "auto":
        dataset = dm.dataset
        assert dataset is not None
        # The first unit's first items: no index needed, nothing listed or read past them.
        model_ms, decode_ms = cpu_costs(module, dm.preprocessing.crop_size, dataset.probe, list(range(4)))
        threads = plan_main_threads(available_cores(), workers, model_ms, decode_ms)
    else:
        threads = dm.model_threads
    torch.set_num_threads(threads)
