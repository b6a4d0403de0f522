"""Merge the shards of every rank and attempt into one output ordered by dataset index, proving coverage.

Memory stays bounded: one pass reads only frame headers and index columns; the second streams rows in index order
through a small cache of frames, in chunks, into the format's sink.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lit_infer.atomic import atomic_open
from lit_infer.output.formats import Schema, Sink
from lit_infer.output.shards import INDEX, Frame, Shard, iter_frames
from lit_infer.ragged import empty_column
from lit_infer.records import Failure


class CoverageError(AssertionError):
    """The shards do not hold every dataset index exactly once: an invariant of ours broke, never the user's input."""


@dataclass
class MergeResult:
    num_items: int
    num_predicted: int
    num_failed: int
    files: dict[str, str] = field(default_factory=dict)


@dataclass
class _Scan:
    frames: list[tuple[int, Frame]]
    frame_of_row: np.ndarray
    row_in_frame: np.ndarray
    indices: np.ndarray
    failures: list[Failure]
    schema: Schema


def scan(shards: list[Shard], handles: list[Any]) -> _Scan:
    frames: list[tuple[int, Frame]] = []
    idx_chunks, fid_chunks, row_chunks = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    failures: list[Failure] = []
    schema: Schema = {}
    for p, (shard, f) in enumerate(zip(shards, handles, strict=True)):
        for frame in iter_frames(f, shard.committed):
            failures.extend(frame.failures)
            n = frame.header["n"]
            if n == 0:
                continue
            _extend_schema(schema, frame, shard.path)
            idx_chunks.append(frame.column(f, INDEX))
            fid_chunks.append(np.full(n, len(frames), dtype=np.int64))
            row_chunks.append(np.arange(n, dtype=np.int64))
            frames.append((p, frame))
    return _Scan(
        frames, np.concatenate(fid_chunks), np.concatenate(row_chunks), np.concatenate(idx_chunks), failures, schema
    )


def _extend_schema(schema: Schema, frame: Frame, where: str) -> None:
    columns = {
        c["name"]: (np.dtype(c["dtype"]), tuple(c["shape"])) for c in frame.header["columns"] if c["name"] != INDEX
    }
    if schema and set(columns) != set(schema):
        raise CoverageError(f"{where}: columns {sorted(columns)} differ from earlier batches' {sorted(schema)}")
    for name, (dtype, shape) in columns.items():
        if name in schema:
            old_dtype, old_shape = schema[name]
            if old_shape != shape:
                raise CoverageError(f"{where}: column {name!r} has shape {shape}, earlier {old_shape}")
            dtype = np.result_type(old_dtype, dtype)  # strings widen to the longest seen
        schema[name] = (dtype, shape)


def check_coverage(indices: np.ndarray, failures: list[Failure], num_items: int) -> None:
    """Every index in ``range(num_items)`` exactly once, as a prediction or as a failure."""
    combined = np.concatenate([indices, np.asarray([f.index for f in failures], dtype=np.int64)])
    if len(combined) and (combined.min() < 0 or combined.max() >= num_items):
        raise CoverageError(
            f"indices outside range({num_items}): {np.unique(combined[(combined < 0) | (combined >= num_items)])[:10]}"
        )
    counts = np.bincount(combined, minlength=num_items)
    doubled, missing = np.flatnonzero(counts > 1), np.flatnonzero(counts == 0)
    if len(doubled) or len(missing):
        raise CoverageError(
            f"{len(missing)} indices missing (first {missing[:10].tolist()}), {len(doubled)} doubled (first {doubled[:10].tolist()})"
        )


def merge(
    shards: list[Shard],
    num_items: int,
    directory: str,
    fmt: str,
    filename: str,
    chunk_rows: int = 8192,
    cache_frames: int = 64,
) -> MergeResult:
    handles = [open(p.path, "rb") for p in shards]  # noqa: SIM115 -- closed in finally
    try:
        s = scan(shards, handles)
        check_coverage(s.indices, s.failures, num_items)
        order = np.argsort(s.indices, kind="stable")
        sink = Sink(fmt, directory, filename, s.schema, len(order))
        try:
            cache: OrderedDict[int, tuple[dict[str, np.ndarray], list[str]]] = OrderedDict()
            for start in range(0, len(order), chunk_rows):
                rows = order[start : start + chunk_rows]
                _write_chunk(sink, s, rows, handles, cache, max(cache_frames, 2 * len(shards)))
            files = sink.commit()
        except BaseException:
            sink.abort()
            raise
        files["errors"] = write_errors(os.path.join(directory, "errors.jsonl"), s.failures)
        return MergeResult(num_items, len(order), len(s.failures), files)
    finally:
        for f in handles:
            f.close()


def _write_chunk(
    sink: Sink, s: _Scan, rows: np.ndarray, handles: list[Any], cache: OrderedDict, cache_size: int
) -> None:
    fids, in_frame = s.frame_of_row[rows], s.row_in_frame[rows]
    columns = {name: empty_column(len(rows), dtype, shape) for name, (dtype, shape) in s.schema.items()}
    paths: list[str] = [""] * len(rows)
    for fid in np.unique(fids):
        if fid in cache:
            cache.move_to_end(fid)
        else:
            part_no, frame = s.frames[fid]
            cache[fid] = (frame.arrays(handles[part_no]), frame.header["paths"])
            if len(cache) > cache_size:
                cache.popitem(last=False)
        arrays, frame_paths = cache[fid]
        where = np.flatnonzero(fids == fid)
        take = in_frame[where]
        for name in columns:
            columns[name][where] = arrays[name][take]
        for w, t in zip(where.tolist(), take.tolist(), strict=True):
            paths[w] = frame_paths[t]
    sink.write(s.indices[rows], paths, columns)


def write_errors(path: str, failures: list[Failure]) -> str:
    with atomic_open(path, "w", encoding="utf-8") as f:
        for failure in sorted(failures, key=lambda x: x.index):
            f.write(json.dumps(failure.to_dict(), ensure_ascii=False) + "\n")
    return path
