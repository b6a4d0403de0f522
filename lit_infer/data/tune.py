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
) -> int:
    """The batch size to read with (``batch_size: auto`` measured), before any worker starts; the model's CPU threads
    set on the way (``data.loader.model_threads``).

    The model to measure comes with the plan (:class:`~lit_infer.plan.ModelProbe`), on its device by now.
    """
    if probe is None:
        if batch_size == "auto":
            rank_zero_warn("lit-infer: data.batch_size=auto without a planned run (no PredictionWriter): using 64")
            return 64  # no model to measure (no plan, or a bare DataLoader): a safe default
        return batch_size
    module = probe.module
    if batch_size == "auto":
        batch_size = find_batch_size(module, crop_size, module.device, probe.forward_context)
    if not probe.alone_on_cpu or model_threads is None or workers == 0:
        return batch_size
    if model_threads == "auto":
        # The first unit's first items: no index needed, nothing listed or read past them.
        model_ms, decode_ms = cpu_costs(module, crop_size, dataset.probe, list(range(4)))
        model_threads = main_threads(available_cores(), workers, model_ms, decode_ms)
    torch.set_num_threads(model_threads)
    return batch_size
