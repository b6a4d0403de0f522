"""Frames and stages: one frame per batch, appended to its unit's stage and committed by the stage's sidecar;
anything past the committed length is ignored. A unit's last batch commits its part: a file and its record."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from lit_infer.checksum import sha256_file
from lit_infer.data.storage import Storage
from lit_infer.output.frames import INDEX, encode_frame, iter_frames
from lit_infer.output.manifest import read_records
from lit_infer.output.parts import PartWriter, done_positions, stage_name, staged_files
from lit_infer.records import Failure, Predictions, UnitMark


def _pred(indices: list[int], failed: tuple[int, ...] = ()) -> Predictions:
    idx = np.array(indices, dtype=np.int64)
    return Predictions(
        idx,
        [f"img/{i}.png" for i in indices],
        {
            "pred": idx * 2,
            "score": (idx / 100).astype(np.float32),
            "label": np.array([f"c{i}" for i in indices]),
            "topk": np.stack([idx, idx + 1], axis=1),
        },
        [Failure(i, f"img/{i}.png", "OSError", "broken") for i in failed],
    )


def test_frames_round_trip_columns_paths_and_failures(tmp_path: Path) -> None:
    path = tmp_path / "shard.bin"
    frames = [encode_frame(_pred([4, 1, 7], failed=(2,))), encode_frame(_pred([0])), encode_frame(_pred([], (3, 5)))]
    path.write_bytes(b"".join(frames))
    with path.open("rb") as f:
        read = list(iter_frames(f, path.stat().st_size))
        assert [fr.header["n"] for fr in read] == [3, 1, 0]
        arrays = read[0].arrays(f)
        assert arrays[INDEX].tolist() == [4, 1, 7]
        assert arrays["pred"].tolist() == [8, 2, 14]
        assert arrays["score"].dtype == np.float32
        assert arrays["label"].tolist() == ["c4", "c1", "c7"]
        assert arrays["topk"].tolist() == [[4, 5], [1, 2], [7, 8]]
        assert read[0].header["paths"] == ["img/4.png", "img/1.png", "img/7.png"]
        assert read[0].failures == [Failure(2, "img/2.png", "OSError", "broken")]
        assert [x.index for x in read[2].failures] == [3, 5]


def test_object_columns_are_refused() -> None:
    pred = Predictions(np.array([0]), ["a"], {"x": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(TypeError, match=r"dtype object holds one numpy array per row \(ragged\), not dict"):
        encode_frame(pred)


def _writer(tmp_path: Path, attempt: int = 1, rank: int = 0) -> PartWriter:
    return PartWriter(Storage(str(tmp_path / "out")), str(tmp_path / "stages"), "csv", attempt, rank, "fp", False)


def test_a_stage_commits_each_batch_and_the_tail_past_its_sidecar_is_ignored(tmp_path: Path) -> None:
    writer = _writer(tmp_path, attempt=1, rank=3)
    writer.append(_pred([0, 1]), UnitMark("u", 0))
    writer.append(_pred([5], failed=(2,)), UnitMark("u", 0))
    stage = tmp_path / "stages" / stage_name(0, 1, 3)
    assert stage.name == "u000000.a001.r00003.bin"
    sidecar = json.loads(stage.with_suffix(".json").read_text())
    assert sidecar == {"bytes": os.path.getsize(stage), "rows": 3, "failures": 1, "batches": 2, "version": None}
    # A batch half-written when the process died: bytes on disk, not in the sidecar.
    with open(stage, "ab") as f:
        f.write(encode_frame(_pred([9]))[:25])
    writer.close()
    assert {k: v.tolist() for k, v in done_positions(str(tmp_path / "stages")).items()} == {0: [0, 1, 5, 2]}
    assert read_records(Storage(str(tmp_path / "out")), "") == {}  # staged, not committed: no part


def test_staged_files_order_every_attempt_and_rank_and_skip_stages_without_sidecar(tmp_path: Path) -> None:
    for attempt, rank in [(2, 0), (1, 1), (1, 0)]:
        w = _writer(tmp_path, attempt, rank)
        w.append(_pred([attempt * 10 + rank]), UnitMark("u", 0))
        w.close()
    (tmp_path / "stages" / stage_name(0, 3, 0)).write_bytes(b"junk")  # no sidecar: never committed
    (tmp_path / "stages" / "notes.txt").write_text("x")
    names = [os.path.basename(p) for p in staged_files(str(tmp_path / "stages"))[0]]
    assert names == [stage_name(0, 1, 0), stage_name(0, 1, 1), stage_name(0, 2, 0)]
    assert sorted(done_positions(str(tmp_path / "stages"))[0].tolist()) == [10, 11, 20]
    assert staged_files(str(tmp_path / "absent")) == {}


def test_the_last_batch_commits_the_part_from_every_attempt_and_removes_the_stages(tmp_path: Path) -> None:
    first = _writer(tmp_path, attempt=1)
    first.append(_pred([2, 3]), UnitMark("u", 0))  # attempt 1 read the second batch, then died
    first.close()
    second = _writer(tmp_path, attempt=2)
    second.append(_pred([0], failed=(1,)), UnitMark("u", 0, last=True, items=4))
    (record,) = second.committed
    assert (record["rows"], record["failed"], record["items"], record["complete"]) == (3, 1, 4, True)
    out = tmp_path / "out"
    table = out / record["files"]["table"]
    assert [line.split(",")[0] for line in table.read_text().splitlines()[1:]] == ["0", "2", "3"]  # by position
    assert record["owned"][table.name] == {"size": table.stat().st_size, "sha256": sha256_file(str(table))}
    assert json.loads((out / record["files"]["errors"]).read_text())["index"] == 1
    assert read_records(Storage(str(out)), "") == {0: record}
    assert list((tmp_path / "stages").iterdir()) == []


def test_a_new_stage_truncates(tmp_path: Path) -> None:
    w = _writer(tmp_path)
    w.append(_pred([0, 1, 2]), UnitMark("u", 0))
    w.close()
    again = _writer(tmp_path)  # the same unit, attempt and rank: a stage opened again starts empty
    again.append(_pred([0]), UnitMark("u", 0))
    again.close()
    assert done_positions(str(tmp_path / "stages"))[0].tolist() == [0]


def test_a_corrupt_stage_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"XXXX" + b"\0" * 20)
    with path.open("rb") as f, pytest.raises(ValueError, match="corrupt stage file"):
        list(iter_frames(f, 24))


def test_ragged_columns_travel_without_padding() -> None:
    boxes = [np.arange(8, dtype=np.float32).reshape(2, 4), np.zeros((0, 4), np.float32), np.ones((1, 4), np.float32)]
    names = [np.array(["cat", "dog"]), np.array([], dtype="<U1"), np.array(["person"])]
    pred = Predictions(np.array([4, 1, 7]), ["a", "b", "c"], {"boxes": boxes, "names": names, "n": np.arange(3)})
    frame = encode_frame(pred)
    f = io.BytesIO(frame)
    (read,) = list(iter_frames(f, len(frame)))
    arrays = read.arrays(f)
    assert [c["shape"] for c in read.header["columns"][1:]] == [[-1, 4], [-1], []]
    assert [a.tolist() for a in arrays["boxes"]] == [b.tolist() for b in boxes]
    assert [a.tolist() for a in arrays["names"]] == [["cat", "dog"], [], ["person"]]
