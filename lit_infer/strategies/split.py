"""Where to split: pure functions from per-child costs or user-given names to contiguous pipeline stages, and a batch
into micro-batches.

Kept free of devices and modules so that the hard part (where to cut) is tested on plain lists.
"""

from __future__ import annotations

from collections.abc import Sequence

from lit_infer.errors import ConfigError


def balance(costs: Sequence[float], num_stages: int) -> list[int]:
    """Cut ``costs`` into ``num_stages`` contiguous, non-empty groups minimising the largest group's sum.

    Example::

        >>> balance([1, 1, 1, 1, 4], 2)
        [0, 4]

    Args:
        costs: Cost of each child, in execution order (parameters, or measured seconds).
        num_stages: Number of stages; at most ``len(costs)``.

    Returns:
        The index of the first child of each stage (always starts with 0), strictly increasing.
    """
    n = len(costs)
    if num_stages < 1:
        raise ValueError(f"num_stages must be at least 1, got {num_stages}")
    if num_stages > n:
        raise ValueError(f"cannot cut {n} children into {num_stages} non-empty stages")
    if any(c < 0 for c in costs):
        raise ValueError("costs must be non-negative")
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + float(c))
    inf = float("inf")
    # best[s][i]: the smallest possible largest stage cost when the first i children make s stages.
    best = [[inf] * (n + 1) for _ in range(num_stages + 1)]
    cut = [[0] * (n + 1) for _ in range(num_stages + 1)]
    best[0][0] = 0.0
    for s in range(1, num_stages + 1):
        for i in range(s, n - (num_stages - s) + 1):
            for j in range(s - 1, i):
                value = max(best[s - 1][j], prefix[i] - prefix[j])
                # "<" keeps the earliest cut among equals, so ties give a deterministic plan.
                if value < best[s][i]:
                    best[s][i], cut[s][i] = value, j
    starts, i = [], n
    for s in range(num_stages, 0, -1):
        i = cut[s][i]
        starts.append(i)
    return starts[::-1]


def starts_from_names(children: Sequence[str], split_at: Sequence[str]) -> list[int]:
    """Stage starts from the names of the children that begin stages 2, 3, ... (in execution order).

    Example::

        >>> starts_from_names(["features", "pool", "classifier"], ["pool"])
        [0, 1]

    Args:
        children: Names of the network's top-level children, in execution order.
        split_at: Names of the children where a new stage begins.
    """
    starts = [0]
    for name in split_at:
        if name not in children:
            raise ConfigError(
                "trainer.strategy.init_args.split_at",
                name,
                "is not a top-level child of the network",
                f"Choose among {list(children)}",
            )
        index = children.index(name)
        if index == 0:
            raise ConfigError(
                "trainer.strategy.init_args.split_at",
                name,
                "is the first child: the first stage always starts there",
                "Name only where stages 2, 3, ... begin",
            )
        if index <= starts[-1]:
            raise ConfigError(
                "trainer.strategy.init_args.split_at",
                list(split_at),
                "is not in execution order or names a child twice",
                f"List them in the order the network runs them: {list(children)}",
            )
        starts.append(index)
    return starts


def stage_of(starts: Sequence[int], num_children: int) -> list[int]:
    """The stage of each child, given the stage starts: ``stage_of([0, 2], 4) == [0, 0, 1, 1]``."""
    stages, s = [], 0
    for i in range(num_children):
        while s + 1 < len(starts) and starts[s + 1] <= i:
            s += 1
        stages.append(s)
    return stages


def micro_batch_sizes(batch_size: int, micro_batches: int) -> list[int]:
    """Sizes of the micro-batches of one batch: as equal as possible, none empty, ragged batches included.

    ``micro_batch_sizes(5, 2) == [3, 2]``; ``micro_batch_sizes(1, 4) == [1]``.
    """
    if batch_size <= 0:
        return []
    k = max(1, min(micro_batches, batch_size))
    base, extra = divmod(batch_size, k)
    return [base + (1 if i < extra else 0) for i in range(k)]
