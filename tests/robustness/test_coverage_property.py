"""Property: whatever the size, batch size, worker count, world size, failures and kill points, the output holds every
index of range(n) exactly once, as a prediction row or an error record."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_images, quiet_trainer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lit_infer.callbacks import PredictionWriter
from lit_infer.data import ImageDataModule
from lit_infer.modules import PredictionModule
from lit_infer.output.merge import merge
from lit_infer.output.shards import ShardWriter, done_indices, list_shards
from lit_infer.preprocessing import Preprocessing
from lit_infer.records import Failure, Predictions
from robustness.robust_helpers import MeanColour

RAW = Preprocessing(crop_size=8, resize_size=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
POOL = 12


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pool")
    make_images(root, POOL, size=(12, 10))
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return root


def _outputs(out: Path) -> tuple[list[int], list[int]]:
    rows = [int(r["index"]) for r in csv.DictReader((out / "predictions.csv").open())]
    errors = [json.loads(line)["index"] for line in (out / "errors.jsonl").read_text().splitlines()]
    return rows, errors


@settings(max_examples=6, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, POOL),
    batch_size=st.integers(1, 5),
    workers=st.sampled_from([0, 1]),
    broken=st.sets(st.integers(0, POOL - 1), max_size=3),
)
@pytest.mark.slow
def test_end_to_end_every_index_once(
    pool: Path, tmp_path_factory: pytest.TempPathFactory, n: int, batch_size: int, workers: int, broken: set[int]
) -> None:
    work = tmp_path_factory.mktemp("run")
    entries = [str(pool / ("broken.png" if i in broken else f"img_{i:05d}.png")) for i in range(n)]
    (work / "list.txt").write_text("\n".join(entries) + "\n")
    data = ImageDataModule(
        work / "list.txt", batch_size=batch_size, num_workers=workers, preprocessing=RAW, persistent_workers=False
    )
    trainer = quiet_trainer(PredictionWriter(work / "out"))
    trainer.predict(PredictionModule(net=MeanColour(), preprocessing=RAW), datamodule=data, return_predictions=False)
    rows, errors = _outputs(work / "out")
    assert rows == sorted(set(range(n)) - {i for i in broken if i < n})
    assert errors == sorted(i for i in broken if i < n)


def _predictions(indices: np.ndarray, failed: set[int]) -> Predictions:
    good = np.asarray([i for i in indices if i not in failed], dtype=np.int64)
    failures = [Failure(int(i), f"p{i}", "OSError", "x") for i in indices if i in failed]
    return Predictions(good, [f"p{i}" for i in good], {"value": good.astype(np.float32) * 0.5}, failures)


def _attempt(work: str, attempt: int, todo: np.ndarray, world: int, batch: int, stop_after: list[int], failed) -> None:
    """One run: each rank takes its strided share of ``todo`` (as Lightning's sampler does) and commits per batch
    until its kill point."""
    for rank in range(world):
        share = todo[rank::world]
        writer = ShardWriter(work, attempt, rank, fsync=False)
        for b, start in enumerate(range(0, len(share), batch)):
            if b >= stop_after[rank]:
                break
            writer.append(_predictions(share[start : start + batch], failed))
        writer.close()


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 60),
    batch=st.integers(1, 8),
    world=st.integers(1, 4),
    kills=st.lists(st.integers(0, 10), min_size=4, max_size=4),
    failed=st.sets(st.integers(0, 59), max_size=6),
)
@pytest.mark.slow
def test_kill_and_resume_over_world_sizes_covers_every_index_once(
    tmp_path_factory: pytest.TempPathFactory, n: int, batch: int, world: int, kills: list[int], failed: set[int]
) -> None:
    out = tmp_path_factory.mktemp("shards")
    work = str(out / ".lit_infer")
    Path(work).mkdir()
    _attempt(work, 1, np.arange(n), world, batch, kills, failed)  # killed at a different batch on each rank
    done = done_indices(list_shards(work))
    assert len(done) == len(set(done.tolist()))  # nothing committed twice
    remaining = np.setdiff1d(np.arange(n), done)
    _attempt(work, 2, remaining, world, batch, [10**9] * world, failed)  # the rerun finishes
    result = merge(list_shards(work), n, str(out), "csv", "predictions")
    rows, errors = _outputs(out)
    assert rows == sorted(set(range(n)) - failed)
    assert errors == sorted(i for i in failed if i < n)
    assert result.num_predicted + result.num_failed == n
