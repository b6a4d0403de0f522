"""Cutting a collated batch into consecutive parts: for devices running side by side (``dp``) and for retrying
a batch that ran out of memory in smaller pieces. The one splitter, so both keep the same rules."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lit_infer.records import Batch


def sizes_of_at_most(n: int, size: int) -> list[int]:
    """Consecutive part sizes covering ``n`` items, each at most ``size``: ``(5, 2) -> [2, 2, 1]``; ``(0, k) -> [0]``."""
    assert size >= 1
    return [min(size, n - start) for start in range(0, n, size)] or [0]


def split_batch(batch: Batch, sizes: Sequence[int]) -> list[Batch]:
    """``batch`` in consecutive parts of the given sizes (summing to ``len(batch)``), order kept.

    The decode failures go with the first part only, so each is reported once. Items still encoded for the device
    decoder (``encoded``) travel as their bytes; the others as their rows of ``images``.
    """
    n = len(batch)
    assert sum(sizes) == n, f"part sizes {list(sizes)} do not add up to the batch's {n} items"
    # Row of ``images`` where each item's pixels start: every item has a row, except items still encoded for the
    # device decoder, whose pixels do not exist yet.
    has_row = [True] * n if batch.encoded is None else [not b for b in batch.encoded.has_bytes()]
    rows = np.concatenate([[0], np.cumsum(has_row, dtype=np.int64)])
    parts, start = [], 0
    for i, size in enumerate(sizes):
        end = start + size
        parts.append(
            Batch(
                batch.images[rows[start] : rows[end]],
                batch.indices[start:end],
                batch.paths[start:end],
                batch.labels[start:end],
                batch.failures if i == 0 else [],
                batch.encoded.slice(start, end) if batch.encoded is not None else None,
            )
        )
        start = end
    return parts
