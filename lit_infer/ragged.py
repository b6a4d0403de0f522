"""Ragged columns: one row per image, each row an array of its own length (a detector's boxes, its labels).

Held on the host as numpy object arrays of arrays, so that they are indexed, ordered and concatenated like any other
column on the way from ``Predictions`` through the stages, parts and the merge; the frame (``output/frames.py``) stores
them as lengths and values end to end, and the sinks (``output/formats.py``) write them without padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lit_infer.host_copy import host_array

RAGGED = -1
"""First entry of a column's row shape when its rows vary in length (a detector's boxes: ``(RAGGED, 4)``)."""


def ragged(rows: Sequence[Any]) -> np.ndarray:
    """A ragged column (see above): one numpy array per row, each ``k_i x ...`` with its own ``k_i``."""
    column = np.empty(len(rows), dtype=object)
    for i, row in enumerate(rows):
        column[i] = host_array(row) if isinstance(row, torch.Tensor) else np.asarray(row)
    return column


def is_ragged(column: Any) -> bool:
    return isinstance(column, np.ndarray) and column.dtype == object


def column_spec(column: np.ndarray) -> tuple[np.dtype, tuple[int, ...]]:
    """A host column's (dtype, row shape); a ragged one's row shape starts with :data:`RAGGED`."""
    if not is_ragged(column):
        return column.dtype, tuple(column.shape[1:])
    odd = next((r for r in column if not isinstance(r, np.ndarray)), None)
    if odd is not None:
        raise TypeError(f"a column of dtype object holds one numpy array per row (ragged), not {type(odd).__name__}")
    rows = [r for r in column if r.ndim > 0]
    if len(rows) != len(column) or len({r.shape[1:] for r in rows}) > 1:
        shapes = sorted({str(tuple(np.shape(r))) for r in column})[:4]
        raise TypeError(f"a ragged column's rows must share all but their first dimension, got shapes {shapes}")
    if not rows:  # no rows to tell: a batch with nothing in it (never merged)
        return np.dtype(np.float32), (RAGGED,)
    return np.result_type(*[r.dtype for r in rows]), (RAGGED, *rows[0].shape[1:])
