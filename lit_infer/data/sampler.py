"""The split of a dataset between DDP ranks for prediction: whole batches, strided, no padding, and a rank may get
nothing (Lightning's ``UnrepeatedDistributedSampler`` asserts that every rank gets an item: 3 images on 4 GPUs, or a
resumed run with little left, would kill the job). Being a ``DistributedSampler``, Lightning leaves it in place."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import DistributedSampler


class BatchStridedSampler(DistributedSampler):
    """Rank ``r`` of ``w`` takes the dataset's fixed batches ``r, r + w, ...`` (batch ``k`` is positions
    ``k*B .. k*B+B-1``), minus the items already done.

    Batches are then a function of the items, not of what is left: one process, two ranks, and a rerun after a kill
    (which skips whole committed batches) all predict the very same batches, so their outputs agree byte for byte.
    The DataLoader's own batching of this rank's stream of indices cuts exactly these batches, because each is
    whole (only the dataset's last one is short, and it ends its rank's stream).

    Args:
        num_items: Length of the dataset.
        batch_size: The DataLoader's batch size.
        num_replicas: The world size.
        rank: This process's global rank.
        skip: Dataset indices already committed by an earlier attempt.
    """

    def __init__(
        self, num_items: int, batch_size: int, num_replicas: int, rank: int, skip: np.ndarray | None = None
    ) -> None:
        super().__init__(range(num_items), num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)  # type: ignore[arg-type]
        self.batch_size = batch_size
        todo = np.ones(num_items, dtype=bool)
        if skip is not None and len(skip):
            todo[np.asarray(skip, dtype=np.int64)] = False
        batches = range(rank * batch_size, num_items, num_replicas * batch_size)
        self.indices = np.concatenate(
            [np.zeros(0, np.int64)] + [np.flatnonzero(todo[s : s + batch_size]) + s for s in batches]
        )
        self.total_size = num_items
        self.num_samples = len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices.tolist())

    def __len__(self) -> int:
        return self.num_samples
