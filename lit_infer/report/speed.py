"""The report's speed section: images/s over time per rank, from the per-batch timings each rank recorded
(``lit_infer/callbacks/timings.py``), and start-up against steady state."""

from __future__ import annotations

from typing import Any

import numpy as np

import lit_infer.report.svg as svg
from lit_infer.report.reading import Run

SPEED_POINTS = 120
"""Points per rank on the plot (neighbouring batches are pooled)."""
SPEED_RANKS = 10
"""Ranks drawn on the plot (every rank has its row in the table)."""


def speed(run: Run) -> dict[str, Any] | None:
    """Images/s over time per rank (from the per-batch timings), and start-up against steady state."""
    if not run.timings:
        return None
    origin = min(float(t.get("process_started_at") or t.get("predict_started_at") or 0) for t in run.timings)
    series, table = [], []
    for record in sorted(run.timings, key=lambda r: r.get("rank", 0)):
        rows = np.asarray([r for r in record["rows"] if isinstance(r, list) and len(r) == 4], dtype=np.float64)
        rank = record.get("rank", "?")
        begin = float(record.get("predict_started_at") or origin) - origin
        row = {"rank": rank, "host": record.get("host", "?"), "device": record.get("device", "?")}
        if not len(rows):
            # A rank that read nothing (leased units all taken by the others): its row says so, every column filled.
            nothing = {"images": 0, "batches": 0, "startup": None, "steady": None, "wait": 0.0, "step": 0.0}
            table.append({**row, **nothing, "wait_share": 0})
            continue
        t, n, wait, step = rows.T
        groups = np.array_split(np.arange(len(t)), min(SPEED_POINTS, len(t)))
        xs, ys = [], []
        for g in groups:
            start = t[g[0] - 1] if g[0] > 0 else 0.0
            span = t[g[-1]] - start
            xs.append(begin + t[g[-1]])
            ys.append(n[g].sum() / span if span > 0 else 0.0)
        if int(rank) < SPEED_RANKS if isinstance(rank, int) else False:
            series.append((f"rank {rank}", np.asarray(xs), np.asarray(ys)))
        after = t[-1] - t[0]
        table.append(
            {
                **row,
                "images": int(n.sum()),
                "batches": int(len(t) * record.get("batches_per_row", 1)),
                "startup": round(begin + t[0], 2),
                "steady": round(n[1:].sum() / after, 1) if after > 0 else None,
                "wait": round(float(wait.sum()), 2),
                "step": round(float(step.sum()), 2),
                "wait_share": round(float(wait.sum() / max(wait.sum() + step.sum(), 1e-9)) * 100),
            }
        )
    plot = svg.lines(series, "seconds since the first process started", "images/s", "images per second, per rank")
    return {"plot": plot, "ranks": table}
