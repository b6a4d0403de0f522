"""The plan of a run: what was decided before Lightning's predict loop, handed to each part that needs it.

Made in one place (:func:`lit_infer.lifecycle.plan.plan_run`) and given to the data module, the module and the
writer (their ``use_plan``), so that none of them reads another's state through the trainer. This file holds only
the data: it sits at the bottom of the import graph so that every part can name it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class DataInfo:
    """What the data tells the model: class names of a folder source, labels for metrics, how it decodes.

    Attributes:
        source: The data source as the user gave it (for messages naming ``data.source``).
        class_names: Class names the data's labels index (sub-folder names), or ``None``.
        labels: The labels of the inputs (``NO_LABEL`` where unknown), or ``None`` when no input has one known
            before reading (tar shards carry theirs with the items).
        decoder: The data's Pillow decoder, reused by device decoding for files it cannot take.
        labels_from_folders: ``True`` when ``class_names`` are class sub-folder names (labels only if they are the
            model's classes, or the user said so: ``data.inputs.labels_from_folders``).
        folders_are_labels: ``data.inputs.labels_from_folders`` as set (``None``: decide from the model's class names).
        decode: ``data.decoding.decode`` (``cpu`` or ``gpu``), for the start line's exact-or-not.
        num_items: The inputs of the whole source when known before reading them (a list, a listed folder, a table,
            Parquet footers), else ``None`` (tar shards): the progress bar's total.
        description: The source in plain words (``3 tar shards``, ``a list of 2,000 images``).
    """

    source: str | None = None
    class_names: list[str] | None = None
    labels: np.ndarray | None = None
    decoder: Any = None
    labels_from_folders: bool = False
    folders_are_labels: bool | None = None
    decode: str = "cpu"
    num_items: int | None = None
    description: str | None = None

    @property
    def pixels(self) -> bool | str:
        """Whether the network sees the reference's pixels (``data.decoding.exact`` on the CPU path), or what it sees instead."""
        if self.decode == "gpu":
            return "data.decoding.decode=gpu: nvJPEG and GPU resizing"
        return self.decoder is None or bool(getattr(self.decoder, "exact", True))


@dataclass
class ModelProbe:
    """The model as the data's tuning may measure it (``batch_size: auto``, the CPU thread split).

    Attributes:
        module: The prediction module (its ``net`` runs; read when tuning, once it is on its device).
        forward_context: The precision's forward context (autocast, bf16), as the run will use it.
        alone_on_cpu: One process predicting on the CPU: only then do the decoders and the model share its cores.
    """

    module: Any
    forward_context: Callable[[], Any]
    alone_on_cpu: bool


@dataclass
class OutputOptions:
    """The writer's options (``writer.*``, see :class:`~lit_infer.PredictionWriter`), as the plan and finalize read
    them: the writer hands them over once, and nobody reads the writer's attributes."""

    output_dir: str | None = None
    format: str = "csv"
    filename: str = "predictions"
    overwrite: bool = False
    fsync: bool = True
    max_errors: int | float | None = None
    shared_filesystem: bool = True
    work_dir: str | None = None
    layout: str = "single"
    storage_options: dict[str, Any] | None = None


@dataclass
class Plan:
    """One run's decisions, made once per rank before the loop (rank 0 decides, every rank gets the same answer).

    Attributes:
        attempt: This attempt's number (1 for a fresh run); names this rank's stage files.
        fingerprint: Everything that decides the outputs; a resume must match it.
        complete: The output folder already holds this run, finished: nothing to predict.
        output_dir: Where the final files go.
        work_dir: Where the stages (and the parts of ``layout: single``) live until the merge.
        done_units: Ordinals of the units an earlier attempt committed.
        done_positions: Unit ordinal -> positions an earlier attempt staged in a unit it did not finish.
        rank: This process's global rank.
        world_size: Processes in the run.
        device: The strategy's root device on this rank (metrics are synced there at the end).
        preprocessing: The resolved preprocessing, as written into the fingerprint.
        data: What the data tells the model.
        dataloader_workers: The strategy's budget of decoding workers per process, or ``None`` (then cores/procs).
        probe: The model, for the data's measured tuning; ``None`` when nothing may be measured.
        output: The writer's options.
        run_id: Drawn by rank 0 for this attempt alone: the key of its unit leases (data/leases.py).
    """

    attempt: int
    fingerprint: dict[str, Any]
    complete: bool
    output_dir: str
    work_dir: str
    rank: int = 0
    world_size: int = 1
    device: str = "cpu"
    preprocessing: dict[str, Any] = field(default_factory=dict)
    data: DataInfo = field(default_factory=DataInfo)
    dataloader_workers: int | None = None
    probe: ModelProbe | None = None
    done_units: set[int] = field(default_factory=set)
    done_positions: dict[int, np.ndarray] = field(default_factory=dict)
    output: OutputOptions = field(default_factory=OutputOptions)
    run_id: str = ""


def fingerprint_digest(fingerprint: Mapping[str, Any]) -> str:
    """What a run's parts and summary record of its fingerprint (a resume compares it)."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


def exact_pixels(data: Mapping[str, Any]) -> bool | None:
    """Whether the network saw the reference's pixels, from a fingerprint's ``data``: ``data.decoding.exact`` and
    CPU decoding (``None``: not recorded)."""
    decoding = data.get("decoding", data)  # runs before data.decoding recorded it at the top of data
    if "exact" not in decoding:
        return None
    return bool(decoding["exact"]) and decoding.get("decode", "cpu") == "cpu"
