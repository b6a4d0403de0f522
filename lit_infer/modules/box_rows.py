"""One row per box: the ObjectDetector's ``box_rows`` table, made from the merged predictions (a row per image with
list columns) in chunks, so that a run of millions of boxes is never held whole."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

import lit_infer.modules.coco as coco


def box_chunks(table: str, names: bool, size: int = 4096) -> Iterator[tuple[np.ndarray, list[str], dict]]:
    """A predictions table (a row per image, list columns) as chunks of one row per box, streamed."""
    rows: list[tuple[int, str, Any, float, int, str]] = []
    for row in coco.table_rows(table):
        row_names = row.get("names") or [""] * len(row["boxes"])
        for box, score, label, name in zip(row["boxes"], row["scores"], row["labels"], row_names, strict=True):
            rows.append((int(row["index"]), row["path"], box, score, label, name))
        if len(rows) >= size:
            yield _box_chunk(rows, names)
            rows = []
    if rows:
        yield _box_chunk(rows, names)


def _box_chunk(rows: list[tuple[int, str, Any, float, int, str]], names: bool) -> tuple[np.ndarray, list[str], dict]:
    boxes = np.asarray([r[2] for r in rows], dtype=np.float32).reshape(-1, 4)
    columns = {k: boxes[:, i] for i, k in enumerate(("x1", "y1", "x2", "y2"))}
    columns["score"] = np.asarray([r[3] for r in rows], dtype=np.float32)
    columns["label"] = np.asarray([r[4] for r in rows], dtype=np.int64)
    if names:
        columns["name"] = np.asarray([r[5] for r in rows])
    return np.asarray([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows], columns
