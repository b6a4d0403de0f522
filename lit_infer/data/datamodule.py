"""ImageDataModule: a source of images -> batches of uint8 pixels, decoded in parallel DataLoader workers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from lit_infer.data.cache import UnitCache
from lit_infer.data.dataset import UnitDataset
from lit_infer.data.decode import DEFAULT_MAX_PIXELS, Decoder, init_worker
from lit_infer.data.gpu_decode import check_gpu_filter
from lit_infer.data.identity import labels_digest
from lit_infer.data.leases import UnitLeases
from lit_infer.data.reading import check_reader_settings
from lit_infer.data.sources import (
    IMAGE_EXTENSIONS,
    SourcePlan,
    list_folder,
    plan_source,
    source_kind,
)
from lit_infer.data.storage import is_url
from lit_infer.data.tune import tune
from lit_infer.data.units import Unit, check_unit_size, is_pattern
from lit_infer.errors import ConfigError
from lit_infer.plan import DataInfo, Plan
from lit_infer.preprocessing import Preprocessing
from lit_infer.records import NO_LABEL
from lit_infer.system import available_cores


class ImageDataModule(L.LightningDataModule):
    """Images from a folder, a ``.txt`` list, a ``.csv`` table, tar shards or Parquet files (local or behind a URL),
    read as units of work and decoded with Pillow in worker processes.

    Example::

        dm = ImageDataModule("photos/", batch_size=64)
        trainer.predict(ImageClassifier(net=my_cnn), datamodule=dm)

    Args:
        source: A folder (searched recursively, sorted; class sub-folders give labels), a ``.txt`` file with one
            path per line, a ``.csv`` table, tar shards or Parquet files (a file, a folder of them, a glob or a
            brace pattern ``shards/{000..009}.tar``). Any of them may be a URL (``s3://``, ``gs://``, ``https://``,
            ``file://``). Relative paths in a list are relative to the list file.
        batch_size: Images per batch and per process. ``auto``: the largest that fits on the device, stopping where
            images/s stop growing (under DDP every rank searches and all take the smallest).
        num_workers: Decoding processes per training process. ``None``: the cores this process may use, divided
            among the processes on this machine.
        preprocessing: Resize/crop geometry. Linked from the model by the CLI; set it only when using the Python
            API with a model that does not declare its own.
        extensions: File endings a folder source keeps (case-insensitive).
        labels_from_folders: Whether class sub-folder names are labels (for metrics). ``None``: only when each is
            among the model's ``class_names`` (matched by name); otherwise no labels, and the run says why.
            ``true``: always (by name, or in sorted order when the model names no classes). ``false``: never.
        path_column: Column of a ``.csv`` source that holds the image paths.
        label_column: Column of a ``.csv`` source that holds labels (class indices or names). The default
            ``label`` is used when the table has it; any other name must be one of its columns.
        pin_memory: Page-locked batches for faster, asynchronous copies to the GPU. ``None``: on when the run's plan
            predicts on CUDA.
        prefetch_factor: Batches each worker prepares ahead.
        persistent_workers: Keep workers alive between runs of the same Trainer.
        exact: The reference's pixels, bit for bit (torchvision's ``Resize`` + ``CenterCrop``, timm's transform for
            timm models). ``false``: faster, a few levels off: crop-box resize, JPEG draft decoding (BENCHMARKS.md).
            ``summary.json`` records which (``exact_pixels``); ``decode: gpu`` is never exact.
        max_pixels: Images with more pixels are refused as an error record (decompression-bomb guard).
        io_retries: Extra attempts to read a file after a transient I/O error before it counts as failed.
        decode: ``cpu``: Pillow in the workers. ``gpu``: workers read bytes; JPEGs decode on the GPU (nvJPEG), other
            files (PNG, CMYK or rotated JPEGs) with Pillow in the workers.
        path_root: Folder the relative entries of a list or table are read from, and that every entry, and every
            symlinked file of a folder, must stay inside. ``None``: the list's own folder for relative entries;
            absolute entries and a folder's symlinks to files elsewhere are then not restricted (only regular files
            are ever read).
        path_policy: ``reject``: entries with ``..``, or resolving outside ``path_root`` (absolute paths, escaping
            symlinks), become error records and are never read. ``allow``: read whatever the list names.
        model_threads: Intra-op threads of the process that runs the model, when it runs on the CPU next to decoding
            workers. ``auto``: one thread when decoding an image costs more CPU than the model (data-bound, where
            more threads only fight the decoders for the cores), else most of the cores. ``None``: torch's setting.
        unit_size: Inputs per unit of work of a folder, list or table (tar shards and Parquet files are units of
            their own; see docs/scaling.md). ``None``: 4096, or fewer for a source of under 65,536 inputs, so that
            it still makes 16 units for the workers to share.
        image_column: Parquet column of image bytes (binary, or HF's ``{bytes, path}``). ``None``: the only one.
        storage_options: fsspec options for URL sources, e.g. ``{"anon": true}``; else ``AWS_*`` from the environment.
        cache_dir: Keep the preprocessed uint8 pixels of this source under this folder, one file per unit of work,
            so later runs over the same images (other checkpoints, same preprocessing) skip decoding. Needs
            ``N x crop x crop x 3`` bytes of disk (150 kB per image at 224). See ``lit_infer/data/cache.py``.
        file_identity: What a resumed run compares to know each input file is the one an earlier attempt read:
            ``stat``: size and modification time (one ``stat`` per file; objects behind a URL: size and ETag, from the
            listing); ``content``: a SHA-256 of its bytes (reads every file once more at start-up; local files only).
            A list of 65,536 entries or more is named by its own bytes. A change refuses the resume and names it.
        read_timeout: Seconds one file's read may take (retries included) before it becomes that item's error record
            and the worker moves on: a stuck network mount costs one item, not the run. ``None``: no bound.
    """

    def __init__(
        self,
        source: str | os.PathLike,
        batch_size: int | Literal["auto"] = 64,
        num_workers: int | None = None,
        preprocessing: Preprocessing | None = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        labels_from_folders: bool | None = None,
        path_column: str = "path",
        label_column: str | None = "label",
        pin_memory: bool | None = None,
        prefetch_factor: int = 4,
        persistent_workers: bool = True,
        exact: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        io_retries: int = 2,
        decode: Literal["cpu", "gpu"] = "cpu",
        path_root: str | os.PathLike | None = None,
        path_policy: Literal["reject", "allow"] = "reject",
        model_threads: int | Literal["auto"] | None = "auto",
        cache_dir: str | os.PathLike | None = None,
        read_timeout: float | None = 60.0,
        file_identity: Literal["stat", "content"] = "stat",
        unit_size: int | None = None,
        image_column: str | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_reader_settings(prefetch_factor, io_retries, max_pixels, read_timeout, file_identity)
        self.file_identity = file_identity
        self.read_timeout = read_timeout
        if not is_url(os.fspath(source)) and not is_pattern(os.fspath(source)) and not os.path.exists(source):
            raise ConfigError(
                "data.source",
                str(source),
                "no such file or folder",
                "Point it at a folder of images, a .txt list, a .csv table, tar shards or Parquet files",
            )
        if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
            raise ConfigError("data.batch_size", batch_size, "must be at least 1", "Set a positive batch size")
        if num_workers is not None and num_workers < 0:
            raise ConfigError(
                "data.num_workers", num_workers, "must be 0 or more", "Use 0 to decode in the main process"
            )
        if decode not in ("cpu", "gpu"):
            raise ConfigError("data.decode", decode, "unknown decoder", "Use 'cpu' or 'gpu'")
        if unit_size is not None:
            check_unit_size(unit_size)
        self.source = str(source)
        self.batch_size = batch_size
        if isinstance(model_threads, int) and model_threads < 1:
            raise ConfigError("data.model_threads", model_threads, "must be at least 1", "Use a count, auto or null")
        self.model_threads = model_threads
        if cache_dir is not None and decode != "cpu":
            raise ConfigError(
                "data.cache_dir", str(cache_dir), "caches CPU-decoded pixels only", "Use data.decode=cpu with a cache"
            )
        self.cache_dir = os.fspath(cache_dir) if cache_dir is not None else None
        self.num_workers = num_workers
        self.preprocessing = preprocessing or Preprocessing()
        if self.preprocessing.crop_mode == "none" and (decode == "gpu" or cache_dir is not None):
            key, value = ("data.decode", decode) if decode == "gpu" else ("data.cache_dir", str(cache_dir))
            raise ConfigError(key, value, "takes images of one size; crop_mode none keeps each its own", "Leave it out")
        if decode == "gpu":
            check_gpu_filter(self.preprocessing)
        self.extensions = tuple(extensions)
        self.labels_from_folders = labels_from_folders
        self.path_column = path_column
        self.label_column = label_column
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor
        self.persistent_workers = persistent_workers
        self.exact = exact
        self.max_pixels = max_pixels
        self.io_retries = io_retries
        self.decode = decode
        self.path_root = os.fspath(path_root) if path_root is not None else None
        self.path_policy = path_policy
        self.unit_size = unit_size
        self.image_column = image_column
        self.storage_options = dict(storage_options or {})
        check_options_fit(source_kind(self.source), self._options())
        self.source_plan: SourcePlan | None = None
        """The source as units of work, from ``setup`` on."""
        self.units: list[Unit] | None = None
        self.dataset: UnitDataset | None = None
        # With fewer units than DDP ranks some ranks get no batch; the writer's teardown still runs on them.
        self.allow_zero_length_dataloader_with_multiple_devices = True
        self.plan: Plan | None = None
        """The run's plan (:mod:`lit_infer.plan`), when a PredictionWriter plans the run."""

    # ---- what the rest of the pipeline may ask -------------------------------------------------------------
    @property
    def class_names(self) -> list[str] | None:
        return self.source_plan.class_names if self.source_plan is not None else None

    def describe(self) -> str:
        """The source in plain words (``3 tar shards``, ``a list of 2,000 images``), for the start line."""
        assert self.source_plan is not None, "setup() first"
        return self.source_plan.describe()

    def data_info(self) -> DataInfo:
        """What this data tells the model (class names, labels, its decoder), for the run's plan."""
        assert self.source_plan is not None and self.dataset is not None, "setup() first"
        entries = self.source_plan.entries
        labels = None
        if entries is not None and bool(np.any(entries.labels != NO_LABEL)):
            labels = entries.labels
        return DataInfo(
            self.source,
            self.class_names,
            labels,
            self.dataset.decoder,
            self.source_plan.from_folders,
            self.labels_from_folders,
            self.decode,
            self.source_plan.num_items,
            self.describe(),
        )

    def use_plan(self, plan: Plan) -> None:
        """Take the run's plan: skip what earlier attempts finished, split between ranks, tune with its probe."""
        self.plan = plan

    def fingerprint(self) -> dict[str, Any]:
        """What decides the output of this data: a rerun with a different fingerprint must not mix with this one.

        The units (ids, kinds, ranges), the identity of the files or objects (see ``file_identity``), the labels
        and every reading option; not every image's bytes."""
        assert self.source_plan is not None, "setup() first"
        entries = self.source_plan.entries
        labels = None
        if entries is not None:
            labels = {"class_names": self.class_names, "sha256": labels_digest(entries.labels.tolist())}
        read = {k: v for k, v in self._read_options().items() if k != "list_folder"}
        return {
            "source": self.source if is_url(self.source) else os.path.abspath(self.source),
            "kind": self.source_plan.kind,
            "units": len(self.source_plan.units),
            "num_items": self.source_plan.num_items,
            **self.source_plan.identity,
            "preprocessing": self.preprocessing.to_dict(),
            "exact": self.exact,
            "decode": self.decode,
            "max_pixels": self.max_pixels,
            "labels": labels,
            "read": read,
        }

    # ---- LightningDataModule -----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        self.source_plan = plan_source(
            self.source,
            self.unit_size,
            self.extensions,
            self.labels_from_folders is not False,
            self.path_column,
            self.label_column,
            self.path_root,
            self.path_policy,
            self.file_identity,
            self.storage_options,
        )
        check_options_fit(self.source_plan.kind, self._options())  # a folder may turn out to hold shards
        self.units = self.source_plan.units
        decoder = Decoder(
            self.preprocessing,
            self.max_pixels,
            self.exact,
            self.io_retries,
            read_timeout=self.read_timeout,
            storage_options=self.storage_options or None,
        )
        cache = None
        if self.cache_dir is not None:
            settings = {
                "preprocessing": self.preprocessing.to_dict(),
                "exact": self.exact,
                "max_pixels": self.max_pixels,
            }
            cache = UnitCache(self.cache_dir, settings, self.preprocessing.crop_size)
        self.dataset = UnitDataset(
            self.source_plan, decoder, read=self._read_options(), decode=self.decode == "cpu", cache=cache
        )

    def predict_dataloader(self) -> DataLoader:
        """This rank's DataLoader: the units the run's plan has not seen committed, split between its workers."""
        assert self.dataset is not None and self.source_plan is not None, "setup() first"
        workers = self._workers()
        tune(self, workers)
        assert isinstance(self.batch_size, int)
        rank, world_size = self._rank_and_world()
        plan, units = self.plan, self.source_plan.units
        if plan is not None and plan.complete:
            done, positions = {u.ordinal for u in units}, {}
        else:
            done, positions = (plan.done_units, plan.done_positions) if plan is not None else (set(), {})
        todo = [u for u in units if u.ordinal not in done]
        partial = {u.id: positions[u.ordinal] for u in todo if u.ordinal in positions}
        leases = None
        if plan is not None and plan.run_id and world_size > 1:
            # Units with a part each: leased as ranks and workers become free, so a slow one does not hold the run.
            leases = UnitLeases.from_environment(plan.run_id, len(todo))
        self.dataset.split(todo, partial, rank, world_size, self.batch_size, workers, leases)
        # Batches come whole from the workers (a batch never spans two units): no sampler, no collate here.
        return DataLoader(
            self.dataset,
            batch_size=None,
            collate_fn=_whole_batch,
            num_workers=workers,
            worker_init_fn=init_worker,
            pin_memory=self._pin_memory(),
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
            persistent_workers=self.persistent_workers and workers > 0,
        )

    def _options(self) -> dict[str, Any]:
        return {
            "extensions": self.extensions,
            "labels_from_folders": self.labels_from_folders,
            "path_column": self.path_column,
            "path_root": self.path_root,
            "path_policy": self.path_policy,
            "unit_size": self.unit_size,
            "image_column": self.image_column,
            "storage_options": self.storage_options,
            "file_identity": self.file_identity,
            "source": self.source,
        }

    def _read_options(self) -> dict[str, Any]:
        return {
            "image_column": self.image_column,
            "label_column": self.label_column,
            "key_column": self.path_column,
            "extensions": list(self.extensions),
            # where relative entries are read from: data.path_root when set, else the list's own folder
            "list_folder": self.path_root
            if self.path_root is not None and "://" not in self.source
            else list_folder(self.source),
            "path_root": self.path_root,
            "path_policy": self.path_policy,
        }

    def _rank_and_world(self) -> tuple[int, int]:
        if self.plan is not None:
            return self.plan.rank, self.plan.world_size
        # No writer planned the run: Lightning's own description of it.
        return getattr(self.trainer, "global_rank", 0), getattr(self.trainer, "world_size", 1) or 1

    def _workers(self) -> int:
        if self.num_workers is not None:
            return self.num_workers
        if self.plan is not None and self.plan.dataloader_workers is not None:
            return self.plan.dataloader_workers
        local_procs = int(os.environ.get("LOCAL_WORLD_SIZE", getattr(self.trainer, "num_devices", 1) or 1))
        return max(1, available_cores() // max(1, local_procs))

    def _pin_memory(self) -> bool:
        if self.pin_memory is not None:
            return self.pin_memory
        return self.plan is not None and self.plan.device.startswith("cuda")


def check_options_fit(kind: str, options: dict[str, Any]) -> None:
    """Options that mean nothing for this kind of source are refused by name, never silently ignored."""
    shards = kind in ("tar", "parquet")
    refused = {
        "labels_from_folders": options["labels_from_folders"] is True and kind != "folder",
        "path_column": options["path_column"] != "path" and kind not in ("table", "parquet"),
        "image_column": options["image_column"] is not None and kind != "parquet",
        "unit_size": options["unit_size"] is not None and shards,
        "path_root": options["path_root"] is not None and shards,
        "path_policy": options["path_policy"] != "reject" and shards,
        "extensions": tuple(options["extensions"]) != IMAGE_EXTENSIONS and kind not in ("folder", "tar"),
        # Shards are named by path: one that failed and was repaired is retried by the same run.
        "file_identity": options["file_identity"] != "stat" and shards,
    }
    for key, bad in refused.items():
        if bad:
            what = {"folder": "a folder", "table": "a .csv table", "list": "a .txt list"}.get(kind, f"{kind} files")
            raise ConfigError(
                f"data.{key}", options[key], f"means nothing for {what} ({options['source']!r})", "Remove it"
            )


def _whole_batch(batch: Any) -> Any:
    return batch
