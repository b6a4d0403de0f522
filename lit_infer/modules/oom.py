"""Out of device memory on a batch: split it in halves and retry, and keep the size that worked for the rest of the run.

A prediction job sized on one image size meets a folder of larger ones, or shares its GPU: one batch that does not
fit must not end a night's run. Every item is still predicted exactly once and in order (the halves are processed in
sequence and their predictions concatenated), and the batch's decode failures are reported once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn

from lit_infer.data.batches import sizes_of_at_most, split_batch
from lit_infer.records import Batch, Predictions
from lit_infer.system import is_out_of_memory


def concat_predictions(parts: list[Predictions]) -> Predictions:
    """The predictions of consecutive parts of one batch, as one, in order."""
    if len(parts) == 1:
        return parts[0]
    parts = [p.resolve() for p in parts]  # waits for the device: only after an out-of-memory split
    names = list(parts[0].columns)
    return Predictions(
        np.concatenate([p.indices for p in parts]),
        [path for p in parts for path in p.paths],
        {name: np.concatenate([p.columns[name] for p in parts]) for name in names},
        [f for p in parts for f in p.failures],
    )


class SplitOnOOM:
    """Runs a prediction step on a batch, halving the parts that run out of memory until they fit.

    ``max_size`` remembers the largest part that had to be used, so later batches are cut to it up front rather
    than failing first each time. A single item that does not fit is an error: nothing smaller can be tried.

    Example::

        splitter = SplitOnOOM()
        predictions = splitter(batch, lambda part: module.postprocess(module(module.preprocess(part)), part))
    """

    def __init__(self) -> None:
        self.max_size: int | None = None

    def __call__(self, batch: Batch, step: Callable[[Batch], Predictions]) -> Predictions:
        size = len(batch) if self.max_size is None else min(self.max_size, len(batch))
        queue = deque(split_batch(batch, sizes_of_at_most(len(batch), max(size, 1))))
        results: list[Predictions] = []
        while queue:
            part = queue.popleft()
            try:
                results.append(step(part))
                continue
            except Exception as exc:
                if not is_out_of_memory(exc) or len(part) <= 1:
                    raise
            # Retried outside the except block: the exception's traceback holds the frames (and the activations
            # they reference) that must be freed before a smaller part can fit.
            half = (len(part) + 1) // 2
            if self.max_size is None or half < self.max_size:
                rank_zero_warn(
                    f"lit-infer: out of memory on {len(part)} images; retrying in parts of {half}, "
                    f"and using at most {half} per step from now on (lower data.batch_size to avoid the retries)"
                )
                self.max_size = half
            _release_cached_memory()
            queue.extendleft(reversed(split_batch(part, sizes_of_at_most(len(part), half))))
        return concat_predictions(results)


def _release_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
