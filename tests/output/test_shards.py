"""Shards: one frame per batch, committed by a manifest; anything past the committed length is ignored."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from lit_infer.output.shards import (
    INDEX,
    ShardWriter,
    committed_path,
    done_indices,
    encode_frame,
    iter_frames,
    list_shards,
    shard_name,
)
from lit_infer.records import Failure, Predictions


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
        assert read[0].column(f, INDEX).tolist() == [4, 1, 7]
        assert read[0].header["paths"] == ["img/4.png", "img/1.png", "img/7.png"]
        assert read[0].failures == [Failure(2, "img/2.png", "OSError", "broken")]
        assert [x.index for x in read[2].failures] == [3, 5]


def test_object_columns_are_refused() -> None:
    pred = Predictions(np.array([0]), ["a"], {"x": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(TypeError, match=r"dtype object holds one numpy array per row \(ragged\), not dict"):
        encode_frame(pred)


def test_writer_commits_each_batch_and_the_tail_past_the_manifest_is_ignored(tmp_path: Path) -> None:
    writer = ShardWriter(str(tmp_path), attempt=1, rank=3, fsync=False)
    assert os.path.basename(writer.path) == shard_name(1, 3) == "part-001-00003.bin"
    writer.append(_pred([0, 1]))
    writer.append(_pred([5], failed=(2,)))
    manifest = json.loads(Path(committed_path(writer.path)).read_text())
    assert manifest == {"bytes": os.path.getsize(writer.path), "rows": 3, "failures": 1, "batches": 2}
    # A batch half-written when the process died: bytes on disk, not in the manifest.
    with open(writer.path, "ab") as f:
        f.write(encode_frame(_pred([9]))[:25])
    writer.close()
    parts = list_shards(str(tmp_path))
    assert [(p.attempt, p.rank, p.committed) for p in parts] == [(1, 3, manifest["bytes"])]
    assert done_indices(parts).tolist() == [0, 1, 2, 5]


def test_list_parts_orders_and_skips_shards_without_manifest(tmp_path: Path) -> None:
    for attempt, rank in [(2, 0), (1, 1), (1, 0)]:
        w = ShardWriter(str(tmp_path), attempt, rank, fsync=False)
        w.append(_pred([attempt * 10 + rank]))
        w.close()
    (tmp_path / "part-003-00000.bin").write_bytes(b"junk")  # no manifest: never committed
    (tmp_path / "notes.txt").write_text("x")
    parts = list_shards(str(tmp_path))
    assert [(p.attempt, p.rank) for p in parts] == [(1, 0), (1, 1), (2, 0)]
    assert done_indices(parts).tolist() == [10, 11, 20]
    assert list_shards(str(tmp_path / "absent")) == []


def test_a_new_writer_truncates_and_refuses_symlinks(tmp_path: Path) -> None:
    w = ShardWriter(str(tmp_path), 1, 0, fsync=False)
    w.append(_pred([0, 1, 2]))
    w.close()
    again = ShardWriter(str(tmp_path), 1, 0, fsync=False)
    assert os.path.getsize(again.path) == 0
    assert done_indices(list_shards(str(tmp_path))).tolist() == []
    again.close()
    if hasattr(os, "O_NOFOLLOW"):
        target = tmp_path / "victim.txt"
        target.write_text("keep me")
        os.symlink(target, tmp_path / shard_name(1, 1))
        with pytest.raises(OSError):
            ShardWriter(str(tmp_path), 1, 1, fsync=False)
        assert target.read_text() == "keep me"


def test_corrupt_shard_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"XXXX" + b"\0" * 20)
    with path.open("rb") as f, pytest.raises(ValueError, match="corrupt shard"):
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
    assert [a.tolist() for a in read.column(f, "boxes")] == [b.tolist() for b in boxes]
