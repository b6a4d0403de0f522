"""Splitting a network into stages and the cores between processes: pure functions, checked against brute force."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lit_infer.errors import ConfigError
from lit_infer.strategies.cpu_multiprocess import split_cores
from lit_infer.strategies.split import balance, micro_batch_sizes, stage_of, starts_from_names


def _largest(costs: list[float], starts: list[int]) -> float:
    bounds = [*starts, len(costs)]
    return max(sum(costs[a:b]) for a, b in itertools.pairwise(bounds))


def test_balance_puts_the_heavy_child_alone() -> None:
    assert balance([1, 1, 1, 1, 4], 2) == [0, 4]
    assert balance([4, 1, 1, 1, 1], 2) == [0, 1]
    assert balance([1, 2, 3], 3) == [0, 1, 2]
    assert balance([5], 1) == [0]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=7), st.integers(1, 7))
def test_balance_is_optimal_and_contiguous(costs: list[int], stages: int) -> None:
    if stages > len(costs):
        with pytest.raises(ValueError):
            balance(costs, stages)
        return
    starts = balance(costs, stages)
    assert starts[0] == 0 and len(starts) == stages
    assert all(a < b for a, b in itertools.pairwise(starts))
    best = (
        min(_largest(costs, [0, *cuts]) for cuts in itertools.combinations(range(1, len(costs)), stages - 1))
        if stages > 1
        else sum(costs)
    )
    assert _largest(costs, starts) == best


def test_starts_from_names_and_errors() -> None:
    children = ["stem", "layer1", "layer2", "head"]
    assert starts_from_names(children, ["layer2"]) == [0, 2]
    assert starts_from_names(children, ["layer1", "head"]) == [0, 1, 3]
    with pytest.raises(ConfigError, match=r"split_at.*layer9.*Choose among"):
        starts_from_names(children, ["layer9"])
    with pytest.raises(ConfigError, match="first child"):
        starts_from_names(children, ["stem"])
    with pytest.raises(ConfigError, match="execution order"):
        starts_from_names(children, ["head", "layer1"])


def test_stage_of() -> None:
    assert stage_of([0, 2], 4) == [0, 0, 1, 1]
    assert stage_of([0, 1, 3], 4) == [0, 1, 1, 2]
    assert stage_of([0], 3) == [0, 0, 0]


@given(st.integers(0, 100), st.integers(1, 9))
def test_micro_batch_sizes_cover_the_batch(n: int, k: int) -> None:
    sizes = micro_batch_sizes(n, k)
    assert sum(sizes) == n
    assert all(s > 0 for s in sizes)
    assert len(sizes) == min(n, k)
    assert not sizes or max(sizes) - min(sizes) <= 1


def test_split_cores() -> None:
    assert split_cores(16, None, None, None) == (4, 2, 2)
    assert split_cores(2, None, None, None) == (1, 1, 1)
    assert split_cores(1, None, None, None) == (1, 1, 0)
    assert split_cores(16, 2, None, None) == (2, 4, 4)
    assert split_cores(16, 2, 6, 1) == (2, 6, 1)
