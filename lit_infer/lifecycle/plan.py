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
from functools import partial
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.utilities import rank_zero_info

from lit_infer.errors import ConfigError, RunError
from lit_infer.lifecycle.fingerprint import run_fingerprint
from lit_infer.lifecycle.parts_run import PartsRun
from lit_infer.lifecycle.resume import decide
from lit_infer.output.disk import output_error
from lit_infer.output.lock import claim, release
from lit_infer.plan import DataInfo, ModelProbe, OutputOptions, Plan
from lit_infer.strategies.cpu_multiprocess import CPUMultiprocessStrategy

WORK_DIR = ".lit_infer"
"""Inside the output directory: shards, manifests and the run's fingerprint, until the merge succeeds."""


def default_output_dir(source: str | None) -> str:
    """``outputs/<name of the data source>``: a folder ``photos/`` gives ``outputs/photos``, as do the globs
    ``photos/*.jpg`` and ``photos/{000..009}.tar`` (named by the folder before the pattern)."""
    fixed = re.split(r"[*?[{]", source)[0] if source else ""
    if fixed != source:
        fixed = os.path.dirname(fixed)
    name = os.path.splitext(os.path.basename(os.path.normpath(fixed or "predictions")))[0]
    return os.path.join("outputs", name)


def work_dir_for(output_dir: str, work_dir: str | None) -> str:
    """The folder for shards: the one given (``~`` and ``$VARS`` expanded), else ``<output_dir>/.lit_infer``."""
    if work_dir is not None:
        return os.path.expanduser(os.path.expandvars(work_dir))
    return os.path.join(output_dir, WORK_DIR)


def plan_run(
    trainer: L.Trainer, module: L.LightningModule, datamodule: Any, options: OutputOptions
) -> tuple[Plan, PartsRun | None]:
    """The run's plan, made where the writer's ``setup`` hook calls it (the first moment the process group exists),
    and, for a source read in units, its parts (``layout: parts`` asks the data module to read in units)."""
    parts = _parts_run(datamodule, options)
    check_parts_reach_rank_zero(parts, options, trainer.world_size)
    output: dict[str, Any] = {"format": options.format, "filename": options.filename}
    output_dir = options.output_dir
    if parts is not None:
        output["layout"] = options.layout
        output_dir = parts.output_dir
    plan = make_plan(
        trainer, module, datamodule, output_dir, options.work_dir, output, options.overwrite, parts, options
    )
    return plan, parts


def check_parts_reach_rank_zero(parts: PartsRun | None, options: OutputOptions, world_size: int) -> None:
    """Parts are committed where every rank writes them; finalize (and the merge of ``layout: single``) on rank 0
    reads every unit's record. Without a shared filesystem only an object store is seen by all ranks: local parts
    are not gathered over the process group (shards are), so such a run is refused rather than failing at its end."""
    if parts is None or options.shared_filesystem or world_size == 1 or (parts.out.remote and parts.layout == "parts"):
        return
    raise ConfigError(
        "writer.shared_filesystem",
        False,
        f"a source read in units commits its parts in {parts.out.root!r}, which the other ranks' nodes do not see "
        "(parts are not gathered over the process group)",
        "Give an output_dir every rank sees: a shared folder, or an object-store URL with writer.layout=parts",
    )


def _parts_run(datamodule: Any, options: OutputOptions) -> PartsRun | None:
    if options.layout == "parts" and getattr(datamodule, "units", None) is None:
        if not hasattr(datamodule, "use_units"):
            raise ConfigError(
                "writer.layout", "parts", f"{type(datamodule).__name__} does not read in units", "Use layout=single"
            )
        datamodule.use_units()
    if getattr(datamodule, "units", None) is None:
        return None
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
        datamodule.units,
    )


