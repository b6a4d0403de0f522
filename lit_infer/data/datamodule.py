"""ImageDataModule: a source of images -> batches of uint8 pixels, decoded in parallel DataLoader workers."""

from __future__ import annotations

import os
from typing import Any, Literal

import lightning as L
import numpy as np
from torch.utils.data import DataLoader
from typing_extensions import override

from lit_infer.data.cache import UnitCache
from lit_infer.data.dataset import UnitDataset
from lit_infer.data.decode import Decoder, init_worker
from lit_infer.data.gpu_decode import check_gpu_filter
from lit_infer.data.identity import labels_digest
from lit_infer.data.leases import UnitLeases
from lit_infer.data.options import GROUPS, Decoding, Inputs, Loader, Reading, check_options_fit
from lit_infer.data.sources import SourceListing, list_folder, list_source, source_kind
from lit_infer.data.storage import is_url
from lit_infer.data.tune import ModelThreads, tune
from lit_infer.data.units import is_pattern
from lit_infer.errors import ConfigError
from lit_infer.plan import DataInfo, Plan
from lit_infer.preprocessing import Preprocessing
from lit_infer.records import NO_LABEL
from lit_infer.system import available_cores


class ImageDataModule(L.LightningDataModule):
    """Images from a folder, a ``.txt`` list, a ``.csv`` table, tar shards or Parquet files (local or behind a URL),
    read as units of work and decoded with Pillow in worker processes.

    Example::

        dm = ImageDataModule("photos/", batch_size=64, decoding=Decoding(exact=False))
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
        inputs: What the source's inputs are: file endings, table columns, labels, unit size
            (:class:`~lit_infer.data.options.Inputs`, ``data.inputs.*``).
        reading: How each input is read: path fence, identity for resuming, retries, time limit, object-store
            options (:class:`~lit_infer.data.options.Reading`, ``data.reading.*``).
        decoding: How bytes become pixels: exact or fast, the pixel guard, CPU or GPU, a pixel cache
            (:class:`~lit_infer.data.options.Decoding`, ``data.decoding.*``).
        loader: The DataLoader's settings and the model's CPU threads beside its workers
            (:class:`~lit_infer.data.options.Loader`, ``data.loader.*``).
    """

    def __init__(
        self,
        source: str | os.PathLike,
        batch_size: int | Literal["auto"] = 64,
        num_workers: int | None = None,
        preprocessing: Preprocessing | None = None,
        inputs: Inputs = Inputs(),
        reading: Reading = Reading(),
        decoding: Decoding = Decoding(),
        loader: Loader = Loader(),
    ) -> None:
        super().__init__()
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
        self.source = str(source)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.preprocessing = preprocessing or Preprocessing()
        for name, group in {"inputs": inputs, "reading": reading, "decoding": decoding, "loader": loader}.items():
            if not isinstance(group, GROUPS[name]):  # a dict from Python: the CLI builds these from the config
                kind = GROUPS[name].__name__
                raise TypeError(f"data.{name} takes a lit_infer.{kind}, not {group!r}: pass {kind}(...)")
        self.inputs, self.reading, self.decoding, self.loader = inputs, reading, decoding, loader
        if self.preprocessing.crop_mode == "none" and (decoding.decode == "gpu" or decoding.cache_dir is not None):
            gpu = decoding.decode == "gpu"
            key, value = ("data.decoding.decode", "gpu") if gpu else ("data.decoding.cache_dir", decoding.cache_dir)
            raise ConfigError(key, value, "takes images of one size; crop_mode none keeps each its own", "Leave it out")
        if decoding.decode == "gpu":
            check_gpu_filter(self.preprocessing)
        check_options_fit(source_kind(self.source), self.source, inputs, reading)
        self.listing: SourceListing | None = None
        """The source listed and cut into units of work, from ``setup`` on."""
        self.dataset: UnitDataset | None = None
        # With fewer units than DDP ranks some ranks get no batch; the writer's teardown still runs on them.
        self.allow_zero_length_dataloader_with_multiple_devices = True
        self.plan: Plan | None = None
        """The run's plan (:mod:`lit_infer.plan`), when a PredictionWriter plans the run."""
        self._threads = ModelThreads()  # data.loader.model_threads, for the run only

    # ---- what the rest of the pipeline may ask -------------------------------------------------------------
    @property
    def class_names(self) -> list[str] | None:
        return self.listing.class_names if self.listing is not None else None

    def describe(self) -> str:
        """The source in plain words (``3 tar shards``, ``a list of 2,000 images``), for the start line."""
        assert self.listing is not None, "setup() first"
        return self.listing.describe()

    def data_info(self) -> DataInfo:
        """What this data tells the model (class names, labels, its decoder), for the run's plan."""
        assert self.listing is not None and self.dataset is not None, "setup() first"
        entries = self.listing.entries
        labels = None
        if entries is not None and bool(np.any(entries.labels != NO_LABEL)):
            labels = entries.labels
        elif self.listing.from_folders and self.class_names:
            # A folder's labels are its class sub-folders' numbers, given as its pages are cut: these are all there
            # can be (the run does not wait for the whole listing to name them).
            labels = np.arange(len(self.class_names), dtype=np.int64)
        return DataInfo(
            self.source,
            self.class_names,
            labels,
            self.dataset.decoder,
            self.listing.from_folders,
            self.inputs.labels_from_folders,
            self.decoding.decode,
            self.listing.num_items,
            self.describe(),
        )

    def use_plan(self, plan: Plan) -> None:
        """Take the run's plan: skip what earlier attempts finished, split between ranks, tune with its probe."""
        self.plan = plan

    def fingerprint(self) -> dict[str, Any]:
        """What decides the output of this data: a rerun with a different fingerprint must not mix with this one.

        The units (ids, kinds, ranges), the inputs' names (a list's or table's bytes), the labels and every reading
        option; not a file's size or date: each unit names what it read in its part (:mod:`lit_infer.data.identity`),
        and a resume checks the units it keeps."""
        assert self.listing is not None, "setup() first"
        listing = self.listing
        labels = None
        if listing.entries is not None:
            labels = {"class_names": self.class_names, "sha256": labels_digest(listing.entries.labels.tolist())}
        elif listing.from_folders:  # a folder's: each page's names (so its labels) are in its version
            labels = {"class_names": self.class_names}
        # A folder being listed has no count yet: its pages are named one by one, each in its part's version.
        counted = listing.pages is None
        inputs, reading, decoding = self.inputs, self.reading, self.decoding
        # Named as the user types them (data.decoding.max_pixels), so that a refused resume names the key.
        columns = {"path_column": inputs.path_column, "label_column": inputs.label_column}
        return {
            "source": self.source if is_url(self.source) else os.path.abspath(self.source),
            "kind": listing.kind,
            "units": len(listing.units) if counted else None,
            "num_items": listing.num_items if counted else None,
            **listing.identity,
            "preprocessing": self.preprocessing.to_dict(),
            "labels": labels,
            "inputs": {**columns, "image_column": inputs.image_column, "extensions": list(inputs.extensions)},
            "reading": {
                "path_root": reading.path_root,
                "path_policy": reading.path_policy,
                "file_identity": reading.file_identity,
            },
            "decoding": {"exact": decoding.exact, "decode": decoding.decode, "max_pixels": decoding.max_pixels},
        }

    # ---- LightningDataModule -----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        inputs, reading, decoding = self.inputs, self.reading, self.decoding
        self.listing = list_source(
            self.source,
            inputs.unit_size,
            inputs.extensions,
            inputs.labels_from_folders is not False,
            inputs.path_column,
            inputs.label_column,
            reading.path_root,
            reading.path_policy,
            reading.file_identity,
            reading.storage_options,
        )
        check_options_fit(self.listing.kind, self.source, inputs, reading)  # a folder may turn out to hold shards
        decoder = Decoder(self.preprocessing, decoding.max_pixels, decoding.exact, reading)
        cache = None
        if decoding.cache_dir is not None:
            settings = {
                "preprocessing": self.preprocessing.to_dict(),
                "exact": decoding.exact,
                "max_pixels": decoding.max_pixels,
            }
            cache = UnitCache(decoding.cache_dir, settings, self.preprocessing.crop_size)
        # Relative entries of a list are read from data.reading.path_root when set, else from the list's own folder.
        local_root = reading.path_root is not None and "://" not in self.source
        base = reading.path_root if local_root else list_folder(self.source)
        cpu = decoding.decode == "cpu"
        self.dataset = UnitDataset(self.listing, decoder, inputs=inputs, list_folder=base, decode=cpu, cache=cache)

    def predict_dataloader(self) -> DataLoader:
        """This rank's DataLoader: the units the run's plan has not seen committed, split between its workers."""
        assert self.dataset is not None and self.listing is not None, "setup() first"
        workers = self._workers()
        probe = self.plan.probe if self.plan is not None else None
        crop = self.preprocessing.crop_size
        self.batch_size, threads = tune(probe, self.batch_size, self.loader.model_threads, crop, self.dataset, workers)
        self._threads.hold(threads)
        rank, world_size = self._rank_and_world()
        plan, listing = self.plan, self.listing
        if plan is not None and plan.complete:
            done, positions = {u.ordinal for u in listing.all_units()}, {}
        else:
            done, positions = (plan.done_units, plan.done_positions) if plan is not None else (set(), {})
        # Stages by unit id (a folder's page ids follow from their ordinals: no wait for its listing).
        partial = {unit.id: positions[o] for o in positions if o not in done and (unit := listing.unit(o)) is not None}
        leases = None
        if plan is not None and plan.run_id and world_size > 1:
            # Units with a part each: leased as ranks and workers become free, so a slow one does not hold the run.
            count = len(listing.units) if listing.ended() else None
            leases = UnitLeases.from_environment(plan.run_id, count)
        self.dataset.split(done, partial, rank, world_size, self.batch_size, workers, leases)
        # Batches come whole from the workers (a batch never spans two units): no sampler, no collate here.
        return DataLoader(
            self.dataset,
            batch_size=None,
            collate_fn=_whole_batch,
            num_workers=workers,
            worker_init_fn=init_worker,
            pin_memory=self._pin_memory(),
            prefetch_factor=self.loader.prefetch_factor if workers > 0 else None,
            persistent_workers=self.loader.persistent_workers and workers > 0,
        )

    @override
    def teardown(self, stage: str) -> None:
        self._threads.release()
        if self.listing is not None and self.listing.ended():  # its units stay known; its page files go
            self.listing.close()
            self.dataset = None  # a later predict lists the source again

    @override
    def on_exception(self, exception: BaseException) -> None:
        self._threads.release()  # Lightning calls teardown only when the run ends well
        if self.listing is not None:
            self.listing.close()  # a folder's listing stops with the run

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
        if self.loader.pin_memory is not None:
            return self.loader.pin_memory
        return self.plan is not None and self.plan.device.startswith("cuda")


def _whole_batch(batch: Any) -> Any:
    return batch
