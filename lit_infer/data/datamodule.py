"""ImageDataModule: a source of images -> batches of uint8 pixels, decoded in parallel DataLoader workers."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Subset

from lit_infer.data.dataset import ImageDataset, collate
from lit_infer.data.decode import DEFAULT_MAX_PIXELS, Decoder
from lit_infer.data.sources import IMAGE_EXTENSIONS, ImageList, discover
from lit_infer.errors import ConfigError
from lit_infer.preprocessing import Preprocessing


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class ImageDataModule(L.LightningDataModule):
    """Images from a folder, a ``.txt`` list or a ``.csv`` table, decoded with Pillow in worker processes.

    Example::

        dm = ImageDataModule("photos/", batch_size=64)
        trainer.predict(ImageClassifier(net=my_cnn), datamodule=dm)

    Args:
        source: A folder (searched recursively, sorted; class sub-folders give labels), a ``.txt`` file with one
            path per line, or a ``.csv`` table. Relative paths in a list are relative to the list file.
        batch_size: Images per batch and per process.
        num_workers: Decoding processes per training process. ``None``: the cores this process may use, divided
            among the processes on this machine.
        preprocessing: Resize/crop geometry. Linked from the model by the CLI; set it only when using the Python
            API with a model that does not declare its own.
        extensions: File endings a folder source keeps (case-insensitive).
        labels_from_folders: In a folder source whose images all lie in sub-folders, use the sub-folder names as
            class labels (for metrics).
        path_column: Column of a ``.csv`` source that holds the image paths.
        label_column: Column of a ``.csv`` source that holds labels (class indices or names); ignored if absent.
        pin_memory: Page-locked batches for faster, asynchronous copies to the GPU. ``None``: on when predicting on
            CUDA.
        prefetch_factor: Batches each worker prepares ahead.
        persistent_workers: Keep workers alive between runs of the same Trainer.
        jpeg_draft: Let libjpeg decode large JPEGs at 1/2, 1/4 or 1/8 scale when that still covers the resize (much
            faster on big photos; the output differs slightly from a full decode, see BENCHMARKS.md).
        max_pixels: Images with more pixels are refused as an error record (decompression-bomb guard).
        io_retries: Extra attempts to read a file after a transient I/O error before it counts as failed.
        decode: ``cpu``: Pillow in the workers. ``gpu``: workers read bytes; JPEGs decode on the GPU (nvJPEG).
    """

    def __init__(
        self,
        source: str | os.PathLike,
        batch_size: int = 64,
        num_workers: int | None = None,
        preprocessing: Preprocessing | None = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        labels_from_folders: bool = True,
        path_column: str = "path",
        label_column: str | None = "label",
        pin_memory: bool | None = None,
        prefetch_factor: int = 4,
        persistent_workers: bool = True,
        jpeg_draft: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        io_retries: int = 2,
        decode: Literal["cpu", "gpu"] = "cpu",
    ) -> None:
        super().__init__()
        if not os.path.exists(source):
            raise ConfigError(
                "data.source",
                str(source),
                "no such file or folder",
                "Point it at a folder of images, a .txt list or a .csv table",
            )
        if batch_size < 1:
            raise ConfigError("data.batch_size", batch_size, "must be at least 1", "Set a positive batch size")
        if num_workers is not None and num_workers < 0:
            raise ConfigError(
                "data.num_workers", num_workers, "must be 0 or more", "Use 0 to decode in the main process"
            )
        if decode not in ("cpu", "gpu"):
            raise ConfigError("data.decode", decode, "unknown decoder", "Use 'cpu' or 'gpu'")
        self.source = str(source)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.preprocessing = preprocessing or Preprocessing()
        self.extensions = tuple(extensions)
        self.labels_from_folders = labels_from_folders
        self.path_column = path_column
        self.label_column = label_column
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor
        self.persistent_workers = persistent_workers
        self.jpeg_draft = jpeg_draft
        self.max_pixels = max_pixels
        self.io_retries = io_retries
        self.decode = decode
        self.items: ImageList | None = None
        self.dataset: ImageDataset | None = None
        self.skip: np.ndarray | None = None
        """Dataset indices already predicted in an earlier attempt (set by the writer on resume)."""

    # ---- what the rest of the pipeline may ask -------------------------------------------------------------
    @property
    def class_names(self) -> list[str] | None:
        return self.items.class_names if self.items is not None else None

    def fingerprint(self) -> dict[str, Any]:
        """What decides the output of this data: a rerun with a different fingerprint must not mix with this one."""
        assert self.items is not None, "setup() first"
        digest = hashlib.sha256("\n".join(self.items.paths).encode("utf-8", "surrogateescape")).hexdigest()
        return {
            "source": os.path.abspath(self.source),
            "num_items": len(self.items),
            "paths_sha256": digest,
            "preprocessing": self.preprocessing.to_dict(),
            "jpeg_draft": self.jpeg_draft,
            "decode": self.decode,
        }

    # ---- LightningDataModule -----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.items is None:
            self.items = discover(
                self.source, self.extensions, self.labels_from_folders, self.path_column, self.label_column
            )
            decoder = Decoder(self.preprocessing, self.max_pixels, self.jpeg_draft, self.io_retries)
            self.dataset = ImageDataset(self.items.paths, self.items.labels, decoder, decode=self.decode == "cpu")

    def predict_dataloader(self) -> DataLoader:
        assert self.dataset is not None, "setup() first"
        dataset: ImageDataset | Subset = self.dataset
        if self.skip is not None and len(self.skip):
            remaining = np.setdiff1d(np.arange(len(self.dataset)), self.skip, assume_unique=True)
            dataset = Subset(self.dataset, remaining.tolist())
        workers = self._workers()
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=self._pin_memory(),
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
            persistent_workers=self.persistent_workers and workers > 0,
        )

    def _workers(self) -> int:
        if self.num_workers is not None:
            return self.num_workers
        strategy_budget = getattr(getattr(self.trainer, "strategy", None), "dataloader_workers", None)
        if strategy_budget is not None:
            return int(strategy_budget)
        local_procs = int(os.environ.get("LOCAL_WORLD_SIZE", getattr(self.trainer, "num_devices", 1) or 1))
        return max(1, available_cores() // max(1, local_procs))

    def _pin_memory(self) -> bool:
        if self.pin_memory is not None:
            return self.pin_memory
        strategy = getattr(self.trainer, "strategy", None)
        return strategy is not None and strategy.root_device.type == "cuda"
