"""The data module's side of a source read in units: plan it, describe it (fingerprint), load it (DataLoader).

Functions of an :class:`~lit_infer.data.datamodule.ImageDataModule`, kept apart from the whole-listing path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

import lit_infer.data.unit_plan as unit_plan
from lit_infer.data.decode import Decoder, init_worker
from lit_infer.data.sources import check_relative_base
from lit_infer.data.unit_dataset import UnitDataset
from lit_infer.data.units import check_unit_size, read_range, units_digest
from lit_infer.errors import ConfigError


def init_state(dm: Any, unit_size: int | None, image_column: str | None, storage_options: dict | None) -> None:
    """The data module's settings and state for reading in units (its ``__init__`` arguments of that name)."""
    if unit_size is not None:
        check_unit_size(unit_size)
    dm.unit_size, dm.image_column, dm.storage_options = unit_size, image_column, dict(storage_options or {})
    dm.source_digest = None
    dm.units = None  # the units of work, when the source is read in units


def use_units(dm: Any) -> None:
    """Read the source in units of work (the writer asks for ``layout: parts``); a no-op if it already is."""
    if dm.units is None:
        plan(dm)


def plan(dm: Any, kind: str | None = None) -> None:
    """Cut ``dm.source`` into units and give ``dm`` a :class:`UnitDataset` over them."""
    kind = kind or unit_plan.unit_kind(dm.source, dm.storage_options)
    if kind is None:
        raise ConfigError(
            "data.source",
            dm.source,
            "a folder or .csv table is read whole, not in units",
            "Use writer.layout=single, or give a .txt list, tar shards or Parquet files",
        )
    dm.units, dm.source_digest = unit_plan.plan_units(dm.source, kind, unit_size(dm), dm.storage_options)
    decoder = Decoder(dm.preprocessing, dm.max_pixels, dm.exact, dm.io_retries, read_timeout=dm.read_timeout)
    dm._decoder = decoder
    read = read_options(dm)
    if kind == "list" and "://" not in dm.source:  # a list written relative to the working directory: refused
        check_relative_base(read_range(dm.units[0]), read["list_folder"], dm.source)
    dm.dataset = UnitDataset(
        dm.units, decoder, 1, storage_options=dm.storage_options, read=read, decode=dm.decode == "cpu"
    )


def plan_if_units(dm: Any) -> None:
    """Units for shards, Parquet and URLs, and for a local list of :data:`~unit_plan.LARGE_LIST` entries or more
    (or with ``unit_size`` set); a smaller local list keeps the whole listing of a ``layout: single`` run."""
    kind = unit_plan.unit_kind(dm.source, dm.storage_options)
    if kind is None:
        return
    plan(dm, kind)
    if kind == "list" and dm.unit_size is None and "://" not in dm.source:
        if dm.units[-1].stop < unit_plan.LARGE_LIST:
            dm.units = dm.dataset = None
        else:  # said once, not guessed silently
            rank_zero_info(
                f"lit-infer: reading the {dm.units[-1].stop:,}-entry list in units of {unit_size(dm):,} entries "
                "(data.unit_size), without listing it first"
            )


def unit_size(dm: Any) -> int:
    return dm.unit_size or unit_plan.default_unit_size(dm.batch_size)


def read_options(dm: Any) -> dict[str, Any]:
    # As a whole-list source joins them (``Path(list).parent``): relative entries stay relative, so a part's ``path``
    # column is the single-file run's, byte for byte.
    folder = dm.source.rsplit("/", 1)[0] if "://" in dm.source else str(Path(dm.source).parent)
    return {
        "image_column": dm.image_column,
        "label_column": dm.label_column,
        "key_column": dm.path_column,
        "extensions": list(dm.extensions),
        "list_folder": dm.path_root or folder,  # where relative entries are read from
        "path_root": dm.path_root,
        "path_policy": dm.path_policy,
    }


def fingerprint(dm: Any) -> dict[str, Any]:
    """The units (ids, kinds, ranges), the list's bytes and every reading option; not every image's bytes."""
    return {
        "source": dm.source if "://" in dm.source else os.path.abspath(dm.source),
        "units": len(dm.units),
        "units_sha256": units_digest(dm.units),
        "list_sha256": dm.source_digest,
        "preprocessing": dm.preprocessing.to_dict(),
        "exact": dm.exact,
        "decode": dm.decode,
        "max_pixels": dm.max_pixels,
        "read": read_options(dm),
    }


def loader(dm: Any, dataset: UnitDataset, workers: int, pin_memory: bool, rank: int, world_size: int) -> DataLoader:
    """This rank's DataLoader: the units the run's plan has not seen committed, split between its workers."""
    assert isinstance(dm.batch_size, int)
    plan = dm.plan
    done = {u.ordinal for u in dm.units} if plan is not None and plan.complete else plan.done_units if plan else set()
    positions = plan.done_positions if plan is not None else {}
    dataset.units = [u for u in dm.units if u.ordinal not in done]
    dataset.done = {u.id: positions[u.ordinal] for u in dataset.units if u.ordinal in positions}
    dataset.batch_size, dataset.rank, dataset.world_size = dm.batch_size, rank, world_size
    # Batches come whole from the workers (a batch never spans two units): no sampler, no collate here.
    return DataLoader(
        dataset,
        batch_size=None,
        collate_fn=whole_batch,
        num_workers=workers,
        worker_init_fn=init_worker,
        pin_memory=pin_memory,
        prefetch_factor=dm.prefetch_factor if workers > 0 else None,
        persistent_workers=dm.persistent_workers and workers > 0,
    )


def whole_batch(batch: Any) -> Any:
    return batch
