"""The one merge: the parts of every unit, rank and attempt -> one output ordered like the input, every input once,
verified before anything is published. At the end of a ``layout: single`` run (here through ``PartsRun.finish``, as
finalize calls it) and in ``lit-infer merge`` (tests/robustness/test_planted_records.py)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from lit_infer.checksum import sha256_file
from lit_infer.data.sources import SourceListing
from lit_infer.data.storage import Storage
from lit_infer.data.units import Unit
from lit_infer.errors import RunError
from lit_infer.lifecycle.parts_run import PartsRun
from lit_infer.output.merge import merge_parts
from lit_infer.records import Failure, Predictions, UnitMark

FP = {"model": {"m": 1}, "data": {}, "output": {"format": "csv"}}
STATS = {"num_processed_this_run": 0, "wall_seconds": 1.0, "metrics": {}, "world_size": 2, "strategy": "x"}
SIZES = (4, 3, 5)  # three pages of a folder of 12
UNITS = [
    Unit(f"items-{s:012d}", "page", "src", i, s, s + n) for i, (s, n) in enumerate(zip((0, 4, 7), SIZES, strict=True))
]


def _pred(unit: Unit, positions: list[int], failed: tuple[int, ...] = (), label: str = "c") -> Predictions:
    idx = np.asarray([unit.index(p) for p in positions], dtype=np.int64)
    dense = np.asarray([unit.start + p for p in positions], dtype=np.int64)
    return Predictions(
        idx,
        [f"img/{i:03d}.png" for i in dense],
        {
            "pred": dense % 3,
            "emb": np.stack([dense, -dense], axis=1).astype(np.float32),
            "label": np.asarray([label * (1 + int(i) % 4) for i in dense]),
        },
        [Failure(unit.index(p), f"img/{unit.start + p:03d}.png", "OSError", f"bad {unit.start + p}") for p in failed],
    )


def _run(out: Path, fmt: str = "csv", failed: frozenset[int] = frozenset({5, 9}), layout: str = "single") -> PartsRun:
    """Two ranks and two attempts commit the units out of order, as DDP and a resume would."""

    def batches(unit: Unit, positions: list[int]) -> Predictions:
        good = [p for p in positions if unit.start + p not in failed]
        return _pred(unit, good, tuple(p for p in positions if unit.start + p in failed))

    first = PartsRun(str(out), layout, fmt, "predictions", None, None, False, SourceListing("list", UNITS))
    first.start(first.prepare(FP, overwrite=False), FP, rank=1)
    first.append(batches(UNITS[2], [0, 1, 2]), UnitMark(UNITS[2].id, 2))
    first.append(batches(UNITS[2], [3, 4]), UnitMark(UNITS[2].id, 2, True, 5, None, 7))
    first.append(batches(UNITS[0], [2, 3]), UnitMark(UNITS[0].id, 0))  # then the attempt was killed
    first.close()
    run = PartsRun(str(out), layout, fmt, "predictions", None, None, False, SourceListing("list", UNITS))
    run.start(run.prepare(FP, overwrite=False), FP, rank=0)
    run.append(batches(UNITS[1], [0, 1, 2]), UnitMark(UNITS[1].id, 1, True, 3, None, 4))
    run.append(batches(UNITS[0], [0, 1]), UnitMark(UNITS[0].id, 0, True, 4, None, 0))
    run.close()
    return run


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_units_of_every_rank_and_attempt_merge_in_input_order_with_failures_apart(tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = _run(out).finish(STATS, lambda failed, n: True)
    assert (summary["num_items"], summary["num_predicted"], summary["num_failed"]) == (12, 10, 2)
    rows = _rows(out / "predictions.csv")
    expected = [i for i in range(12) if i not in (5, 9)]
    assert [int(r["index"]) for r in rows] == expected  # the unit's offset plus the position: the input's order
    assert [r["path"] for r in rows] == [f"img/{i:03d}.png" for i in expected]
    assert [int(r["pred"]) for r in rows] == [i % 3 for i in expected]
    assert [float(r["emb_2"]) for r in rows] == [-float(i) for i in expected]
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert errors == [
        {"index": 5, "path": "img/005.png", "error_type": "OSError", "message": "bad 5"},
        {"index": 9, "path": "img/009.png", "error_type": "OSError", "message": "bad 9"},
    ]
    assert summary["files"] == {"table": "predictions.csv", "errors": "errors.jsonl"}
    assert summary["owned"]["predictions.csv"]["sha256"] == sha256_file(str(out / "predictions.csv"))
    assert not (out / ".lit_infer").exists()  # the parts went once the merged file was published and recorded


def test_npy_rows_land_in_order_and_strings_widen_across_parts(tmp_path: Path) -> None:
    _run(tmp_path / "npy", "npy").finish(STATS, lambda failed, n: True)
    emb = np.load(tmp_path / "npy" / "emb.npy")
    assert emb[:, 0].tolist() == [i for i in range(12) if i not in (5, 9)]
    table = (tmp_path / "npy" / "predictions.csv").read_text().splitlines()
    assert table[0] == "index,path,pred,label"
    _run(tmp_path / "jsonl", "jsonl").finish(STATS, lambda failed, n: True)
    rows = [json.loads(line) for line in (tmp_path / "jsonl" / "predictions.jsonl").read_text().splitlines()]
    assert [r["label"] for r in rows[:4]] == ["c", "cc", "ccc", "cccc"]  # each part's own width, all kept whole


def _tamper(parts: Path, case: str) -> str:
    """Change the single layout's parts (in its work folder) before the merge; the name the refusal must give."""
    record_file = parts / "_parts" / "part-000001.json"
    record = json.loads(record_file.read_text())
    table = parts / record["files"]["table"]
    manifest_file = parts / "_manifest.json"
    if case == "truncated":
        table.write_text("\n".join(table.read_text().splitlines()[:-1]) + "\n")
        return "part-000001.csv"
    if case == "outside":
        (parts.parent / "victim.csv").write_text("index,path\n")
        record["files"]["table"] = "../victim.csv"
        record["owned"]["../victim.csv"] = record["owned"][table.name]
        record_file.write_text(json.dumps(record))
        return "part-000001"
    manifest = json.loads(manifest_file.read_text())
    if case == "dropped":
        del manifest["parts"][1]
    elif case == "duplicated":
        manifest["parts"].append(manifest["parts"][1])
    manifest_file.write_text(json.dumps(manifest))
    return "part-000001"


