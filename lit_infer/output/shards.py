"""Per-rank shard files: one frame per batch, appended, committed by an atomically rewritten commit file.

A shard ``part-AAA-RRRRR.bin`` holds frames; its commit file ``part-AAA-RRRRR.json`` holds how many bytes of it are
committed. Whatever lies past that length (a frame half-written when the process was killed) is ignored on read
and cut off when the shard is resumed. Frames carry no pickles: a JSON header and raw numpy buffers.

Frame layout::

    b"LIF1" | uint64 little-endian header length | header (UTF-8 JSON) | column buffers, back to back
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from lit_infer.atomic import read_json, write_json
from lit_infer.ragged import RAGGED, column_spec, is_ragged, ragged
from lit_infer.records import Failure, Predictions

MAGIC = b"LIF1"
_PREFIX = struct.Struct("<4sQ")
_SHARD = re.compile(r"^part-(\d{3,})-(\d{5,})\.bin$")
INDEX = "__index__"


def shard_name(attempt: int, rank: int) -> str:
    return f"part-{attempt:03d}-{rank:05d}.bin"


def encode_frame(pred: Predictions) -> bytes:
    """One batch of predictions as bytes: JSON header (paths, failures, column layout) + the column buffers."""
    arrays = {INDEX: np.ascontiguousarray(pred.indices, dtype=np.int64)}
    arrays.update({name: np.ascontiguousarray(col) for name, col in pred.columns.items()})
    columns, buffers, offset = [], [], 0
    for name, arr in arrays.items():
        dtype, shape = column_spec(arr)
        # A ragged column is its rows' lengths (int64) then their values end to end: no padding, no pickle.
        parts = [arr] if not is_ragged(arr) else [_lengths(arr), _flat(arr, dtype, shape)]
        nbytes = sum(p.nbytes for p in parts)
        columns.append({"name": name, "dtype": dtype.str, "shape": list(shape), "offset": offset, "nbytes": nbytes})
        buffers += parts
        offset += nbytes
    header = json.dumps(
        {"n": len(pred), "paths": pred.paths, "failures": [f.to_dict() for f in pred.failures], "columns": columns},
        ensure_ascii=False,
    ).encode("utf-8", "surrogateescape")
    return b"".join([_PREFIX.pack(MAGIC, len(header)), header, *(a.tobytes() for a in buffers)])


def _lengths(column: np.ndarray) -> np.ndarray:
    return np.fromiter((len(r) for r in column), dtype=np.int64, count=len(column))


def _flat(column: np.ndarray, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    rows = [np.asarray(r, dtype=dtype).reshape(-1, *shape[1:]) for r in column]
    return np.ascontiguousarray(np.concatenate(rows)) if rows else np.zeros((0, *shape[1:]), dtype)


def _decode(blob: bytes, spec: dict[str, Any], n: int, start: int = 0) -> np.ndarray:
    """One column of a frame from its bytes (``start``: where the frame's column buffers begin in ``blob``)."""
    dtype, shape, at = np.dtype(spec["dtype"]), tuple(spec["shape"]), start + spec["offset"]
    if shape[:1] != (RAGGED,):
        return np.frombuffer(blob, dtype=dtype, count=n * int(np.prod(shape, dtype=np.int64)), offset=at).reshape(
            n, *shape
        )
    lengths = np.frombuffer(blob, dtype=np.int64, count=n, offset=at)
    inner = int(np.prod(shape[1:], dtype=np.int64))
    values = np.frombuffer(blob, dtype=dtype, count=int(lengths.sum()) * inner, offset=at + 8 * n)
    values = values.reshape(-1, *shape[1:])
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return ragged([values[a:b] for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)])


