"""The one contract every stage shares: what a sample, a batch and a prediction batch hold.

Data flows one way::

    Dataset[i] -> Sample -> collate -> Batch -> PredictionModule.predict_step -> Predictions -> PredictionWriter

Every object carries the dataset index of each of its items, so the writer can prove that every input ended as
exactly one prediction row or one error record, whatever order the strategies delivered them in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

_ADDRESS = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>")

NO_LABEL = -1
"""Label value of a sample whose ground truth is unknown."""


@dataclass(frozen=True)
class Failure:
    """An input that produced no prediction: why, and which one."""

    index: int
    path: str
    error_type: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "path": self.path, "error_type": self.error_type, "message": self.message}

    @classmethod
    def from_exception(cls, index: int, path: str, exc: BaseException) -> Failure:
        # Drop object addresses ("<_io.BytesIO object at 0x7f...>") so that reruns write identical error files.
        message = _ADDRESS.sub("", str(exc)).strip()[:500]
        return cls(index=index, path=path, error_type=type(exc).__name__, message=message)


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
class Batch:
    """A collated batch of the samples that decoded, plus the failures of the others.

    ``images`` has shape N x C x H x W and dtype uint8 in channels_last memory (a view of the N x H x W x C stack),
    so a model in channels_last receives it without a copy and the copy to the device moves 1 byte per value.
    """

    images: torch.Tensor
    indices: torch.Tensor
    paths: list[str]
    labels: torch.Tensor
    failures: list[Failure] = field(default_factory=list)
    encoded: list[bytes | None] | None = None
    """Undecoded file contents, one per item, when decoding happens on the device. ``None`` marks an item the
    workers decoded already: ``images`` holds those, in order."""

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def size(self) -> int:
        """Inputs this batch accounts for: predictions to make plus failures already known."""
        return len(self.paths) + len(self.failures)

    def pin_memory(self) -> Batch:
        """Called by the DataLoader's pin-memory thread; pins the contiguous N x H x W x C storage."""
        images = self.images.permute(0, 2, 3, 1).pin_memory().permute(0, 3, 1, 2)
        return Batch(
            images, self.indices.pin_memory(), self.paths, self.labels.pin_memory(), self.failures, self.encoded
        )


@dataclass
class Predictions:
    """The output of ``predict_step`` for one batch, on the CPU, column by column.

    ``columns`` maps a field name to an array with one row per item in ``indices``: 1-D arrays become one cell per
    row; 2-D arrays (top-k lists, embeddings, logits) become a list cell, or ``name.npy`` with the ``npy`` format.
    String columns are numpy arrays of ``str`` (dtype ``<U``).
    """

    indices: np.ndarray
    paths: list[str]
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.indices = np.asarray(self.indices, dtype=np.int64)
        n = len(self.indices)
        if len(self.paths) != n:
            raise AssertionError(f"{len(self.paths)} paths for {n} indices")
        for name, column in self.columns.items():
            if len(column) != n:
                raise AssertionError(f"column {name!r} has {len(column)} rows for {n} indices")

    def __len__(self) -> int:
        return len(self.indices)

    @classmethod
    def empty(cls, failures: list[Failure] | None = None) -> Predictions:
        return cls(np.zeros(0, dtype=np.int64), [], {}, list(failures or []))
