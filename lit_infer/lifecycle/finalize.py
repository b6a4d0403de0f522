"""Finalize: the end of a run, after Lightning's predict loop has returned, on every rank.

:func:`finalize_run` joins the ranks (barrier, gather), and rank 0 merges every committed shard into the final files
(:func:`write_outputs`), writes the summary and reports; the error budget is checked last, on every rank.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from lit_infer.atomic import read_json, write_json
from lit_infer.errors import RunError
from lit_infer.lifecycle.budget import over_budget, too_many_errors
from lit_infer.lifecycle.resume import RUN_FILE, SUMMARY_FILE
from lit_infer.lifecycle.stopping import consume
from lit_infer.output.disk import output_error, read_record
from lit_infer.output.formats import write_table
from lit_infer.output.lock import release
from lit_infer.output.merge import merge
from lit_infer.output.ownership import record, remove_work_files
from lit_infer.output.shards import list_shards
from lit_infer.system import command_started_at


@dataclass
class WrittenShard:
    """What one rank wrote in this run: its shard, the inputs it accounted for, and how long it took."""

    path: str
    seen: int
    wall_seconds: float
    steady_images_per_second: float = 0.0
    """After this rank's first batch (0.0 with one batch or none)."""


def write_outputs(
    output_dir: str,
    work_dir: str,
    num_items: int,
    fmt: str,
    filename: str,
    run_stats: dict[str, Any],
    derive: Callable[[str, dict[str, str], Callable[..., str]], dict[str, str]] | None = None,
) -> dict[str, Any]:
    """Merge the shards in ``work_dir`` into ``output_dir``, write ``summary.json`` and remove the shards.

    Args:
        run_stats: What this attempt measured and where it ran: ``num_processed_this_run``, ``wall_seconds``
            (the predict loop), ``steady_images_per_second`` (after each rank's first batch, summed over ranks),
            ``metrics``, ``world_size``, ``strategy``.
        derive: The module's files made from the merged ones (a detector's COCO results, its table of one row per
            box), before the summary records what the run wrote. It gets the output folder, the merged files and
            a table writer in the run's format (``write_table(filename, schema, chunks)``).

    Returns:
        The summary, as written.
    """
    result = merge(list_shards(work_dir), num_items, output_dir, fmt, filename)
    if derive is not None:
        result.files.update(derive(output_dir, dict(result.files), functools.partial(write_table, fmt, output_dir)))
    run = read_json(os.path.join(work_dir, RUN_FILE))
    seen, wall = run_stats["num_processed_this_run"], run_stats["wall_seconds"]
    command = time.time() - command_started_at()
    steady = run_stats.get("steady_images_per_second")
    summary = {
        "num_items": result.num_items,
        "num_predicted": result.num_predicted,
        "num_failed": result.num_failed,
        "num_processed_this_run": seen,
        "wall_seconds": round(wall, 3),
        "command_seconds": round(command, 3),
        # Over the whole command, start-up included (what a user waits for), and steady, after the first batch.
        "images_per_second": round(seen / command, 2) if command > 0 else None,
        "steady_images_per_second": round(steady, 2) if steady else None,
        "exact_pixels": exact_pixels(run.get("fingerprint", {}).get("data", {})),
        "metrics": run_stats["metrics"],
        "files": {k: os.path.relpath(v, output_dir) for k, v in result.files.items()},
        "world_size": run_stats["world_size"],
        "strategy": run_stats["strategy"],
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": {**run, "complete": True},
        # What this run wrote, so that overwrite removes these files and nothing else.
        "owned": record(output_dir, {k: os.path.relpath(v, output_dir) for k, v in result.files.items()}),
    }
    write_json(os.path.join(output_dir, SUMMARY_FILE), summary)
    # The summary now records the fingerprint; the shards are no longer needed (only lit_infer's own files go).
    remove_work_files(work_dir)
    return summary


def exact_pixels(data: dict[str, Any]) -> bool | None:
    """Whether the network saw the reference's pixels: ``data.exact`` and CPU decoding (``None``: not known)."""
    if "exact" not in data:
        return None
    return bool(data["exact"]) and data.get("decode", "cpu") == "cpu"


def read_summary(output_dir: str) -> dict[str, Any]:
    return read_record(os.path.join(output_dir, SUMMARY_FILE))


