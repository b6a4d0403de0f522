"""Predictions: numpy or tensor columns, copied to the host lazily, ``finish`` applied once on the host columns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_infer.records import Failure, Predictions


def test_numpy_columns_are_ready_at_once() -> None:
    pred = Predictions(np.array([3, 4]), ["a", "b"], {"v": np.array([1.0, 2.0])})
    assert pred._resolved and pred.columns["v"].tolist() == [1.0, 2.0]


def test_tensor_columns_become_numpy_and_finish_runs_once_on_them() -> None:
    calls = []

    def finish(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append({k: type(v) for k, v in columns.items()})
        return {**columns, "twice": columns["v"] * 2}

    buffer = torch.tensor([1, 2, 3])
    pred = Predictions([0, 1, 2], ["a", "b", "c"], {"v": buffer, "e": torch.ones(3, 4)}, [], finish)
    buffer.fill_(9)  # a CPU net's output may be a view of a buffer the next batch reuses: read at once
    assert not pred.in_flight and len(pred) == 3
    assert pred.columns["v"].tolist() == [1, 2, 3]
    assert pred.columns["twice"].tolist() == [2, 4, 6] and pred.columns["e"].shape == (3, 4)
    assert pred.resolve().columns is pred.columns
    assert calls == [{"v": np.ndarray, "e": np.ndarray}]  # finish saw host arrays, and ran once
    assert "3 rows" in repr(pred)


def test_rows_must_match_the_indices_before_and_after_finish() -> None:
    with pytest.raises(AssertionError, match="column 'v' has 2 rows for 3"):
        Predictions([0, 1, 2], ["a", "b", "c"], {"v": torch.zeros(2)})
    with pytest.raises(AssertionError, match="column 'w' has 5 rows"):
        Predictions([0], ["a"], {"v": torch.zeros(1)}, finish=lambda c: {"w": np.zeros(5)})
    with pytest.raises(AssertionError, match="2 paths for 1 indices"):
        Predictions([0], ["a", "b"])


def test_empty_keeps_its_failures() -> None:
    failure = Failure(7, "x.jpg", "OSError", "unreadable")
    assert Predictions.empty([failure]).failures == [failure] and len(Predictions.empty()) == 0


@pytest.mark.gpu
def test_cuda_columns_copy_to_pinned_memory_without_waiting() -> None:
    x = torch.randn(4096, 4096, device="cuda")
    y = x @ x  # still running when the copy is queued behind it
    pred = Predictions(np.arange(4096), [str(i) for i in range(4096)], {"y": y[:, 0]})
    copies = pred._copies  # the copy to the host, queued behind the matmul
    assert pred.in_flight and copies is not None and copies._columns["y"].is_pinned()
    assert np.allclose(pred.columns["y"], y[:, 0].cpu().numpy())
