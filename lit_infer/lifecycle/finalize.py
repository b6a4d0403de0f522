"""The end of a run on rank 0: merge every committed shard into the final files, write the summary, report."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from typing import Any

from lit_infer.atomic import read_json, write_json
from lit_infer.lifecycle.resume import RUN_FILE, SUMMARY_FILE
from lit_infer.output.merge import merge
from lit_infer.output.shards import list_parts


def write_outputs(
    output_dir: str,
    work_dir: str,
    num_items: int,
    fmt: str,
    filename: str,
    run_stats: dict[str, Any],
) -> dict[str, Any]:
    """Merge the shards in ``work_dir`` into ``output_dir``, write ``summary.json`` and remove the shards.

    Args:
        run_stats: What this attempt measured and where it ran: ``num_processed_this_run``, ``wall_seconds``,
            ``metrics``, ``world_size``, ``strategy``.

    Returns:
        The summary, as written.
    """
    result = merge(list_parts(work_dir), num_items, output_dir, fmt, filename)
    run = read_json(os.path.join(work_dir, RUN_FILE))
    seen, wall = run_stats["num_processed_this_run"], run_stats["wall_seconds"]
    summary = {
        "num_items": result.num_items,
        "num_predicted": result.num_predicted,
        "num_failed": result.num_failed,
        "num_processed_this_run": seen,
        "wall_seconds": round(wall, 3),
        "images_per_second": round(seen / wall, 2) if wall > 0 else None,
        "metrics": run_stats["metrics"],
        "files": {k: os.path.relpath(v, output_dir) for k, v in result.files.items()},
        "world_size": run_stats["world_size"],
        "strategy": run_stats["strategy"],
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": {**run, "complete": True},
    }
    write_json(os.path.join(output_dir, SUMMARY_FILE), summary)
    # The summary now records the fingerprint; the shards are no longer needed.
    shutil.rmtree(work_dir, ignore_errors=True)
    return summary


def read_summary(output_dir: str) -> dict[str, Any]:
    return read_json(os.path.join(output_dir, SUMMARY_FILE))


def report(output_dir: str, summary: dict[str, Any]) -> str:
    """The lines printed at the end of a run: counts, speed, where each file is, the metrics."""
    lines = [
        f"lit_infer: {summary['num_predicted']} predictions, {summary['num_failed']} failed "
        f"({summary['images_per_second']} images/s over {summary['wall_seconds']} s)",
        f"  predictions: {os.path.join(output_dir, summary['files']['table'])}",
    ]
    lines += [
        f"  {k}: {os.path.join(output_dir, v)}" for k, v in summary["files"].items() if k not in ("table", "errors")
    ]
    if summary["num_failed"]:
        lines.append(f"  errors: {os.path.join(output_dir, summary['files']['errors'])}")
    lines.append(f"  summary: {os.path.join(output_dir, SUMMARY_FILE)}")
    for name, value in summary["metrics"].items():
        lines.append(f"  {name}: {value:.4f}" if isinstance(value, float) else f"  {name}: {value}")
    return "\n".join(lines)
