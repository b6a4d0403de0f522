"""ImageDataModule: a source of images -> batches of uint8 pixels, decoded in parallel DataLoader workers."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

import lit_infer.data.unit_loader as unit_loader
import lit_infer.data.unit_plan as unit_plan
from lit_infer.data.cache import CachedDataset
from lit_infer.data.dataset import ImageDataset, collate
from lit_infer.data.decode import DEFAULT_MAX_PIXELS, Decoder, init_worker
from lit_infer.data.gpu_decode import check_gpu_filter
from lit_infer.data.identity import file_identity, labels_digest
from lit_infer.data.reading import check_reader_settings
from lit_infer.data.sampler import BatchStridedSampler
from lit_infer.data.sources import IMAGE_EXTENSIONS, ImageList, discover
from lit_infer.data.tune import tune
from lit_infer.data.unit_dataset import UnitDataset
from lit_infer.errors import ConfigError
from lit_infer.plan import DataInfo, Plan
from lit_infer.preprocessing import Preprocessing
from lit_infer.records import NO_LABEL
from lit_infer.system import available_cores


class ImageDataModule(L.LightningDataModule):
    """Images from a folder, a ``.txt`` list or a ``.csv`` table, decoded with Pillow in worker processes.

    Example::

        dm = ImageDataModule("photos/", batch_size=64)
        trainer.predict(ImageClassifier(net=my_cnn), datamodule=dm)

    Args:
        source: A folder (searched recursively, sorted; class sub-folders give labels), a ``.txt`` file with one
            path per line, or a ``.csv`` table. Relative paths in a list are relative to the list file.
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
        unit_size: Entries per unit of work of a ``.txt`` list (tar shards and Parquet files are units of their own;
            see docs/scaling.md). ``None``: about 4096, in whole batches, for lists of 65,536 entries or more, behind
            a URL, or with ``writer.layout: parts``; smaller local lists are listed whole.
        image_column: Parquet column of image bytes (binary, or HF's ``{bytes, path}``). ``None``: the only one.
        storage_options: fsspec options for URL sources, e.g. ``{"anon": true}``; else ``AWS_*`` from the environment.
        cache_dir: Keep the preprocessed uint8 pixels of this source in a memory-mapped file under this folder, so
            later runs over the same images (other checkpoints, same preprocessing) skip decoding. Needs
            ``N x crop x crop x 3`` bytes of disk (150 kB per image at 224). See ``lit_infer/data/cache.py``.
        file_identity: What a resumed run compares to know each input file is the one an earlier attempt read:
            ``stat``: size and modification time (one ``stat`` per file); ``content``: a SHA-256 of its bytes
            (reads every file once more at start-up). A change refuses the resume and names it.
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
        if not unit_plan.exists(os.fspath(source)):
            raise ConfigError(
                "data.source",
                str(source),
                "no such file or folder",
                "Point it at a folder of images, a .txt list or a .csv table",
            )
        if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
            raise ConfigError("data.batch_size", batch_size, "must be at least 1", "Set a positive batch size")
        if num_workers is not None and num_workers < 0:
            raise ConfigError(
                "data.num_workers", num_workers, "must be 0 or more", "Use 0 to decode in the main process"
            )
        if decode not in ("cpu", "gpu"):
            raise ConfigError("data.decode", decode, "unknown decoder", "Use 'cpu' or 'gpu'")
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
        self.items: ImageList | None = None
        self.dataset: ImageDataset | CachedDataset | None = None
        # With fewer items than DDP ranks some ranks get no batch; the writer's teardown still runs on them.
        self.allow_zero_length_dataloader_with_multiple_devices = True
        self.skip: np.ndarray | None = None
        """Dataset indices not to predict (already done by an earlier attempt: from the run's plan)."""
        unit_loader.init_state(self, unit_size, image_column, storage_options)
        self.plan: Plan | None = None
        """The run's plan (:mod:`lit_infer.plan`), when a PredictionWriter plans the run."""
        self._decoder: Decoder | None = None

    # ---- what the rest of the pipeline may ask -------------------------------------------------------------
    @property
    def class_names(self) -> list[str] | None:
        return self.items.class_names if self.items is not None else None

    def data_info(self) -> DataInfo:
        """What this data tells the model (class names, labels, its decoder), for the run's plan."""
        if self.units is not None:  # labels come with the items as they are read: no metrics before the end
            return DataInfo(self.source, None, None, self._decoder)
        assert self.items is not None, "setup() first"
        labeled = any(label != NO_LABEL for label in self.items.labels)
        labels = np.asarray(self.items.labels, dtype=np.int64) if labeled else None
        folders = self.items.from_folders
        return DataInfo(
            self.source, self.class_names, labels, self._decoder, folders, self.labels_from_folders, self.decode
        )

    def use_plan(self, plan: Plan) -> None:
        """Take the run's plan: skip what earlier attempts finished, split between ranks, tune with its probe."""
        self.plan = plan
        self.skip = plan.skip

    def fingerprint(self) -> dict[str, Any]:
        """What decides the output of this data: a rerun with a different fingerprint must not mix with this one."""
        if self.units is not None:
            return unit_loader.fingerprint(self)
        assert self.items is not None, "setup() first"
        digest = hashlib.sha256("\n".join(self.items.paths).encode("utf-8", "surrogateescape")).hexdigest()
        return {
            "source": os.path.abspath(self.source),
            "num_items": len(self.items),
            "paths_sha256": digest,
            "files": file_identity(self.items.paths, self.file_identity),
            "preprocessing": self.preprocessing.to_dict(),
            "exact": self.exact,
            "decode": self.decode,
            "max_pixels": self.max_pixels,
            "labels": {"class_names": self.items.class_names, "sha256": labels_digest(self.items.labels)},
            "rejected": len(self.items.rejected),  # a changed path policy changes which entries are read
        }

    # ---- LightningDataModule -----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.units is None:
            unit_loader.plan_if_units(self)
        if self.items is None and self.units is None:
            self.items = discover(
                self.source,
                self.extensions,
                self.labels_from_folders is not False,
                self.path_column,
                self.label_column,
                root=self.path_root,
                path_policy=self.path_policy,
            )
            self._decoder = Decoder(
                self.preprocessing, self.max_pixels, self.exact, self.io_retries, read_timeout=self.read_timeout
            )
            self.dataset = ImageDataset(
                self.items.paths, self.items.labels, self._decoder, self.items.rejected, decode=self.decode == "cpu"
            )
            if self.cache_dir is not None:
                settings = {
                    "preprocessing": self.preprocessing.to_dict(),
                    "exact": self.exact,
                    "max_pixels": self.max_pixels,
                }
                self.dataset = CachedDataset(self.dataset, self.cache_dir, settings, self.preprocessing.crop_size)

    use_units = unit_loader.use_units

    def predict_dataloader(self) -> DataLoader:
        assert self.dataset is not None, "setup() first"
        workers = self._workers()
        tune(self, workers)
        rank, world_size = self._rank_and_world()
        if isinstance(self.dataset, UnitDataset):
            return unit_loader.loader(self, self.dataset, workers, self._pin_memory(), rank, world_size)
        assert isinstance(self.batch_size, int)
        # Fixed batches, shared between ranks whole and skipped whole on resume: a batch is a function of its items.
        sampler = BatchStridedSampler(len(self.dataset), self.batch_size, world_size, rank, self.skip)
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=False,
            sampler=sampler,
            num_workers=workers,
            collate_fn=collate,
            worker_init_fn=init_worker,
            pin_memory=self._pin_memory(),
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
            persistent_workers=self.persistent_workers and workers > 0,
        )

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
