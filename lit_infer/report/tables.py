"""Predictions as the report reads them: chunks of rows from any format (csv, jsonl, parquet, npy), vector columns
regrouped, so that memory holds one chunk and the few columns the report keeps."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CHUNK = 65536
EMBEDDING_SAMPLE = 2000
"""Rows of an embedding column kept for the 2-D projection (evenly spread over the run)."""
_VECTOR = re.compile(r"^(.+)_(\d+)$")


@dataclass
class TableFile:
    """One table of predictions (the single file, or one part) and its ``.npy`` columns."""

    fmt: str
    table: str
    arrays: dict[str, str] = field(default_factory=dict)


def iter_chunks(tables: list[TableFile], wanted: set[str]) -> Iterator[dict[str, list[Any]]]:
    """Chunks of rows, as column -> values, over every table in order. Vector columns (``topk_pred_1``, ...
    in CSV; lists in JSON lines and Parquet; ``<column>.npy``) come as one list per row under their name."""
    for table in tables:
        if table.fmt in ("csv", "npy"):
            yield from _csv_chunks(table, wanted)
        elif table.fmt == "jsonl":
            yield from _jsonl_chunks(table.table, wanted)
        else:
            yield from _parquet_chunks(table.table, wanted)


def _csv_chunks(table: TableFile, wanted: set[str]) -> Iterator[dict[str, list[Any]]]:
    arrays = {k: np.load(v, mmap_mode="r") for k, v in table.arrays.items() if k in wanted}
    with open(table.table, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None) or []
        scalars, vectors = _csv_columns(header, wanted)
        chunk: list[list[str]] = []
        offset = 0
        for row in reader:
            chunk.append(row)
            if len(chunk) == CHUNK:
                yield _csv_chunk(chunk, scalars, vectors, arrays, offset)
                offset += len(chunk)
                chunk = []
        if chunk:
            yield _csv_chunk(chunk, scalars, vectors, arrays, offset)


def _csv_columns(header: list[str], wanted: set[str]) -> tuple[dict[str, int], dict[str, list[int]]]:
    scalars = {name: i for i, name in enumerate(header) if name in wanted}
    vectors: dict[str, list[tuple[int, int]]] = {}
    for i, name in enumerate(header):
        match = _VECTOR.match(name)
        if match and match.group(1) in wanted and match.group(1) not in scalars:
            vectors.setdefault(match.group(1), []).append((int(match.group(2)), i))
    ordered = {}
    for name, positions in vectors.items():
        positions.sort()
        if [p for p, _ in positions] == list(range(1, len(positions) + 1)):  # name_1..name_k: one vector
            ordered[name] = [i for _, i in positions]
    return scalars, ordered


def _csv_chunk(
    rows: list[list[str]],
    scalars: dict[str, int],
    vectors: dict[str, list[int]],
    arrays: dict[str, np.ndarray],
    offset: int,
) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {name: [r[i] if i < len(r) else "" for r in rows] for name, i in scalars.items()}
    for name, positions in vectors.items():
        out[name] = [[r[i] for i in positions if i < len(r)] for r in rows]
    for name, array in arrays.items():
        out[name] = array[offset : offset + len(rows)]
    return out


def _jsonl_chunks(path: str, wanted: set[str]) -> Iterator[dict[str, list[Any]]]:
    chunk: dict[str, list[Any]] = {name: [] for name in wanted}
    n = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            for name in wanted:
                chunk[name].append(row.get(name) if isinstance(row, dict) else None)
            n += 1
            if n == CHUNK:
                yield _present(chunk)
                chunk, n = {name: [] for name in wanted}, 0
    if n:
        yield _present(chunk)


def _present(chunk: dict[str, list[Any]]) -> dict[str, list[Any]]:
    return {k: v for k, v in chunk.items() if any(x is not None for x in v)}


def _parquet_chunks(path: str, wanted: set[str]) -> Iterator[dict[str, list[Any]]]:
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as f:
        columns = [n for n in f.schema_arrow.names if n in wanted]
        for batch in f.iter_batches(batch_size=CHUNK, columns=columns):
            yield {name: batch.column(name).to_pylist() for name in columns}
