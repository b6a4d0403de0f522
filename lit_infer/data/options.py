"""The data module's options, grouped as a config reads them: ``data.inputs``, ``data.reading``, ``data.decoding``,
``data.loader``. Small frozen dataclasses whose attribute docstrings are ``--help``; each checks its own values and
names a bad one by its key as typed (``data.reading.io_retries``).

Example::

    ImageDataModule("photos/", decoding=Decoding(exact=False), reading=Reading(io_retries=5))
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

from lit_infer.data.identity import IDENTITIES
from lit_infer.data.sources import IMAGE_EXTENSIONS
from lit_infer.data.units import ITEM_STRIDE
from lit_infer.errors import ConfigError

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own default guard: about 0.25 GB of RGB at 24 bits per pixel.


def _whole(key: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(key, value, f"must be a whole number, at least {low}", f"Set {low} or more")
    if high is not None and value > high:
        raise ConfigError(key, value, f"must be at most {high}", f"Set {high} or less")


@dataclass(frozen=True)
class Inputs:
    """What the source's inputs are: which files, which columns, their labels, how they are cut into units.

    Attributes:
        extensions: File endings a folder source (or a tar shard's members) keeps (case-insensitive).
        labels_from_folders: Whether class sub-folder names are labels (for metrics). ``None``: only when each is
            among the model's ``class_names`` (matched by name); otherwise no labels, and the run says why.
            ``true``: always (by name, or in sorted order when the model names no classes). ``false``: never.
        path_column: Column of a ``.csv`` source that holds the image paths (of Parquet files: their keys).
        label_column: Column of a ``.csv`` source that holds labels (class indices or names). The default
            ``label`` is used when the table has it; any other name must be one of its columns.
        image_column: Parquet column of image bytes (binary, or HF's ``{bytes, path}``). ``None``: the only one.
        unit_size: Inputs per unit of work of a folder, list or table (tar shards and Parquet files are units of
            their own; see docs/scaling.md). ``None``: 4096, or fewer for a source of under 65,536 inputs, so that
            it still makes 16 units for the workers to share.
    """

    extensions: tuple[str, ...] = IMAGE_EXTENSIONS
    labels_from_folders: bool | None = None
    path_column: str = "path"
    label_column: str | None = "label"
    image_column: str | None = None
    unit_size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "extensions", tuple(self.extensions))  # a YAML list, as the default's tuple
        if self.unit_size is not None:
            _whole("data.inputs.unit_size", self.unit_size, 1, ITEM_STRIDE - 1)


@dataclass(frozen=True)
class Reading:
    """How each input is read: where its path may lead, how a resume knows it, retries, time limits, object stores.

    Attributes:
        path_root: Folder the relative entries of a list or table are read from, and that every entry, and every
            symlinked file of a folder, must stay inside. ``None``: the list's own folder for relative entries;
            absolute entries and a folder's symlinks to files elsewhere are then not restricted (only regular files
            are ever read).
        path_policy: ``reject``: entries with ``..``, or resolving outside ``path_root`` (absolute paths, escaping
            symlinks), become error records and are never read. ``allow``: read whatever the list names.
        file_identity: How each unit names what it read, as a worker starts it (recorded with its part; a resume
            checks the units it keeps, see :mod:`lit_infer.data.identity`): ``stat``: each input's size and
            modification time (one ``stat`` per file in the worker; objects behind a URL: size and ETag, from the
            listing or a ``HEAD``); ``content``: a SHA-256 of each local file's bytes (read once more). A committed
            unit whose inputs changed refuses the resume and names the file; an unfinished one is redone whole.
        io_retries: Extra attempts to read a file after a transient I/O error before it counts as failed.
        read_timeout: Seconds one file's read may take (retries included) before it becomes that item's error record
            and the worker moves on: a stuck network mount costs one item, not the run. ``None``: no bound.
        storage_options: fsspec options for URL sources, e.g. ``{"anon": true}``; else ``AWS_*`` from the environment.
    """

    path_root: str | os.PathLike | None = None
    path_policy: Literal["reject", "allow"] = "reject"
    file_identity: Literal["stat", "content"] = "stat"
    io_retries: int = 2
    read_timeout: float | None = 60.0
    storage_options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.path_root is not None:
            object.__setattr__(self, "path_root", os.fspath(self.path_root))
        if self.path_policy not in ("reject", "allow"):
            raise ConfigError("data.reading.path_policy", self.path_policy, "unknown policy", "Use 'reject' or 'allow'")
        if self.file_identity not in IDENTITIES:
            raise ConfigError(
                "data.reading.file_identity", self.file_identity, "unknown", f"Use one of {list(IDENTITIES)}"
            )
        _whole("data.reading.io_retries", self.io_retries, 0)
        if self.read_timeout is not None and not self.read_timeout > 0:
            raise ConfigError(
                "data.reading.read_timeout", self.read_timeout, "must be above 0", "Give seconds, or null for no bound"
            )


@dataclass(frozen=True)
class Decoding:
    """How bytes become the network's pixels.

    Attributes:
        exact: The reference's pixels, bit for bit (torchvision's ``Resize`` + ``CenterCrop``, timm's transform for
            timm models). ``false``: faster, a few levels off: crop-box resize, JPEG draft decoding (BENCHMARKS.md).
            ``summary.json`` records which (``exact_pixels``); ``decode: gpu`` is never exact.
        max_pixels: Images with more pixels are refused as an error record (decompression-bomb guard).
        decode: ``cpu``: Pillow in the workers. ``gpu``: workers read bytes; JPEGs decode on the GPU (nvJPEG), other
            files (PNG, CMYK or rotated JPEGs) with Pillow in the workers.
        cache_dir: Keep the preprocessed uint8 pixels of this source under this folder, one file per unit of work,
            so later runs over the same images (other checkpoints, same preprocessing) skip decoding. Needs
            ``N x crop x crop x 3`` bytes of disk (150 kB per image at 224). See ``lit_infer/data/cache.py``.
    """

    exact: bool = True
    max_pixels: int = DEFAULT_MAX_PIXELS
    decode: Literal["cpu", "gpu"] = "cpu"
    cache_dir: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        _whole("data.decoding.max_pixels", self.max_pixels, 1)
        if self.decode not in ("cpu", "gpu"):
            raise ConfigError("data.decoding.decode", self.decode, "unknown decoder", "Use 'cpu' or 'gpu'")
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", os.fspath(self.cache_dir))
            if self.decode != "cpu":
                raise ConfigError(
                    "data.decoding.cache_dir",
                    self.cache_dir,
                    "caches CPU-decoded pixels only",
                    "Use data.decoding.decode=cpu with a cache",
                )


@dataclass(frozen=True)
class Loader:
    """How batches reach the model: the DataLoader's settings, and the model's threads beside its workers.

    Attributes:
        pin_memory: Page-locked batches for faster, asynchronous copies to the GPU. ``None``: on when the run's plan
            predicts on CUDA.
        prefetch_factor: Batches each worker prepares ahead.
        persistent_workers: Keep workers alive between runs of the same Trainer.
        model_threads: Intra-op threads of the process that runs the model, when it runs on the CPU next to decoding
            workers. ``auto``: one thread when decoding an image costs more CPU than the model (data-bound, where
            more threads only fight the decoders for the cores), else most of the cores. ``None``: torch's setting.
            Set for the predict only: the process's own count comes back when it ends or fails.
    """

    pin_memory: bool | None = None
    prefetch_factor: int = 4
    persistent_workers: bool = True
    model_threads: int | Literal["auto"] | None = "auto"

    def __post_init__(self) -> None:
        _whole("data.loader.prefetch_factor", self.prefetch_factor, 1)
        if self.model_threads not in ("auto", None):
            _whole("data.loader.model_threads", self.model_threads, 1)


GROUPS: dict[str, type] = {"inputs": Inputs, "reading": Reading, "decoding": Decoding, "loader": Loader}
"""``data.<group>`` -> its options: where a key of the flat ``data:`` section of older configs now lives."""


def check_options_fit(kind: str, source: str, inputs: Inputs, reading: Reading) -> None:
    """Options that mean nothing for this kind of source are refused by name, never silently ignored."""
    shards = kind in ("tar", "parquet")
    refused = {
        "inputs.labels_from_folders": (
            inputs.labels_from_folders,
            inputs.labels_from_folders is True and kind != "folder",
        ),
        "inputs.path_column": (inputs.path_column, inputs.path_column != "path" and kind not in ("table", "parquet")),
        "inputs.image_column": (inputs.image_column, inputs.image_column is not None and kind != "parquet"),
        "inputs.unit_size": (inputs.unit_size, inputs.unit_size is not None and shards),
        "inputs.extensions": (
            inputs.extensions,
            inputs.extensions != IMAGE_EXTENSIONS and kind not in ("folder", "tar"),
        ),
        "reading.path_root": (reading.path_root, reading.path_root is not None and shards),
        "reading.path_policy": (reading.path_policy, reading.path_policy != "reject" and shards),
        # Shards are named by path: one that failed and was repaired is retried by the same run.
        "reading.file_identity": (reading.file_identity, reading.file_identity != "stat" and shards),
    }
    for key, (value, bad) in refused.items():
        if bad:
            what = {"folder": "a folder", "table": "a .csv table", "list": "a .txt list"}.get(kind, f"{kind} files")
            raise ConfigError(f"data.{key}", value, f"means nothing for {what} ({source!r})", "Remove it")
