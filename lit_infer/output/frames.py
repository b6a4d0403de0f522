"""Frames: one batch of predictions as bytes, appended to a unit's stage file (``parts.py``) while it is read.

A stage's sidecar records how many bytes of it are committed; whatever lies past that length (a frame half-written
when the process was killed) is never read. Frames carry no pickles: a JSON header and raw numpy buffers.

Frame layout::

    b"LIF1" | uint64 little-endian header length | header (UTF-8 JSON) | column buffers, back to back
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from lit_infer.ragged import RAGGED, column_spec, is_ragged, ragged
from lit_infer.records import Failure, Predictions

MAGIC = b"LIF1"
_PREFIX = struct.Struct("<4sQ")
INDEX = "__index__"


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


def _decode(blob: bytes, spec: dict[str, Any], n: int) -> np.ndarray:
    """One column of a frame from the frame's column buffers."""
    dtype, shape, at = np.dtype(spec["dtype"]), tuple(spec["shape"]), spec["offset"]
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
    """A frame's header, with where its column buffers start in its file."""

    header: dict[str, Any]
    data_offset: int

    @property
    def failures(self) -> list[Failure]:
        return [Failure(**f) for f in self.header["failures"]]

    def arrays(self, f: Any) -> dict[str, np.ndarray]:
        f.seek(self.data_offset)
        blob = f.read(sum(c["nbytes"] for c in self.header["columns"]))
        return {c["name"]: _decode(blob, c, self.header["n"]) for c in self.header["columns"]}


def iter_frames(f: Any, committed: int) -> Iterator[Frame]:
    """The frames in the first ``committed`` bytes of an open stage file, headers only."""
    pos = 0
    while pos < committed:
        f.seek(pos)
        magic, length = _PREFIX.unpack(f.read(_PREFIX.size))
        if magic != MAGIC:
            raise ValueError(f"corrupt stage file {getattr(f, 'name', '?')!r} at byte {pos}")
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
