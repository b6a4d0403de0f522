"""Property: whatever the size, unit size, batch size, worker count, world size, failures and kill points, the merged
parts hold every index of range(n) exactly once, as a prediction row or an error record."""

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
from lit_infer.data import ImageDataModule, Loader
from lit_infer.data.sources import SourceListing, page_units
from lit_infer.data.units import Unit, assign
from lit_infer.lifecycle.parts_run import PartsRun
from lit_infer.modules import PredictionModule
from lit_infer.preprocessing import Preprocessing
from lit_infer.records import Failure, Predictions, UnitMark
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
        work / "list.txt",
        batch_size=batch_size,
        num_workers=workers,
        preprocessing=RAW,
        loader=Loader(persistent_workers=False),
    )
    trainer = quiet_trainer(PredictionWriter(work / "out"))
    trainer.predict(PredictionModule(net=MeanColour(), preprocessing=RAW), datamodule=data, return_predictions=False)
    rows, errors = _outputs(work / "out")
    assert rows == sorted(set(range(n)) - {i for i in broken if i < n})
    assert errors == sorted(i for i in broken if i < n)


FP = {"model": {}, "data": {}, "output": {"format": "csv"}}


def _attempt(out: str, units: list[Unit], world: int, batch: int, stop_after: list[int], failed: set[int]) -> PartsRun:
    """One run over a shared folder: rank 0 decides, each rank reads its units (as the loader assigns them) in
    slices of ``batch`` positions, skipping what earlier attempts committed or staged, until its kill point."""
    runs = [
        PartsRun(out, "single", "csv", "predictions", None, None, False, SourceListing("list", units))
        for _ in range(world)
    ]
    decision = runs[0].prepare(FP, overwrite=False)
    for rank, run in enumerate(runs):
        done, staged = run.start(decision, FP, rank)
        todo = [u for u in units if u.ordinal not in done]
        committed = 0
        for unit in assign(todo, rank, world, 0, 1):
            skip, items = set(staged.get(unit.ordinal, np.zeros(0)).tolist()), unit.stop - unit.start
            slices = [range(s, min(s + batch, items)) for s in range(0, items, batch)]
            for k, positions in enumerate(slices):
                last, left = k == len(slices) - 1, [p for p in positions if p not in skip]
                if not left and not last:
                    continue
                if committed >= stop_after[rank]:
                    break
                good = [p for p in left if unit.start + p not in failed]
                pred = Predictions(
                    [unit.index(p) for p in good],
                    [f"p{unit.start + p}" for p in good],
                    {"value": np.asarray([unit.start + p for p in good], np.float32) * 0.5},
                    [Failure(unit.index(p), f"p{unit.start + p}", "OSError", "x") for p in left if p not in good],
                )
                run.append(pred, UnitMark(unit.id, unit.ordinal, last, items if last else 0, None, unit.start))
                committed += 1
            if committed >= stop_after[rank]:
                break
        run.close()
    return runs[0]


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 60),
    unit_size=st.integers(1, 16),
    batch=st.integers(1, 8),
    world=st.integers(1, 4),
    kills=st.lists(st.integers(0, 10), min_size=4, max_size=4),
    failed=st.sets(st.integers(0, 59), max_size=6),
)
@pytest.mark.slow
def test_kill_and_resume_over_world_sizes_covers_every_index_once(
    tmp_path_factory: pytest.TempPathFactory,
    n: int,
    unit_size: int,
    batch: int,
    world: int,
    kills: list[int],
    failed: set[int],
) -> None:
    out = str(tmp_path_factory.mktemp("parts"))
    units = page_units("src", n, unit_size)
    _attempt(out, units, world, batch, kills, failed)  # killed at a different batch on each rank
    summary = _attempt(out, units, world, batch, [10**9] * world, failed).finish({**STATS}, lambda f, n: True)
    rows, errors = _outputs(Path(out))
    assert rows == sorted(set(range(n)) - failed)
    assert errors == sorted(i for i in failed if i < n)
    assert summary["num_predicted"] + summary["num_failed"] == summary["num_items"] == n
    assert not (Path(out) / ".lit_infer").exists()


STATS = {"num_processed_this_run": 0, "wall_seconds": 1.0, "metrics": {}, "world_size": 1, "strategy": "x"}