def report(output_dir: str, summary: dict[str, Any]) -> str:
    """The lines printed at the end of a run: counts, speed, where each file is, the metrics."""
    lines = [
        f"lit-infer: {summary['num_predicted']} predictions, {summary['num_failed']} failed "
        f"({summary['images_per_second']} images/s over the whole command of {summary['command_seconds']} s"
        + (f", {steady} images/s steady)" if (steady := summary.get("steady_images_per_second")) else ")"),
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


def finalize_run(trainer: L.Trainer, module: L.LightningModule, writer: Any) -> dict[str, Any]:
    """The end of a run, on every rank, after the predict loop: barrier, gather, merge, summary, metrics.

    Called by :func:`lit_infer.predict` and the CLI once ``Trainer.predict`` has returned, and by the writer's
    ``teardown`` when a plain ``Trainer.predict`` runs it. Every rank must call it, including ranks that got no
    batch: it runs collectives. A rank asked to stop joins none (it raises :class:`StopRequested`): its peers then
    fail fast on the closed connection instead of merging a run that is being shut down; its batches are committed
    and the rerun merges.

    Returns:
        The run's summary (also in ``summary.json`` and ``writer.summary``).
    """
    # What the writer hands over: the plan (with the options the end needs), what this rank wrote, a unit run's parts.
    plan, shard, parts = writer.plan, writer.close(), writer.parts
    if plan is None or shard is None:
        raise RuntimeError("finalize_run: the writer has not written this run (was Trainer.predict run with it?)")
    options = plan.output
    consume(plan.rank)
    strategy = trainer.strategy
    metrics = module.compute_metrics() if hasattr(module, "compute_metrics") else {}
    # The strategy's device, not the module's: Lightning moved the module to the CPU at the end of the loop.
    counts = torch.tensor(
        [shard.seen, shard.steady_images_per_second], dtype=torch.float64, device=strategy.root_device
    )
    seen_sum, steady = strategy.reduce(counts, reduce_op="sum").tolist()  # every rank's steady rate, summed
    seen = round(seen_sum)
    strategy.barrier("lit_infer_finalize")
    if not options.shared_filesystem and plan.world_size > 1 and parts is None:
        from lit_infer.output.gather import gather_shards  # torch.distributed only when asked for

        gather_shards(shard.path, plan.work_dir, plan.rank)
    summary: dict[str, Any] = {}
    stats = {
        "num_processed_this_run": seen,
        "wall_seconds": shard.wall_seconds,
        "steady_images_per_second": steady,
        "metrics": metrics,
        "world_size": plan.world_size,
        "strategy": type(strategy).__name__,
    }
    if plan.rank == 0 and parts is not None:  # parts: a manifest of the committed parts, or their merge
        summary = parts.finish(stats, lambda failed, n: not over_budget(failed, n, options.max_errors))
    elif plan.rank == 0 and plan.complete:
        remove_work_files(plan.work_dir)  # this attempt's empty shards
        summary = read_summary(plan.output_dir)
    elif plan.rank == 0:
        try:
            # A module's files made from the merged ones (ObjectDetector's COCO results); most modules make none.
            derive = getattr(module, "derived_outputs", None)
            summary = write_outputs(
                plan.output_dir, plan.work_dir, plan.num_items, options.format, options.filename, stats, derive
            )
        except OSError as exc:  # the merge writes to temp names: the shards stay for the rerun
            release(plan.output_dir)
            raise RunError(output_error(plan.output_dir, exc, resumable=True)) from None
        rank_zero_info(report(plan.output_dir, summary))
    summary = strategy.broadcast(summary, src=0)
    writer.summary = summary
    release(plan.output_dir)
    if not options.shared_filesystem and plan.rank != 0:
        remove_work_files(plan.work_dir)  # rank 0 holds and has merged a copy
    if plan.rank == 0:
        from lit_infer.report import report_at_end  # never fails the run: at worst one line says why

        rank_zero_info(report_at_end(plan.output_dir))
    if over_budget(summary["num_failed"], summary["num_items"], options.max_errors):
        errors = summary["files"].get("errors", "errors.jsonl" if parts is None else "part-*.errors.jsonl")
        where = f"each one is listed in {os.path.join(plan.output_dir, errors)}"
        raise too_many_errors(summary["num_failed"], summary["num_items"], options.max_errors, where)
    return summary
