"""Finalize: the end of a run, after Lightning's predict loop has returned, on every rank.

:func:`finalize_run` joins the ranks (barrier; without a shared filesystem, the parts of ``layout: single`` gathered
to rank 0), and rank 0 writes the manifest and, for ``layout: single``, merges the parts into the one ordered file
(:meth:`~lit_infer.lifecycle.parts_run.PartsRun.finish`), writes the summary and reports; the error budget is
checked last, on every rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from lit_infer.errors import RankZeroRefused, RunError
from lit_infer.lifecycle.budget import over_budget, too_many_errors
from lit_infer.lifecycle.stopping import consume
from lit_infer.output.disk import output_error
from lit_infer.output.lock import release

SUMMARY_FILE = "summary.json"
"""In the output folder: written last by a finished run, with the files it wrote and its fingerprint."""


@dataclass
class RankStats:
    """What one rank did in this run: the inputs it accounted for, and how long it took."""

    seen: int
    wall_seconds: float
    steady_images_per_second: float = 0.0
    """After this rank's first batch (0.0 with one batch or none)."""


def report(output_dir: str, summary: dict[str, Any]) -> str:
    """The lines printed at the end of a run: counts, speed, where each file is, the metrics."""
    lines = [
        f"lit-infer: {summary['num_predicted']} predictions, {summary['num_failed']} failed "
        f"({summary['images_per_second']} images/s over the whole command of {summary['command_seconds']} s"
        + (f", {steady} images/s steady)" if (steady := summary.get("steady_images_per_second")) else ")"),
    ]
    for key, name in summary["files"].items():
        if key != "errors" or summary["num_failed"]:
            lines.append(f"  {'predictions' if key == 'table' else key}: {_join(output_dir, name)}")
    lines.append(f"  summary: {_join(output_dir, SUMMARY_FILE)}")
    for name, value in summary["metrics"].items():
        lines.append(f"  {name}: {value:.4f}" if isinstance(value, float) else f"  {name}: {value}")
    return "\n".join(lines)


def check_ranks_listed_alike(trainer: L.Trainer, listing: Any) -> None:
    """Every rank lists a folder source itself, while it reads: had files come or gone meanwhile, two ranks would
    have cut different pages, and their parts would not add up to one run. Their listings' digests of the names are
    compared once every rank has read its last unit (so its listing has ended); refused alike on every rank."""
    import torch.distributed as dist

    pages = getattr(listing, "pages", None)
    if pages is None or trainer.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return
    listing.all_units()
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, pages.end()["names_sha256"])
    if len(set(gathered)) > 1:
        raise (RunError if trainer.is_global_zero else RankZeroRefused)(
            f"data.source={pages.source!r} changed while the run listed it: its ranks found different files. Every "
            "committed part stays; rerun once the folder is still (each part's inputs are checked on resuming)"
        )


def _join(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}" if "://" in folder else os.path.join(folder, name)


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
    # What the writer hands over: the plan (with the options the end needs), what this rank did, the run's parts.
    plan, mine, parts = writer.plan, writer.close(), writer.parts
    if plan is None or mine is None or parts is None:
        raise RuntimeError("finalize_run: the writer has not written this run (was Trainer.predict run with it?)")
    options = plan.output
    consume(plan.rank)
    strategy = trainer.strategy
    metrics = module.compute_metrics() if hasattr(module, "compute_metrics") else {}
    # The strategy's device, not the module's: Lightning moved the module to the CPU at the end of the loop.
    counts = torch.tensor([mine.seen, mine.steady_images_per_second], dtype=torch.float64, device=strategy.root_device)
    seen_sum, steady = strategy.reduce(counts, reduce_op="sum").tolist()  # every rank's steady rate, summed
    strategy.barrier("lit_infer_finalize")  # every rank has committed its parts
    try:
        check_ranks_listed_alike(trainer, parts.units)
    except RunError:
        if plan.rank == 0:
            release(plan.output_dir)
        raise
    gather = not options.shared_filesystem and plan.world_size > 1 and not parts.out.remote
    if gather:
        from lit_infer.output.gather import gather_parts  # torch.distributed only when asked for

        gather_parts(parts.out, parts.committed(), plan.rank)
    summary: dict[str, Any] = {}
    stats = {
        "num_processed_this_run": round(seen_sum),
        "wall_seconds": mine.wall_seconds,
        "steady_images_per_second": steady,
        "metrics": metrics,
        "world_size": plan.world_size,
        "strategy": type(strategy).__name__,
    }
    if plan.rank == 0:
        # A module's files made from the merged ones (ObjectDetector's COCO results); most modules make none.
        derive = getattr(module, "derived_outputs", None)
        try:
            summary = parts.finish(stats, lambda failed, n: not over_budget(failed, n, options.max_errors), derive)
        except OSError as exc:  # the merge writes to temp names: the parts stay for the rerun
            release(plan.output_dir)
            raise RunError(output_error(plan.output_dir, exc, resumable=True)) from None
        except BaseException:  # a refusal: nothing was published, the parts stay, the folder is free again
            release(plan.output_dir)
            raise
        rank_zero_info(report(plan.output_dir, summary))
    summary = strategy.broadcast(summary, src=0)
    writer.summary = summary
    release(plan.output_dir)
    if gather and plan.rank != 0:
        parts.remove_gathered()  # rank 0 holds and has merged a copy (after the broadcast: it is done with them)
    if plan.rank == 0:
        from lit_infer.report import report_at_end  # never fails the run: at worst one line says why

        rank_zero_info(report_at_end(plan.output_dir))
    if over_budget(summary["num_failed"], summary["num_items"], options.max_errors):
        errors = summary["files"].get("errors", "part-*.errors.jsonl")
        where = f"each one is listed in {_join(plan.output_dir, errors)}"
        raise too_many_errors(summary["num_failed"], summary["num_items"], options.max_errors, where)
    return summary
