"""The one contract every stage shares: what a sample, a batch and a prediction batch hold.

Data flows one way::

    Dataset[i] -> Sample -> collate -> Batch -> PredictionModule.predict_step -> Predictions -> PredictionWriter

Every object carries the dataset index of each of its items, so the writer can prove that every input ended as
exactly one prediction row or one error record, whatever order the strategies delivered them in.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lit_infer.errors import ConfigError
from lit_infer.host_copy import HostCopies, host_array, on_a_gpu
from lit_infer.ragged import ragged

_ADDRESS = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>")

NO_LABEL = -1
"""Label value of a sample whose ground truth is unknown."""


@dataclass
class Failure:
    """An input that produced no prediction: why, and which one.

    Not frozen: Lightning's ``bf16-true`` precision walks the batch with ``apply_to_collection``, which refuses
    frozen dataclasses.
    """

    index: int
    path: str
    error_type: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        path, message = text_path(self.path), text_path(self.message)
        return {"index": self.index, "path": path, "error_type": self.error_type, "message": message}

    @classmethod
    def from_exception(cls, index: int, path: str, exc: BaseException) -> Failure:
        # Drop object addresses ("<_io.BytesIO object at 0x7f...>") so that reruns write identical error files.
        message = _ADDRESS.sub("", str(exc)).strip()[:500]
        return cls(index=index, path=path, error_type=type(exc).__name__, message=message)


def text_path(path: str) -> str:
    """``path`` as text that every output format can hold (UTF-8 CSV/JSONL, Parquet strings, JSON).

    A file name that is not UTF-8 on disk reaches Python with its odd bytes as lone surrogates (``os.listdir``'s
    surrogateescape), which no UTF-8 writer accepts. Such a name is written with each byte that is not UTF-8 as a
    ``\\xNN`` escape (``a\\xff.jpg``; a backslash in it as ``\\x5c``), the same way in every format, and
    ``codecs.escape_decode`` of the text gives back the exact bytes. Names that are UTF-8 are written unchanged.
    """
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        # A backslash is escaped too (\\x5c), so that the text maps back to exactly one name.
        return os.fsencode(path).replace(b"\\", b"\\x5c").decode("utf-8", "backslashreplace")


@dataclass
class Sample:
    """One item of a dataset: a decoded image or the reason it could not be decoded.

    ``image`` is uint8 in H x W x C order, exactly as decoded: channels move on the device, where it is free.
    ``data`` is the raw file content for decoders that run later (GPU decoding); ``image`` is then ``None``.
    """

    index: int
    path: str
    image: torch.Tensor | None = None
    label: int = NO_LABEL
    error: Failure | None = None
    data: bytes | None = None


@dataclass
class EncodedFiles:
    """The undecoded files of a batch (device decoding), end to end in one uint8 tensor.

    From a DataLoader worker the tensor travels as shared memory: a list of ``bytes`` would be pickled through a
    pipe instead, about 30 ms of the main process per batch of 256 photos (BENCHMARKS.md). Item ``i`` is
    ``data[offsets[i]:offsets[i + 1]]``; an empty item was decoded by the worker (its pixels are in ``Batch.images``).
    """

    data: torch.Tensor
    offsets: torch.Tensor

    @classmethod
    def pack(cls, files: list[bytes | None], shared: bool = False) -> EncodedFiles:
        sizes = [len(f) if f is not None else 0 for f in files]
        offsets = torch.tensor([0, *itertools.accumulate(sizes)], dtype=torch.int64)
        total = int(offsets[-1])
        if shared:  # written straight into shared memory: no copy on the way to the main process
            data = torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(total), 0, (total,), (1,))
        else:
            data = torch.empty(total, dtype=torch.uint8)
        view = data.numpy()
        for f, start in zip(files, offsets.tolist(), strict=False):
            if f:
                view[start : start + len(f)] = np.frombuffer(f, dtype=np.uint8)
        return cls(data, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> torch.Tensor | None:
        """Item ``i`` as a uint8 view, or ``None`` if the worker decoded it."""
        start, end = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.data[start:end] if end > start else None

    def has_bytes(self) -> list[bool]:
        return (self.offsets[1:] > self.offsets[:-1]).tolist()

    def slice(self, start: int, end: int) -> EncodedFiles:
        return EncodedFiles(self.data, self.offsets[start : end + 1])

    def to_list(self) -> list[bytes | None]:
        views = (self[i] for i in range(len(self)))
        return [v.numpy().tobytes() if v is not None else None for v in views]


@dataclass
class UnitMark:
    """Which unit of work a batch comes from (sources read in units: tar shards, Parquet files, list ranges).

    ``last`` marks the unit's final batch: ``items`` is then how many inputs the unit had (or had before ``error``,
    when it could not be read to its end), so the writer can prove every position is there once and commit it.
    """

    id: str
    ordinal: int
    last: bool = False
    items: int = 0
    error: str | None = None
    start: int = 0
    """What the unit's positions are counted from in the output (a list range's first entry; 0 for shards)."""
    version: str | None = None
    """What the unit read, named as it started (:mod:`lit_infer.data.identity`): its inputs' sizes and modification
    times or ETags. On every batch, so that a stage and a part record it."""


@dataclass
class Batch:
    """A collated batch of the samples that decoded, plus the failures of the others.

    ``images`` has shape N x C x H x W and dtype uint8 in channels_last memory (a view of the N x H x W x C stack),
    so a model in channels_last receives it without a copy and the copy to the device moves 1 byte per value.
    Whole images of different sizes (``crop_mode: none``) are a list of C x H x W uint8 tensors instead.
    """

    images: torch.Tensor | list[torch.Tensor]
    indices: torch.Tensor
    paths: list[str]
    labels: torch.Tensor
    failures: list[Failure] = field(default_factory=list)
    encoded: EncodedFiles | None = None
    """Undecoded file contents, one per item, when decoding happens on the device. An empty item was decoded by
    the workers already: ``images`` holds those, in order."""
    unit: UnitMark | None = None
    """The unit of work the batch belongs to, when the source is read in units."""

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def size(self) -> int:
        """Inputs this batch accounts for: predictions to make plus failures already known."""
        return len(self.paths) + len(self.failures)

    def image_list(self) -> list[torch.Tensor]:
        """The images one by one (C x H x W each), whether stacked or of different sizes."""
        return self.images if isinstance(self.images, list) else list(self.images.unbind(0))

    def pin_memory(self) -> Batch:
        """Called by the DataLoader's pin-memory thread; pins the contiguous N x H x W x C storage."""
        if isinstance(self.images, list):
            images: torch.Tensor | list[torch.Tensor] = [i.pin_memory() for i in self.images]
        else:
            images = self.images.permute(0, 2, 3, 1).pin_memory().permute(0, 3, 1, 2)
        labels = self.labels.pin_memory()
        return Batch(images, self.indices.pin_memory(), self.paths, labels, self.failures, self.encoded, self.unit)


