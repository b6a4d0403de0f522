"""A source's inputs as the one dataset reads them, for tests of listing, labels and path checks."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import Dataset

from lit_infer.data.dataset import UnitDataset
from lit_infer.data.decode import Decoder
from lit_infer.data.options import Reading
from lit_infer.data.sources import IMAGE_EXTENSIONS, Entries, SourceListing, list_folder, list_source, page_units
from lit_infer.preprocessing import Preprocessing
from lit_infer.records import Sample


@dataclass
class Found:
    paths: list[str]
    labels: list[int]
    class_names: list[str] | None
    rejected: list[tuple[int, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


def discover(
    source: Any,
    extensions: Any = IMAGE_EXTENSIONS,
    labels_from_folders: bool = True,
    path_column: str = "path",
    label_column: str | None = "label",
    root: Any = None,
    path_policy: str = "reject",
) -> Found:
    """Every input of ``source`` in order, with its label and refusal, read through the units of its listing."""
    source, root = os.fspath(source), os.fspath(root) if root is not None else None
    listing = list_source(
        source,
        None,
        tuple(extensions),
        labels_from_folders,
        path_column,
        label_column,
        root,
        path_policy,  # type: ignore[arg-type]
    )
    fence = Reading(path_root=root, path_policy=path_policy)  # type: ignore[arg-type]
    base = root if root is not None and "://" not in source else list_folder(source)  # as the data module reads it
    dataset = UnitDataset(listing, Decoder(Preprocessing(), reading=fence), list_folder=base)
    items = [item for unit in listing.units for item in dataset._items(unit)]
    rejected = [(i, item.error) for i, item in enumerate(items) if item.error is not None]
    return Found([i.key for i in items], [i.label for i in items], listing.class_names, rejected)


class ByIndex(Dataset):
    """The samples of one page unit by position (a map-style view, for tests of single samples and collate)."""

    def __init__(self, dataset: UnitDataset) -> None:
        self.dataset, self.unit = dataset, dataset.source.unit(0)
        self.items = list(dataset._items(self.unit))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample:
        return self.dataset._sample(self.unit, self.items[int(i)])


def by_index(
    paths: list[Any],
    decoder: Decoder,
    labels: list[int] | None = None,
    rejected: Any = (),
    decode: bool = True,
) -> ByIndex:
    entries = Entries.of([str(p) for p in paths], labels, list(rejected))
    source = SourceListing(
        "folder", page_units("x", len(entries), max(1, len(entries))), entries, num_items=len(entries)
    )
    return ByIndex(UnitDataset(source, decoder, decode=decode))


def listed(listing: SourceListing) -> tuple[list[str], list[tuple[str, float] | None]]:
    """Every input of a listed folder or table, in order, with its version as the listing gave it (waiting for a
    folder's listing to end)."""
    pages = [listing.page(u) for u in listing.all_units()]
    paths = [p.path(i) for p in pages for i in range(len(p))]
    return paths, [p.version(i) for p in pages for i in range(len(p))]