def _listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", ["truncated", "outside", "dropped", "duplicated"])
def test_a_tampered_part_is_refused_in_one_line_and_nothing_is_published_or_deleted(tmp_path: Path, case: str) -> None:
    out = tmp_path / "out"
    if case in ("truncated", "outside"):  # the end of a single-layout run, its parts in the work folder
        run, parts = _run(out), out / ".lit_infer" / "parts"

        def merge() -> None:
            run.finish(STATS, lambda failed, n: True)
    else:  # lit-infer merge of a finished parts run (the end of a run writes its manifest from the records)
        run, parts = _run(out, layout="parts"), out
        run.finish(STATS, lambda failed, n: True)

        def merge() -> None:
            merge_parts(Storage(str(out)), str(out))

    named = _tamper(parts, case)
    before = _listing(out)
    with pytest.raises(RunError) as info:
        merge()
    message = str(info.value)
    assert "\n" not in message and named in message, message
    after = _listing(out)
    after.pop(".lit_infer/parts/_manifest.json", None)  # the index of the records the merge reads, in the work folder
    before.pop(".lit_infer/parts/_manifest.json", None)
    assert after == before  # nothing published (no _SUCCESS either), nothing deleted, no temp file left
    assert not (out / "predictions.csv").exists()
    assert os.path.exists(parts / "part-000000.csv")
