"""Units -> batches, in DataLoader workers: each worker reads its own units front to back and cuts each into batches.

A batch never spans two units, and its items are a fixed slice of its unit (positions ``k*B .. k*B+B-1``), so what
a batch holds depends on the item alone, never on what an earlier attempt left: a resumed run predicts the same
batches as an uninterrupted one, byte for byte. Already committed items are skipped; a slice with nothing left is
never read past. Each batch carries a :class:`~lit_infer.records.UnitMark`; the last of a unit says how many items
it had (or why it could not be read to its end), so the writer can commit that unit's part.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from lit_infer.data.dataset import collate
from lit_infer.data.decode import Decoder
from lit_infer.data.gpu_decode import nvjpeg_can_take
from lit_infer.data.shard_readers import Item, UnitReadError, open_binary, parquet_items, tar_items
from lit_infer.data.sources import IMAGE_EXTENSIONS, PathPolicy, check_paths
from lit_infer.data.units import UNIT_FAILED, Unit, assign, read_range
from lit_infer.records import Batch, Failure, Sample, UnitMark


class UnitDataset(IterableDataset[Batch]):
    """Yields whole batches (use ``DataLoader(batch_size=None)``), each from one unit of this rank and worker.

    Args:
        units: Every unit of the run, in order.
        decoder: Pillow decoding and geometry.
        batch_size: Items per batch (the last batch of a unit may be smaller).
        rank: This process's global rank.
        world_size: The number of ranks.
        done: Unit id -> positions committed by an earlier attempt (units whose part exists are not listed here:
            they are left out of ``units``).
        storage_options: For URLs (fsspec).
        read: Options of the readers: ``image_column``, ``label_column``, ``key_column``, ``extensions``,
            ``path_root``, ``path_policy``.
        decode: False: bytes go to the device for nvJPEG where it can take them.
    """

    def __init__(
        self,
        units: list[Unit],
        decoder: Decoder,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        done: Mapping[str, np.ndarray] | None = None,
        storage_options: dict[str, Any] | None = None,
        read: dict[str, Any] | None = None,
        decode: bool = True,
    ) -> None:
        self.units = units
        self.decoder = decoder
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.done = dict(done or {})
        self.storage_options = storage_options
        self.read = dict(read or {})
        self.decode = decode
        self._probe: list[Item] | None = None

    def my_units(self) -> list[Unit]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return assign(self.units, self.rank, self.world_size, worker, workers)

    def probe(self, i: int) -> Sample:
        """Item ``i`` (< 8) of the first unit, decoded (to measure decoding's CPU cost before the run). The unit is
        opened once for all probes: a list range checks its 4096 paths, a shard streams its first members."""
        if self._probe is None:
            self._probe = list(itertools.islice(self._items(self.units[0]), 8))
        item = next((it for it in self._probe if it.position == i), None)
        return self._sample(self.units[0], item) if item is not None else Sample(i, "")

    def __iter__(self) -> Iterator[Batch]:
        for unit in self.my_units():
            yield from self.unit_batches(unit)

    def unit_batches(self, unit: Unit) -> Iterator[Batch]:
        done = set(self.done.get(unit.id, np.zeros(0, np.int64)).tolist())
        chunk: list[Item] = []
        held: list[Item] | None = None
        seen = 0
        error = None
        try:
            for item in self._items(unit):
                seen = item.position + 1
                chunk.append(item)
                if len(chunk) == self.batch_size:
                    if held is not None and not _all_done(held, done):
                        yield self._batch(unit, held, done, None)
                    held, chunk = chunk, []
        except UnitReadError as exc:
            error = str(exc)
        # The last batch carries the unit's end, so it is held back one slice: only now is it known to be last.
        if held is not None and chunk:
            if not _all_done(held, done):
                yield self._batch(unit, held, done, None)
            held = None
        yield self._batch(
            unit, held if held is not None else chunk, done, UnitMark(unit.id, unit.ordinal, True, seen, error)
        )

    def _batch(self, unit: Unit, items: list[Item], done: set[int], end: UnitMark | None) -> Batch:
        samples = [self._sample(unit, item) for item in items if item.position not in done]
        if end is not None and end.error is not None:
            failure = Failure(unit.index(UNIT_FAILED), unit.location, "UnitReadError", end.error)
            samples.append(Sample(failure.index, unit.location, error=failure))
        batch = collate(samples)
        batch.unit = end if end is not None else UnitMark(unit.id, unit.ordinal)
        batch.unit.start = unit.start
        return batch

    def _sample(self, unit: Unit, item: Item) -> Sample:
        index = unit.index(item.position)
        if item.error is not None:
            kind = "RejectedPath" if unit.kind == "range" else "UnreadableItem"
            return Sample(index, item.key, label=item.label, error=Failure(index, item.key, kind, item.error))
        try:
            data = item.data if item.data is not None else self._read(item.key)
            if self.decode:
                return Sample(index, item.key, image=self.decoder.decode(data), label=item.label)
            if nvjpeg_can_take(data, self.decoder.max_pixels):
                return Sample(index, item.key, label=item.label, data=data)
            return Sample(index, item.key, image=self.decoder.decode(data), label=item.label)
        except Exception as exc:  # this item's error record, never the unit's end
            return Sample(index, item.key, label=item.label, error=Failure.from_exception(index, item.key, exc))

    def _read(self, path: str) -> bytes:
        if not _remote(path):
            return self.decoder.read(path)
        with open_binary(path, self.storage_options) as f:
            return f.read()

    def _items(self, unit: Unit) -> Iterator[Item]:
        if unit.kind == "tar":
            extensions = tuple(self.read.get("extensions") or IMAGE_EXTENSIONS)
            yield from tar_items(unit.location, self.storage_options, extensions)
        elif unit.kind == "parquet":
            yield from parquet_items(
                unit.location,
                self.storage_options,
                self.read.get("image_column"),
                self.read.get("label_column", "label"),
                self.read.get("key_column", "path"),
            )
        else:
            yield from self._range_items(unit)

    def _range_items(self, unit: Unit) -> Iterator[Item]:
        try:
            entries = read_range(unit, self.storage_options)
        except OSError as exc:
            raise UnitReadError(f"{type(exc).__name__}: {exc}") from exc
        base = self.read.get("list_folder", ".")
        # Path checks here, per unit in the worker, not over the whole list before the first batch.
        policy: PathPolicy = self.read.get("path_policy", "reject")
        rejected = dict(check_paths(entries, base, self.read.get("path_root"), policy)) if not _remote(base) else {}
        for i, entry in enumerate(entries):
            full = entry if entry.startswith("/") or "://" in entry else f"{base.rstrip('/')}/{entry}"
            yield Item(i, full, None, error=rejected.get(i))


def _all_done(items: list[Item], done: set[int]) -> bool:
    return bool(done) and all(item.position in done for item in items)


def _remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")
