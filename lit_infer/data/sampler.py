"""The split of a dataset between DDP ranks for prediction: strided, no padding, and a rank may get nothing."""

from __future__ import annotations

from collections.abc import Iterator, Sized

from torch.utils.data import DistributedSampler


class StridedSampler(DistributedSampler):
    """Rank ``r`` of ``w`` takes dataset positions ``r, r + w, r + 2w, ...``: every item exactly once, no padding.

    Lightning's ``UnrepeatedDistributedSampler`` does the same but asserts that every rank gets at least one item;
    with fewer items than ranks (3 images on 4 GPUs, or a resumed run with little left) that assert kills the job.
    Being a ``DistributedSampler``, Lightning leaves it in place.

    Args:
        dataset: What the loader iterates over (only its length is used).
        num_replicas: The world size.
        rank: This process's global rank.
    """

    def __init__(self, dataset: Sized, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)  # type: ignore[arg-type]
        self.total_size = len(dataset)
        self.num_samples = len(range(rank, self.total_size, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples
