"""Merge: shards of every rank and attempt -> one output ordered by dataset index, every index exactly once."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from lit_infer.output.merge import CoverageError, check_coverage, merge
from lit_infer.output.shards import ShardWriter, list_shards
from lit_infer.records import Failure, Predictions


def _pred(indices: list[int], failed: tuple[int, ...] = ()) -> Predictions:
    idx = np.array(indices, dtype=np.int64)
    return Predictions(
        idx,
        [f"img/{i:03d}.png" for i in indices],
        {"pred": idx % 3, "emb": np.stack([idx, -idx], axis=1).astype(np.float32)},
        [Failure(i, f"img/{i:03d}.png", "OSError", f"bad {i}") for i in failed],
    )


def _shards(work: Path, layout: dict[tuple[int, int], list[Predictions]]) -> None:
    for (attempt, rank), preds in layout.items():
        w = ShardWriter(str(work), attempt, rank, fsync=False)
        for p in preds:
            w.append(p)
        w.close()


def _ddp_layout(n: int, world: int, batch: int, failed: set[int]) -> dict[tuple[int, int], list[Predictions]]:
    """What DDP's strided sampler gives: rank r gets indices r, r + world, ... in batches."""
    layout = {}
    for rank in range(world):
        mine = list(range(rank, n, world))
        preds = []
        for s in range(0, len(mine), batch):
            chunk = mine[s : s + batch]
            preds.append(_pred([i for i in chunk if i not in failed], tuple(i for i in chunk if i in failed)))
        layout[(1, rank)] = preds
    return layout


def test_interleaved_ranks_merge_in_index_order(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    _shards(work, _ddp_layout(n=23, world=3, batch=2, failed={4, 17}))
    # Tiny chunks and cache: the streaming path, not one big read.
    result = merge(list_shards(str(work)), 23, str(out), "csv", "predictions", chunk_rows=3, cache_frames=1)
    assert (result.num_items, result.num_predicted, result.num_failed) == (23, 21, 2)
    with (out / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    expected = [i for i in range(23) if i not in (4, 17)]
    assert [int(r["index"]) for r in rows] == expected
    assert [r["path"] for r in rows] == [f"img/{i:03d}.png" for i in expected]
    assert [int(r["pred"]) for r in rows] == [i % 3 for i in expected]
    assert [float(r["emb_2"]) for r in rows] == [-float(i) for i in expected]
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert errors == [
        {"index": 4, "path": "img/004.png", "error_type": "OSError", "message": "bad 4"},
        {"index": 17, "path": "img/017.png", "error_type": "OSError", "message": "bad 17"},
    ]


def test_attempts_combine_and_npy_rows_land_in_order(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    # A first attempt died after two batches; the second did the rest, in another order.
    _shards(work, {(1, 0): [_pred([0, 1]), _pred([2, 3])], (2, 0): [_pred([6, 7]), _pred([4, 5])]})
    result = merge(list_shards(str(work)), 8, str(out), "npy", "predictions")
    emb = np.load(out / "emb.npy")
    assert emb[:, 0].tolist() == list(range(8))
    assert result.files["emb"] == str(out / "emb.npy")
    table = (out / "predictions.csv").read_text().splitlines()
    assert table[0] == "index,path,pred"
    assert [int(line.split(",")[0]) for line in table[1:]] == list(range(8))


@pytest.mark.parametrize(
    ("layout", "problem"),
    [
        ({(1, 0): [_pred([0, 1, 3])]}, "1 indices missing (first [2])"),
        ({(1, 0): [_pred([0, 1, 2])], (1, 1): [_pred([2, 3])]}, "1 doubled (first [2])"),
        ({(1, 0): [_pred([0, 1], failed=(1,)), _pred([2, 3])]}, "1 doubled (first [1])"),
        ({(1, 0): [_pred([0, 1, 2, 3, 4])]}, "outside range(4)"),
    ],
)
def test_a_gap_or_duplicate_is_a_coverage_error_and_nothing_is_written(
    tmp_path: Path, layout: dict, problem: str
) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    _shards(work, layout)
    with pytest.raises(CoverageError) as info:
        merge(list_shards(str(work)), 4, str(out), "csv", "predictions")
    assert problem in str(info.value)
    assert list(out.iterdir()) == []  # no final file, no temp file


def test_check_coverage_accepts_failures_as_coverage() -> None:
    check_coverage(np.array([3, 0, 1]), [Failure(2, "p", "E", "m")], 4)
    check_coverage(np.zeros(0, dtype=np.int64), [], 0)
    with pytest.raises(CoverageError):
        check_coverage(np.array([0]), [], 2)


def test_string_columns_widen_across_frames(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    short = Predictions(np.array([0]), ["a"], {"label": np.array(["x"])})
    long = Predictions(np.array([1]), ["b"], {"label": np.array(["a much longer name"])})
    _shards(work, {(1, 0): [short], (1, 1): [long]})
    merge(list_shards(str(work)), 2, str(out), "jsonl", "predictions")
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["label"] for r in rows] == ["x", "a much longer name"]
