"""Plan: the one place where a run decides, before Lightning's predict loop, what it will do.

On every rank, once the process group exists: the fingerprint of model, data and output options; rank 0's
decision to start, resume or refuse (broadcast, so every rank acts on one answer); the output paths; the resolved
preprocessing; what the data tells the model; the strategy's worker budget. The :class:`~lit_infer.plan.Plan` is then
handed to the data module, the module and the writer.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from typing import Any

import lightning as L

from lit_infer.errors import ConfigError, RankZeroRefused, RunError
from lit_infer.lifecycle.fingerprint import differences, run_fingerprint
from lit_infer.lifecycle.parts_run import PartsRun
from lit_infer.output.disk import output_error
from lit_infer.output.lock import claim, release
from lit_infer.plan import DataInfo, ModelProbe, OutputOptions, Plan
from lit_infer.strategies.cpu_multiprocess import CPUMultiprocessStrategy

WORK_DIR = ".lit_infer"
"""Inside the output directory: the stages and, for ``layout: single``, the parts, until the merge succeeds."""


def default_output_dir(source: str | None) -> str:
    """``outputs/<name of the data source>``: a folder ``photos/`` gives ``outputs/photos``, as do the globs
    ``photos/*.jpg`` and ``photos/{000..009}.tar`` (named by the folder before the pattern)."""
    fixed = re.split(r"[*?[{]", source)[0] if source else ""
    if fixed != source:
        fixed = os.path.dirname(fixed)
    name = os.path.splitext(os.path.basename(os.path.normpath(fixed or "predictions")))[0]
    return os.path.join("outputs", name)


def work_dir_for(output_dir: str, work_dir: str | None) -> str:
    """The work folder: the one given (``~`` and ``$VARS`` expanded), else ``<output_dir>/.lit_infer``."""
    if work_dir is not None:
        return os.path.expanduser(os.path.expandvars(work_dir))
    return os.path.join(output_dir, WORK_DIR)


def check_parts_reach_rank_zero(parts: PartsRun, options: OutputOptions, world_size: int) -> None:
    """Without a shared filesystem, the parts of ``layout: single`` (in each rank's work folder) are gathered to rank
    0 over the process group for the merge, and parts in an object store are seen by every rank. The parts of
    ``layout: parts`` in a local folder are the outputs themselves, spread over nodes: refused at the start rather
    than at the end."""
    if options.shared_filesystem or world_size == 1 or parts.layout == "single" or parts.out.remote:
        return
    raise ConfigError(
        "writer.shared_filesystem",
        False,
        f"writer.layout=parts commits its parts in {parts.out.root!r}, which the other ranks' nodes do not see",
        "Give an output_dir every rank sees (a shared folder or an object-store URL), or use writer.layout=single",
    )


def check_ranks_agree(trainer: L.Trainer, fingerprint: dict[str, Any]) -> None:
    """Every rank must build the run rank 0 builds (a network without weights and without a seed is another network
    on each rank): compared before rank 0 touches the output folder, refused by every rank, printed by rank 0."""
    import torch.distributed as dist

    if trainer.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, fingerprint)
    for rank, other in enumerate(gathered[1:], start=1):
        if changed := differences(gathered[0], other):
            raise (RunError if trainer.is_global_zero else RankZeroRefused)(
                f"rank {rank} builds another run than rank 0 ({'; '.join(changed[:3])}): every rank must predict with "
                "the same network on the same inputs. Give the network's weights (model.weights), or set "
                "seed_everything for a network without them"
            )


def _parts_run(datamodule: Any, options: OutputOptions) -> PartsRun:
    if getattr(datamodule, "listing", None) is None or getattr(datamodule, "dataset", None) is None:
        raise ConfigError(
            "data",
            type(datamodule).__name__,
            "PredictionWriter needs a data module that reads its source in units of work (`listing` and `dataset`)",
            "Use lit_infer.ImageDataModule, or subclass it",
        )
    out = options.output_dir or default_output_dir(getattr(datamodule, "source", None))
    work_dir = os.path.expanduser(os.path.expandvars(options.work_dir)) if options.work_dir is not None else None
    return PartsRun(
        out,
        options.layout,
        options.format,
        options.filename,
        work_dir,
        options.storage_options,
        options.fsync,
        datamodule.listing,
        getattr(datamodule.dataset, "version", None),
    )


def plan_run(
    trainer: L.Trainer, module: L.LightningModule, datamodule: Any, options: OutputOptions
) -> tuple[Plan, PartsRun]:
    """Decide the run and hand the plan to the data module and the module (their ``use_plan``, when they have one);
    return it with the run's parts (every source is read in units, and every layout commits a part per unit).

    Called where the writer's ``setup`` hook runs, the first moment the process group exists. A collective: every
    rank calls it (rank 0 prepares the folders and decides per unit, from the parts' commit records; the others
    receive its answer).

    Args:
        options: The writer's options (carried by the plan to finalize); the format, file name and layout go into
            the fingerprint.
    """
    parts = _parts_run(datamodule, options)
    output = {"format": options.format, "filename": options.filename, "layout": options.layout}
    info = datamodule.data_info() if hasattr(datamodule, "data_info") else DataInfo()
    # Precision changes every score; channels_last and compile change them at rounding level, enough to break a
    # byte-identical resume.
    settings = {"precision": str(trainer.precision)}
    settings.update({k: getattr(module, k) for k in ("channels_last", "compile") if hasattr(module, k)})
    fingerprint = run_fingerprint(module, datamodule, info.num_items or 0, output, settings)
    check_ranks_agree(trainer, fingerprint)
    strategy = trainer.strategy
    decision: dict[str, Any] = {}
    output_dir = parts.output_dir
    lock = not parts.out.remote  # an object store has no folder to lock
    if trainer.is_global_zero:
        try:  # the folder is locked before anything in it is read or changed; every rank gets one answer
            check_parts_reach_rank_zero(parts, options, trainer.world_size)
            if lock:
                claim(output_dir)
            decision = parts.prepare(fingerprint, overwrite=options.overwrite)
        except (ConfigError, RunError) as exc:
            decision = {"error": str(exc)}
        except OSError as exc:
            decision = {"error": output_error(output_dir, exc)}
        decision["run_id"] = uuid.uuid4().hex  # this attempt's own lease counter (data/leases.py)
    decision = strategy.broadcast(decision, src=0)
    if "error" in decision:
        if lock:
            release(output_dir)
        raise (RunError if trainer.is_global_zero else RankZeroRefused)(decision["error"])
    done_units, done_positions = parts.start(decision, fingerprint, trainer.global_rank)
    precision = trainer.precision_plugin
    plan = Plan(
        attempt=int(decision["attempt"]),
        run_id=decision["run_id"],
        fingerprint=fingerprint,
        complete=bool(decision["complete"]),
        output_dir=output_dir,
        work_dir=parts.work_dir,
        done_units=done_units,
        done_positions=done_positions,
        rank=trainer.global_rank,
        world_size=trainer.world_size,
        device=str(strategy.root_device),
        preprocessing=fingerprint["model"].get("preprocessing", {}),
        data=info,
        # Only the strategy that splits the cores between processes has a budget.
        dataloader_workers=strategy.dataloader_workers if isinstance(strategy, CPUMultiprocessStrategy) else None,
        probe=ModelProbe(
            module,
            precision.forward_context if precision is not None else contextlib.nullcontext,
            alone_on_cpu=strategy.root_device.type == "cpu" and trainer.world_size == 1,
        ),
        output=options,
    )
    if hasattr(datamodule, "use_plan"):
        datamodule.use_plan(plan)
    elif plan.complete or plan.done_units or plan.done_positions:
        raise RunError(
            f"{type(datamodule).__name__} cannot skip finished items; use writer.overwrite=true to start again"
        )
    if hasattr(module, "use_plan"):
        module.use_plan(plan)
    return plan, parts
