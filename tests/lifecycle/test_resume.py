"""Start, resume or refuse, decided from the folders alone: no Trainer, no model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lit_infer.errors import ConfigError
from lit_infer.lifecycle.finalize import write_outputs
from lit_infer.lifecycle.fingerprint import run_fingerprint
from lit_infer.lifecycle.parts_run import PartsRun
from lit_infer.lifecycle.plan import check_parts_reach_rank_zero
from lit_infer.lifecycle.resume import decide
from lit_infer.output.shards import ShardWriter
from lit_infer.plan import OutputOptions
from lit_infer.records import Failure, Predictions

FP = {"model": {"m": 1}, "data": {"num_items": 5}, "output": {"format": "csv", "filename": "predictions"}}


def _commit(work: Path, attempt: int, rank: int, indices: list[int], failed: list[int] = ()) -> None:
    shard = ShardWriter(str(work), attempt, rank, fsync=False)
    failures = [Failure(i, f"img{i}.png", "OSError", "broken") for i in failed]
    shard.append(Predictions(indices, [f"img{i}.png" for i in indices], {"pred": np.asarray(indices)}, failures))
    shard.close()


def test_fresh_then_resume_then_complete_then_refuse(tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "out" / ".lit_infer"
    first = decide(str(out), str(work), FP, 5, overwrite=False)
    assert first["attempt"] == 1 and not first["complete"] and len(first["done"]) == 0

    _commit(work, 1, 0, [0, 2], failed=[4])  # attempt 1 was killed after one batch
    second = decide(str(out), str(work), FP, 5, overwrite=False)
    assert second["attempt"] == 2 and second["done"].tolist() == [0, 2, 4]

    _commit(work, 2, 0, [1, 3])
    stats = {"num_processed_this_run": 2, "wall_seconds": 1.0, "metrics": {}, "world_size": 1, "strategy": "x"}
    summary = write_outputs(str(out), str(work), 5, "csv", "predictions", stats)
    assert (summary["num_predicted"], summary["num_failed"]) == (4, 1)
    lines = (out / "predictions.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["0", "1", "2", "3"]
    assert not work.exists()

    again = decide(str(out), str(work), FP, 5, overwrite=False)
    assert again["complete"] and again["done"].tolist() == [0, 1, 2, 3, 4]

    other = {**FP, "model": {"m": 2}}
    refused = decide(str(out), str(work), other, 5, overwrite=False)
    assert "holds a different run (model.m: 1 -> 2)" in refused["error"]
    assert decide(str(out), str(work), other, 5, overwrite=True)["attempt"] == 1
    assert not (out / "predictions.csv").exists()  # overwrite removed what the earlier run wrote


def test_fingerprint_has_its_stored_json_shape_and_describes_parts_without_one() -> None:
    class Data:
        def fingerprint(self) -> dict:
            return {"size": (224, 224)}

    fp = run_fingerprint(object(), Data(), 3, {"format": "csv"})
    assert fp == {"model": {"module": "object"}, "data": {"size": [224, 224]}, "output": {"format": "csv"}}
    assert run_fingerprint(object(), object(), 3, {})["data"] == {"num_items": 3}


def test_local_parts_without_a_shared_filesystem_are_refused_under_several_ranks(tmp_path: Path) -> None:
    # Each node would commit its parts on its own disk and rank 0 would miss them: one line naming the key, up front.
    local = OutputOptions(shared_filesystem=False)
    for layout in ("single", "parts"):
        parts = PartsRun(str(tmp_path / "out"), layout, "csv", "predictions", None, None, False, [])
        with pytest.raises(ConfigError, match=r"^writer.shared_filesystem=False: .*not gathered"):
            check_parts_reach_rank_zero(parts, local, world_size=2)
        check_parts_reach_rank_zero(parts, local, world_size=1)
        check_parts_reach_rank_zero(parts, OutputOptions(), world_size=2)
    remote = PartsRun("s3://bucket/run", "parts", "csv", "predictions", None, None, False, [])
    check_parts_reach_rank_zero(remote, local, world_size=2)  # every node sees the bucket
    check_parts_reach_rank_zero(None, local, world_size=2)  # shards: gathered