def stacked(images: torch.Tensor | list[torch.Tensor], module: str) -> torch.Tensor:
    """A batch's images as one N x C x H x W tensor; whole images of different sizes (a list) are refused."""
    if isinstance(images, torch.Tensor):
        return images
    raise ConfigError(
        "model.preprocessing.crop_mode",
        "none",
        f"{module} takes each batch as one tensor, and these whole images differ in size",
        "Use ObjectDetector or Segmenter, override preprocess, or let the images be cropped (center)",
    )


class Predictions:
    """The output of ``predict_step`` for one batch, column by column, one row per item in ``indices``.

    1-D columns become one cell per row; 2-D columns (top-k lists, embeddings, logits) become a list cell, or
    ``name.npy`` with the ``npy`` format. A column is a numpy array (strings as dtype ``<U``) or a tensor, or a
    list of per-row tensors or arrays (a detector's boxes, a varying number per image): a ragged column
    (:mod:`lit_infer.ragged`), a list cell of its own length in every row (its rows wait for the GPU). Tensors on
    a GPU start copying to pinned host memory here, without waiting for the GPU (:attr:`in_flight`): the writer
    reads them one batch later, so the GPU runs the next batch while this one is written. ``finish`` (optional)
    runs on the host columns once they are there, e.g. to add class names; :attr:`columns` waits for the copies and
    returns numpy arrays.

    Example::

        Predictions(batch.indices.numpy(), batch.paths, {"embedding": features}, batch.failures)
    """

    def __init__(
        self,
        indices: Any,
        paths: list[str],
        columns: Mapping[str, np.ndarray | torch.Tensor] | None = None,
        failures: list[Failure] | None = None,
        finish: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
    ) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)
        self.paths = paths
        self.failures = list(failures) if failures is not None else []
        self._columns: dict[str, Any] = dict(columns or {})
        self._finish = finish
        if len(self.paths) != len(self.indices):
            raise AssertionError(f"{len(self.paths)} paths for {len(self.indices)} indices")
        self._check_rows()
        self._resolved = False
        # Columns on a GPU start their way to the host now (host_copy.py). Columns already on the host are taken
        # now, while they are what the step made: a CPU net may return a view of its input, and the module reuses
        # that buffer for the next batch.
        self._copies: HostCopies | None = HostCopies(self._columns) if on_a_gpu(self._columns) else None
        if self._copies is None:
            self.resolve()

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        return f"Predictions({len(self)} rows, columns={list(self._columns)}, failures={len(self.failures)})"

    @classmethod
    def empty(cls, failures: list[Failure] | None = None) -> Predictions:
        return cls(np.zeros(0, dtype=np.int64), [], {}, list(failures or []))

    @property
    def in_flight(self) -> bool:
        """Columns still on their way from a GPU: reading them now would wait for the GPU."""
        return not self._resolved

    @property
    def columns(self) -> dict[str, np.ndarray]:
        """The columns as numpy arrays on the host (waits for the device's copies the first time)."""
        if not self._resolved:
            self.resolve()
        return self._columns

    def resolve(self) -> Predictions:
        """Wait for the copies to the host, convert every column to numpy and apply ``finish``. Idempotent."""
        if self._resolved:
            return self
        columns = (
            self._copies.wait() if self._copies is not None else {n: host_array(c) for n, c in self._columns.items()}
        )
        columns = {n: ragged(c) if isinstance(c, list) else c for n, c in columns.items()}
        if self._finish is not None:
            columns = self._finish(columns)
        self._columns, self._finish, self._copies, self._resolved = columns, None, None, True
        self._check_rows()
        return self

    def _check_rows(self) -> None:
        n = len(self.indices)
        for name, column in self._columns.items():
            if len(column) != n:
                raise AssertionError(f"column {name!r} has {len(column)} rows for {n} indices")
