"""Units -> batches, in DataLoader workers: the one dataset of every source (folder, list, table, shards, Parquet).

Each worker reads its own units front to back and cuts each into batches. A batch never spans two units, and its
items are a fixed slice of its unit (positions ``k*B .. k*B+B-1``), so what a batch holds depends on the item alone,
never on what an earlier attempt left: a resumed run predicts the same batches as an uninterrupted one, byte for
byte. Already committed items are skipped; a slice with nothing left is never read past. Each batch carries a
:class:`~lit_infer.records.UnitMark`; the last of a unit says how many items it had (or why it could not be read to
its end), so the writer can commit that unit's part. A file that cannot be read or decoded becomes a sample carrying
its error, never a neighbour.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from lit_infer.data.cache import CacheFill, UnitCache
from lit_infer.data.decode import Decoder
from lit_infer.data.gpu_decode import nvjpeg_can_take
from lit_infer.data.identity import MISSING, Version, file_version, inputs_version
from lit_infer.data.leases import UnitLeases
from lit_infer.data.options import Inputs
from lit_infer.data.shard_readers import Item, UnitReadError, parquet_items, tar_items
from lit_infer.data.sources import SourceListing, check_paths, resolve
from lit_infer.data.storage import is_url, protocol
from lit_infer.data.units import UNIT_FAILED, Unit, assign, read_range, slot
from lit_infer.records import Batch, EncodedFiles, Failure, Sample, UnitMark


class UnitDataset(IterableDataset[Batch]):
    """Yields whole batches (use ``DataLoader(batch_size=None)``), each from one unit of this rank and worker.

    Args:
        source: The source's listing: its units, and the inputs of a folder or table.
        decoder: Reading (``data.reading``: the path fence, file identity, retries, timeout, storage options) and
            Pillow decoding.
        batch_size: Items per batch (the last batch of a unit may be smaller).
        inputs: Which members of a tar shard, which columns of a Parquet file (``data.inputs``).
        list_folder: Where a list's relative entries are read from.
        decode: False: bytes go to the device for nvJPEG where it can take them.
        cache: Where decoded units keep their pixels (``data.decoding.cache_dir``), or ``None``.
    """

    def __init__(
        self,
        source: SourceListing,
        decoder: Decoder,
        batch_size: int = 1,
        inputs: Inputs = Inputs(),
        list_folder: str = ".",
        decode: bool = True,
        cache: UnitCache | None = None,
    ) -> None:
        self.source = source
        self.done_units: set[int] = set()
        """Ordinals of the units an earlier attempt committed: never read again."""
        self.decoder = decoder
        self.batch_size = batch_size
        self.rank, self.world_size, self.workers = 0, 1, 0
        self.done: dict[str, np.ndarray] = {}
        """Unit id -> positions an earlier attempt committed in a unit it did not finish."""
        self.leases: UnitLeases | None = None  # several ranks: units leased by whichever process is free
        self.inputs, self.reading, self.list_folder = inputs, decoder.reading, list_folder
        self.decode = decode
        self.cache = cache
        self._probe: list[Item] | None = None
        self._range: tuple[Unit, list[Item]] | None = None  # the last list range read, for its version and its items

    def split(
        self,
        done_units: set[int],
        done: Mapping[str, np.ndarray],
        rank: int,
        world_size: int,
        batch: int,
        workers: int = 0,
        leases: UnitLeases | None = None,
    ) -> None:
        """What this rank's loader reads: every unit but ``done_units`` (ordinals), less the positions in ``done``
        (unit id -> positions an earlier attempt staged), in batches of ``batch``, shared between ``workers``
        DataLoader workers: leased as each process becomes free with ``leases`` (unit ordinals, the same on every
        rank), else a fixed share each (round robin over the ordinals)."""
        self.done_units, self.done, self.leases = set(done_units), dict(done), leases
        self.rank, self.world_size, self.batch_size, self.workers = rank, world_size, batch, workers

    def expected_items(self) -> int | None:
        """The inputs this rank will read (all its workers), if every one of its units' sizes is known (pages once a
        folder's listing has ended, list ranges, Parquet files); ``None`` for tar shards, a folder still being listed,
        and leased units (not known in advance)."""
        if self.leases is not None or not self.source.ended():
            return None
        sizes = self.pending_items(self.rank_units())
        return sum(sizes) if sizes is not None else None

    def pending_items(self, units: list[Unit]) -> list[int] | None:
        """The inputs still to read in each of ``units``, or ``None`` if a size is only known once read (a tar
        shard, an unreadable Parquet file)."""
        if any(u.stop <= u.start for u in units):
            return None
        return [0 if u.ordinal in self.done_units else u.stop - u.start - len(self.done.get(u.id, ())) for u in units]

    def rank_units(self) -> list[Unit] | None:
        """The units this rank will read (all its workers) in a fixed share, once they are all known (``None``
        while a folder is being listed): what its progress counts when its inputs are not known before reading (tar
        shards). Leased units are not known in advance: see ``leases``."""
        if not self.source.ended():
            return None
        units = self.source.all_units()
        mine = [
            u for w in range(max(1, self.workers)) for u in assign(units, self.rank, self.world_size, w, self.workers)
        ]
        return [u for u in mine if u.ordinal not in self.done_units]

    def my_units(self) -> Iterator[Unit]:
        """The units this process reads: leased one by one as it asks for more work, or its fixed share (every
        ``slots``-th ordinal from its own); a folder's as its listing reaches them. Units done before are skipped."""
        if self.leases is not None:
            ordinals: Iterator[int] = iter(self.leases.next, None)
        else:
            info = get_worker_info()
            worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
            ordinals = itertools.count(slot(self.rank, self.world_size, worker), self.world_size * workers)
        for ordinal in ordinals:
            unit = self.source.unit(ordinal)
            if unit is None:
                return
            if ordinal not in self.done_units:
                yield unit

    def probe(self, i: int) -> Sample:
        """Item ``i`` (< 8) of the first unit, decoded (to measure decoding's CPU cost before the run). The unit is
        opened once for all probes: a list range checks its paths, a shard streams its first members."""
        first = self.source.unit(0)
        assert first is not None, "a source without units is refused when listed"
        if self._probe is None:
            self._probe = list(itertools.islice(self._items(first), 8))
        item = next((it for it in self._probe if it.position == i), None)
        return self._sample(first, item) if item is not None else Sample(i, "")

    def __iter__(self) -> Iterator[Batch]:
        for unit in self.my_units():
            yield from self.unit_batches(unit)

    def version(self, unit: Unit) -> Version:
        """What ``unit`` reads, named without decoding it (:mod:`lit_infer.data.identity`): a shard by its own size
        and modification time or ETag; a page or a list range by each of its inputs' (those the path fence refuses
        are never asked). Asked by the worker as it starts the unit, and by a resume of the units it must trust."""
        options = self.decoder.storage_options
        if unit.kind in ("tar", "parquet"):
            tag, modified = file_version(unit.location, "stat", options)
            return Version(tag, unit.location, modified)
        try:
            items = [it for it in self._path_items(unit) if it.error is None]
        except UnitReadError:  # the list cannot be read now: the unit's own failure record, when it is read
            return Version(MISSING, unit.location)
        known = None
        if unit.kind == "page":
            entries = self.source.page(unit)
            known = [entries.version(it.position) for it in items]
        identity = self.reading.file_identity
        version = inputs_version([it.key for it in items], identity, options, known)  # type: ignore[arg-type]
        refused = [f"{it.position}\0{it.key}" for it in self._path_items(unit) if it.error is not None]
        if refused:  # which inputs the fence refuses is part of what the unit's rows say
            fence = hashlib.sha256("\n".join(refused).encode("utf-8", "surrogateescape")).hexdigest()[:16]
            version = version._replace(tag=f"{version.tag}:refused:{fence}")
        return version

    def unit_batches(self, unit: Unit) -> Iterator[Batch]:
        done = set(self.done.get(unit.id, np.zeros(0, np.int64)).tolist())
        # What the unit reads, named before it is read: it goes with each batch into the unit's stage and its part,
        # so that a resume can tell inputs rewritten since (lifecycle/changed.py).
        version = self.version(unit).tag
        items, fill = self._items(unit), None
        if self.cache is not None and self.decode and not done:  # a unit read whole: its pixels may be kept
            key = self._cache_key(unit, version)
            cached = self.cache.load(key)
            if cached is not None:
                items = _cached_items(*cached)
            else:
                fill = self.cache.fill(key)
        chunk: list[Item] = []
        held: list[Item] | None = None
        seen = 0
        error = None
        try:
            for item in items:
                seen = item.position + 1
                chunk.append(item)
                if len(chunk) == self.batch_size:
                    if held is not None and not _all_done(held, done):
                        yield self._batch(unit, held, done, UnitMark(unit.id, unit.ordinal, version=version), fill)
                    held, chunk = chunk, []
        except UnitReadError as exc:
            error = str(exc)
        # The last batch carries the unit's end, so it is held back one slice: only now is it known to be last.
        if held is not None and chunk:
            if not _all_done(held, done):
                yield self._batch(unit, held, done, UnitMark(unit.id, unit.ordinal, version=version), fill)
            held = None
        mark = UnitMark(unit.id, unit.ordinal, True, seen, error, version=version)
        yield self._batch(unit, held if held is not None else chunk, done, mark, fill)
        if fill is not None:
            fill.commit() if error is None else fill.abandon()

    def _batch(self, unit: Unit, items: list[Item], done: set[int], mark: UnitMark, fill: CacheFill | None) -> Batch:
        samples = [self._sample(unit, item) for item in items if item.position not in done]
        if fill is not None:
            for item, sample in zip((i for i in items if i.position not in done), samples, strict=True):
                if sample.image is None:  # a failed item: it is read again next time, so the unit is not kept
                    fill.abandon()
                    break
                fill.add(item.position, sample.path, sample.label, sample.image.numpy())
        if mark.error is not None:
            failure = Failure(unit.index(UNIT_FAILED), unit.location, "UnitReadError", mark.error)
            samples.append(Sample(failure.index, unit.location, error=failure))
        batch = collate(samples)
        batch.unit = mark
        batch.unit.start = unit.start
        return batch

    def _sample(self, unit: Unit, item: Item) -> Sample:
        index = unit.index(item.position)
        if item.image is not None:
            return Sample(index, item.key, image=item.image, label=item.label)
        if item.error is not None:
            kind = "RejectedPath" if unit.kind in ("range", "page") else "UnreadableItem"
            return Sample(index, item.key, label=item.label, error=Failure(index, item.key, kind, item.error))
        try:
            data = item.data if item.data is not None else self.decoder.read(item.key)
            if self.decode:
                return Sample(index, item.key, image=self.decoder.decode(data), label=item.label)
            if nvjpeg_can_take(data, self.decoder.max_pixels):
                return Sample(index, item.key, label=item.label, data=data)
            # Not for nvJPEG (a PNG, a CMYK or rotated JPEG): decoded here, in the worker, as with decode=cpu.
            return Sample(index, item.key, image=self.decoder.decode(data), label=item.label)
        except Exception as exc:  # this item's error record, never the unit's end
            return Sample(index, item.key, label=item.label, error=Failure.from_exception(index, item.key, exc))

    def _items(self, unit: Unit) -> Iterator[Item]:
        options = self.decoder.storage_options
        reading = {"retries": self.reading.io_retries, "backoff_s": self.decoder.io_backoff_s}
        reading["timeout"] = self.reading.read_timeout
        if unit.kind == "tar":
            yield from tar_items(unit.location, options, self.inputs.extensions, **reading)
        elif unit.kind == "parquet":
            yield from parquet_items(
                unit.location,
                options,
                self.inputs.image_column,
                self.inputs.label_column,
                self.inputs.path_column,
                **reading,
            )
        else:
            yield from self._path_items(unit)

    def _path_items(self, unit: Unit) -> list[Item]:
        """The inputs of a page (held by the listing) or a list range (its own bytes of the list, read once per
        unit however often asked), each with the fence's verdict on its path."""
        last = self._range  # read once: a resume asks for versions from several threads
        if last is not None and last[0] is unit:
            return last[1]
        if unit.kind == "page":
            entries = self.source.page(unit)
            items = [
                Item(i, entries.path(i), None, int(entries.labels[i]), entries.rejected.get(i))
                for i in range(len(entries))
            ]
            self._range = (unit, items)
            return items
        try:
            lines = read_range(unit, self.decoder.storage_options)
        except OSError as exc:
            raise UnitReadError(f"{type(exc).__name__}: {exc}") from exc
        base, fence = self.list_folder, self.reading
        # Path checks here, per unit in the worker, not over the whole list before the first batch.
        rejected = dict(check_paths(lines, base, fence.path_root, fence.path_policy)) if not _remote(base) else {}
        items = [Item(i, resolve(base, line), None, error=rejected.get(i)) for i, line in enumerate(lines)]
        self._range = (unit, items)
        return items

    def _cache_key(self, unit: Unit, version: str) -> str:
        """What the unit reads, down to each input's size and modification time or ETag (its ``version``, already
        asked for: one stat or HEAD per input, not two)."""
        h = hashlib.sha256(
            f"{unit.kind}\0{unit.location}\0{unit.start}\0{unit.stop}\0{version}".encode("utf-8", "surrogateescape")
        )
        return h.hexdigest()[:32]