@dataclass
class Frame:
    """A frame's header, with where its column buffers start in the shard file."""

    header: dict[str, Any]
    data_offset: int

    @property
    def failures(self) -> list[Failure]:
        return [Failure(**f) for f in self.header["failures"]]

    def column(self, f: Any, name: str) -> np.ndarray:
        spec = next(c for c in self.header["columns"] if c["name"] == name)
        f.seek(self.data_offset + spec["offset"])
        return _decode(f.read(spec["nbytes"]), spec, self.header["n"], start=-spec["offset"])

    def arrays(self, f: Any) -> dict[str, np.ndarray]:
        f.seek(self.data_offset)
        blob = f.read(sum(c["nbytes"] for c in self.header["columns"]))
        return {c["name"]: _decode(blob, c, self.header["n"]) for c in self.header["columns"]}


def iter_frames(f: Any, committed: int) -> Iterator[Frame]:
    """The frames in the first ``committed`` bytes of an open shard, headers only."""
    pos = 0
    while pos < committed:
        f.seek(pos)
        magic, length = _PREFIX.unpack(f.read(_PREFIX.size))
        if magic != MAGIC:
            raise ValueError(f"corrupt shard {getattr(f, 'name', '?')!r} at byte {pos}")
        header = json.loads(f.read(length).decode("utf-8", "surrogateescape"))
        data_offset = pos + _PREFIX.size + length
        yield Frame(header, data_offset)
        pos = data_offset + sum(c["nbytes"] for c in header["columns"])


def open_frames(path: str) -> Any:
    """A new frame file for appending. O_NOFOLLOW: a symlink planted where it goes is refused, not written through."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o644)
    return os.fdopen(fd, "wb")


def append_frame(file: Any, pred: Predictions, fsync: bool) -> int:
    """Append one batch's frame to ``file``, flushed (and on disk with ``fsync``) before its commit record; its size."""
    frame = encode_frame(pred)
    file.write(frame)
    file.flush()
    if fsync:
        os.fsync(file.fileno())
    return len(frame)


class ShardWriter:
    """Appends frames to this rank's shard; each ``append`` is durable once it returns (with ``fsync``)."""

    def __init__(self, directory: str, attempt: int, rank: int, fsync: bool = True) -> None:
        self.path = os.path.join(directory, shard_name(attempt, rank))
        self.commit_file = committed_path(self.path)
        self.fsync = fsync
        self._file = open_frames(self.path)
        self.committed_bytes = 0
        self.rows = 0
        self.failures = 0
        self.batches = 0
        self._commit()

    def append(self, pred: Predictions) -> None:
        self.committed_bytes += append_frame(self._file, pred, self.fsync)
        self.rows += len(pred)
        self.failures += len(pred.failures)
        self.batches += 1
        self._commit()

    def _commit(self) -> None:
        state = {"bytes": self.committed_bytes, "rows": self.rows, "failures": self.failures, "batches": self.batches}
        write_json(self.commit_file, state, durable=self.fsync)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def committed_path(shard_path: str) -> str:
    return shard_path[: -len(".bin")] + ".json"


@dataclass
class Shard:
    """A shard file and its committed length."""

    path: str
    committed: int
    attempt: int
    rank: int


def list_shards(directory: str) -> list[Shard]:
    """Every shard in ``directory`` with a commit file, in (attempt, rank) order. Uncommitted tails are excluded."""
    shards = []
    if not os.path.isdir(directory):
        return shards
    for name in sorted(os.listdir(directory)):
        m = _SHARD.match(name)
        path = os.path.join(directory, name)
        if not m or not os.path.exists(committed_path(path)):
            continue
        committed = int(read_json(committed_path(path))["bytes"])
        shards.append(Shard(path, committed, int(m.group(1)), int(m.group(2))))
    return shards


def done_indices(shards: list[Shard]) -> np.ndarray:
    """Dataset indices already committed (predicted or failed), sorted."""
    chunks = [np.zeros(0, dtype=np.int64)]
    for shard in shards:
        with open(shard.path, "rb") as f:
            for frame in iter_frames(f, shard.committed):
                chunks.append(frame.column(f, INDEX))
                chunks.append(np.asarray([x["index"] for x in frame.header["failures"]], dtype=np.int64))
    return np.sort(np.concatenate(chunks))
