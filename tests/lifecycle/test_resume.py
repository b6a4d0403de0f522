"""Start, resume or refuse, decided from the parts' commit records alone: no Trainer, no model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lit_infer.data.sources import SourceListing
from lit_infer.data.units import Unit
from lit_infer.errors import ConfigError
from lit_infer.lifecycle.fingerprint import run_fingerprint
from lit_infer.lifecycle.parts_run import PartsRun
from lit_infer.lifecycle.plan import check_parts_reach_rank_zero
from lit_infer.plan import OutputOptions
from lit_infer.records import Failure, Predictions, UnitMark

FP = {"model": {"m": 1}, "data": {"num_items": 5}, "output": {"format": "csv", "filename": "predictions"}}
UNITS = [Unit("items-000000000000", "page", "src", 0, 0, 3), Unit("items-000000000003", "page", "src", 1, 3, 5)]
STATS = {"num_processed_this_run": 2, "wall_seconds": 1.0, "metrics": {}, "world_size": 1, "strategy": "x"}


def _run(out: Path) -> PartsRun:
    return PartsRun(str(out), "single", "csv", "predictions", None, None, False, SourceListing("list", UNITS))


def _batch(unit: Unit, positions: list[int], failed: list[int] = (), last: bool = False) -> tuple:
    idx = [unit.index(p) for p in positions]
    failures = [Failure(unit.index(p), f"img{unit.start + p}.png", "OSError", "broken") for p in failed]
    pred = Predictions(idx, [f"img{unit.start + p}.png" for p in positions], {"pred": np.asarray(positions)}, failures)
    mark = UnitMark(unit.id, unit.ordinal, last, unit.stop - unit.start if last else 0, None, unit.start)
    return pred, mark


def test_fresh_then_resume_then_complete_then_refuse(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = _run(out)
    first = run.prepare(FP, overwrite=False)
    assert first == {"done_units": [], "attempt": 1, "complete": False}
    run.start(first, FP, 0)
    run.append(*_batch(UNITS[0], [0, 1, 2], last=True))  # unit 0 committed as its part
    run.append(*_batch(UNITS[1], [0]))  # unit 1 staged, then the attempt was killed
    run.close()

    run = _run(out)
    second = run.prepare(FP, overwrite=False)
    assert second == {"done_units": [0], "attempt": 2, "complete": False}
    done, staged = run.start(second, FP, 0)
    assert done == {0} and {k: v.tolist() for k, v in staged.items()} == {1: [0]}
    run.append(*_batch(UNITS[1], [], failed=[1], last=True))  # the rest of unit 1: one failure
    run.close()
    summary = run.finish(STATS, lambda failed, n: True)
    assert (summary["num_items"], summary["num_predicted"], summary["num_failed"]) == (5, 4, 1)
    lines = (out / "predictions.csv").read_text().splitlines()
    assert [line.split(",")[:2] for line in lines[1:]] == [
        ["0", "img0.png"],
        ["1", "img1.png"],
        ["2", "img2.png"],
        ["3", "img3.png"],
    ]
    assert [json.loads(x)["index"] for x in (out / "errors.jsonl").read_text().splitlines()] == [4]
    assert not (out / ".lit_infer").exists()  # the parts went once the merged file was published

    assert _run(out).prepare(FP, overwrite=False)["complete"]
    other = {**FP, "model": {"m": 2}}
    refused = _run(out).prepare(other, overwrite=False)
    assert "holds a different run (model.m: 1 -> 2)" in refused["error"]
    assert _run(out).prepare(other, overwrite=True)["attempt"] == 1
    assert not (out / "predictions.csv").exists()  # overwrite removed what the earlier run wrote


def test_fingerprint_has_its_stored_json_shape_and_describes_parts_without_one() -> None:
    class Data:
        def fingerprint(self) -> dict:
            return {"size": (224, 224)}

    fp = run_fingerprint(object(), Data(), 3, {"format": "csv"})
    assert fp == {"model": {"module": "object"}, "data": {"size": [224, 224]}, "output": {"format": "csv"}}
    assert run_fingerprint(object(), object(), 3, {})["data"] == {"num_items": 3}


def test_local_parts_layout_without_a_shared_filesystem_is_refused_under_several_ranks(tmp_path: Path) -> None:
    # Each node would commit its parts on its own disk, and the parts are the outputs: one line naming the key, up
    # front. The single layout's parts (in each rank's work folder) are gathered to rank 0 for the merge instead.
    local = OutputOptions(shared_filesystem=False)
    parts = PartsRun(str(tmp_path / "out"), "parts", "csv", "predictions", None, None, False, SourceListing("list", []))
    with pytest.raises(ConfigError, match=r"^writer.shared_filesystem=False: writer.layout=parts commits"):
        check_parts_reach_rank_zero(parts, local, world_size=2)
    check_parts_reach_rank_zero(parts, local, world_size=1)
    check_parts_reach_rank_zero(parts, OutputOptions(), world_size=2)
    single = PartsRun(
        str(tmp_path / "out"), "single", "csv", "predictions", None, None, False, SourceListing("list", [])
    )
    check_parts_reach_rank_zero(single, local, world_size=2)  # gathered
    remote = PartsRun("s3://bucket/run", "parts", "csv", "predictions", None, None, False, SourceListing("list", []))
    check_parts_reach_rank_zero(remote, local, world_size=2)  # every node sees the bucket