def make_plan(
    trainer: L.Trainer,
    module: L.LightningModule,
    datamodule: Any,
    output_dir: str | None,
    work_dir: str | None,
    output: dict[str, Any],
    overwrite: bool,
    parts: PartsRun | None = None,
    options: OutputOptions | None = None,
) -> Plan:
    """Decide the run and hand the plan to the data module and the module (their ``use_plan``, when they have one).

    A collective: every rank calls it (rank 0 prepares the folders and decides; the others receive its answer).

    Args:
        output_dir: ``writer.output_dir``; ``None``: :func:`default_output_dir` of the data's source.
        work_dir: ``writer.work_dir``.
        output: The output options that change what is written (format, file name), for the fingerprint.
        overwrite: ``writer.overwrite``: remove an earlier run's outputs first.
        parts: A source read in units: resume is decided per unit by its part records, not by shards.
        options: The writer's options the end of the run needs (carried by the plan to finalize).
    """
    dataset = getattr(datamodule, "dataset", None)
    if dataset is None:
        raise ConfigError(
            "data",
            type(datamodule).__name__,
            "PredictionWriter needs a data module with a `dataset`",
            "Use lit_infer.ImageDataModule or give your data module a dataset attribute",
        )
    info = datamodule.data_info() if hasattr(datamodule, "data_info") else DataInfo()
    output_dir = output_dir if output_dir is not None else default_output_dir(info.source)
    work_dir = work_dir_for(output_dir, work_dir)
    # Units: not known before they are read. A source read with dense indices says how many (it is iterable).
    num_items = (datamodule.num_items if hasattr(datamodule, "num_items") else len(dataset)) if parts is None else 0
    # Precision changes every score; channels_last and compile change them at rounding level, enough to break a
    # byte-identical resume.
    settings = {"precision": str(trainer.precision)}
    settings.update({k: getattr(module, k) for k in ("channels_last", "compile") if hasattr(module, k)})
    fingerprint = run_fingerprint(module, datamodule, num_items, output, settings)
    strategy = trainer.strategy
    decision: dict[str, Any] = {}
    lock = parts is None or not parts.out.remote  # an object store has no folder to lock
    if trainer.is_global_zero:
        decide_run = parts.prepare if parts is not None else partial(decide, output_dir, work_dir, num_items=num_items)
        try:  # the folder is locked before anything in it is read or changed; every rank gets one answer
            if lock:
                claim(output_dir)
            decision = decide_run(fingerprint, overwrite=overwrite)
        except (ConfigError, RunError) as exc:
            decision = {"error": str(exc)}
        except OSError as exc:
            decision = {"error": output_error(output_dir, exc)}
        decision["run_id"] = uuid.uuid4().hex  # this attempt's own lease counter (data/leases.py)
    decision = strategy.broadcast(decision, src=0)
    if "error" in decision:
        if lock:
            release(output_dir)
        raise RunError(decision["error"])
    done_units, done_positions = parts.start(decision, fingerprint, trainer.global_rank) if parts else (set(), {})
    work_dir = parts.work_dir if parts is not None else work_dir
    os.makedirs(work_dir, exist_ok=True)  # rank 0 made it, unless this rank has its own disk
    precision = trainer.precision_plugin
    plan = Plan(
        attempt=int(decision["attempt"]),
        run_id=decision["run_id"],
        fingerprint=fingerprint,
        done=np.asarray(decision.get("done", []), dtype=np.int64),
        done_units=done_units,
        done_positions=done_positions,
        complete=bool(decision["complete"]),
        num_items=num_items,
        output_dir=output_dir,
        work_dir=work_dir,
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
        output=options or OutputOptions(),
    )
    if parts is None:  # a parts run announced its units itself
        _announce(plan)
    if hasattr(datamodule, "use_plan"):
        datamodule.use_plan(plan)
    elif len(plan.skip):
        raise RunError(
            f"{type(datamodule).__name__} cannot skip finished items; use writer.overwrite=true to start again"
        )
    if hasattr(module, "use_plan"):
        module.use_plan(plan)
    return plan


def _announce(plan: Plan) -> None:
    if plan.complete:
        rank_zero_info(f"lit-infer: {plan.output_dir} is already complete ({plan.num_items} inputs); nothing to do")
    elif len(plan.done):
        rank_zero_info(
            f"lit-infer: resuming {plan.output_dir}: {len(plan.done)} of {plan.num_items} inputs already done"
        )