def _cached_items(items: list[list[Any]], pixels: np.ndarray) -> Iterator[Item]:
    for row, (position, key, label) in enumerate(items):
        yield Item(position, key, None, label, image=torch.from_numpy(np.array(pixels[row])))


def _all_done(items: list[Item], done: set[int]) -> bool:
    return bool(done) and all(item.position in done for item in items)


def _remote(path: str) -> bool:
    return is_url(path) and protocol(path) != "file"


def collate(samples: list[Sample]) -> Batch:
    """Stack decoded images into N x H x W x C uint8 (shared memory inside a worker) and view it as N x C x H x W.

    With device decoding, ``encoded`` packs every item's bytes in order, none for those decoded here (whose pixels
    are ``images``, in the same order); a batch with nothing left to decode on the device is a plain one.
    """
    good = [s for s in samples if s.error is None]
    failures = [s.error for s in samples if s.error is not None]
    indices = torch.tensor([s.index for s in good], dtype=torch.int64)
    labels = torch.tensor([s.label for s in good], dtype=torch.int64)
    paths = [s.path for s in good]
    in_worker = get_worker_info() is not None
    encoded = EncodedFiles.pack([s.data for s in good], in_worker) if any(s.data is not None for s in good) else None
    decoded = [s.image for s in good if s.image is not None]
    if not decoded:
        return Batch(torch.empty(0, 3, 0, 0, dtype=torch.uint8), indices, paths, labels, failures, encoded)
    if len({d.shape for d in decoded}) > 1:  # whole images at their own sizes (crop_mode: none): a list, unstacked
        return Batch([d.permute(2, 0, 1) for d in decoded], indices, paths, labels, failures, encoded)
    first = decoded[0]
    out = None
    if in_worker:
        # Write the stack straight into shared memory, as the default collate does: one copy fewer per batch.
        storage = first._typed_storage()._new_shared(len(decoded) * first.numel(), device=first.device)
        out = first.new(storage).resize_(len(decoded), *first.shape)
    images = torch.stack(decoded, out=out)
    return Batch(images.permute(0, 3, 1, 2), indices, paths, labels, failures, encoded)
