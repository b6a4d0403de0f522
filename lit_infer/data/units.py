"""Units of work: a run is cut into input shards (a tar, a Parquet file), fixed ranges of a list, or pages of a folder
or table (their inputs as :class:`Entries`), found without reading a single image: what the units are, how large,
and which process takes which.

Every item is named by its unit and its position inside it. The dataset index the rest of the pipeline carries is
``unit.ordinal * ITEM_STRIDE + position``: stable across reruns, whatever is left to do, and known before the
unit is read (a tar's member count is not). ``lit-infer merge`` renumbers rows 0..N-1 in that order.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from lit_infer.data.storage import filesystem, fs_path, is_url, local_path, protocol
from lit_infer.records import NO_LABEL

BOM = b"\xef\xbb\xbf"
ITEM_STRIDE = 1 << 32
"""Items per unit the index can hold; a unit position is ``index % ITEM_STRIDE``."""
UNIT_FAILED = ITEM_STRIDE - 1
"""The position of a unit's own failure record (a shard that could not be opened or read to its end)."""

DEFAULT_UNIT_SIZE = 4096
"""Most inputs per page of a folder, table or list: a part per ~4k images keeps parts few (250 per million) and a
lost unit cheap."""
DECIDED_PAST = 64 * 16 * 63
"""Past this many inputs :func:`default_unit_size` is ``DEFAULT_UNIT_SIZE``, whatever the total."""

UnitKind = Literal["range", "page", "tar", "parquet"]
_BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}")


@dataclass(slots=True)  # not frozen: a million frozen instances take a second more to make
class Unit:
    """One unit of work.

    Args:
        id: Stable name, used for its part file: the shard's path relative to the source, or ``lines-<start>``.
        kind: ``tar`` (image members of a tar), ``parquet`` (rows of a file), ``range`` (entries of a list, read from
            its bytes), ``page`` (inputs ``start..stop`` of a listed folder or a table, held by the source's listing).
        location: The shard, table or list file (a local path or a URL).
        ordinal: Position among the run's units; the high bits of its items' indices.
        start: First entry of a range (its position in the list).
        stop: One past its last entry.
        byte_start: Where the range starts in the list file, so a worker reads only its own lines.
        byte_stop: Where it ends.
    """

    id: str
    kind: UnitKind
    location: str
    ordinal: int
    start: int = 0
    stop: int = 0
    byte_start: int = 0
    byte_stop: int = 0

    def index(self, position: int) -> int:
        return self.ordinal * ITEM_STRIDE + position

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_unit_size(num_items: int) -> int:
    """Pages of a source of ``num_items`` inputs: 4096, or fewer so that a small source still makes 16 units for the
    decoding workers to share (a unit is read by one worker), in multiples of 64 so that common batch sizes fill
    them. A function of the source alone: the same source is cut the same way whatever the batch size or workers,
    so a rerun with other settings resumes."""
    return max(64, min(DEFAULT_UNIT_SIZE, 64 * -(-num_items // (64 * 16))))


@dataclass
class Entries:
    """Inputs of a page (or of a whole table): one numpy byte array of paths, not a list of Python strings, so that
    DataLoader workers read them without touching reference counts (no copy-on-write creep).

    Attributes:
        paths: Each input's path or URL (UTF-8, undecodable bytes kept as they are).
        labels: Each one's label, or ``NO_LABEL``.
        rejected: Position -> why the entry is refused without being read (a path escaping the root, an empty row).
        versions: Each object's ``size:ETag`` as a bucket's listing gave it (no ``HEAD`` per object then), empty
            bytes where the reading worker asks; ``None`` where no listing gave any.
        modified: Each such object's modification time (seconds since the epoch), beside ``versions``.
    """

    paths: np.ndarray
    labels: np.ndarray
    rejected: dict[int, str] = field(default_factory=dict)
    versions: np.ndarray | None = None
    modified: np.ndarray | None = None

    @classmethod
    def of(
        cls,
        paths: list[str],
        labels: list[int] | None = None,
        rejected: list[tuple[int, str]] | dict[int, str] = (),
        versions: list[tuple[str, float] | None] | None = None,
    ) -> Entries:
        encoded = np.array([p.encode("utf-8", "surrogateescape") for p in paths], dtype=np.bytes_)
        labels_array = np.asarray(labels if labels is not None else [NO_LABEL] * len(paths), np.int64)
        if not versions or all(v is None for v in versions):
            return cls(encoded, labels_array, dict(rejected))
        tags = np.array([(v[0] if v else "").encode("utf-8", "surrogateescape") for v in versions], np.bytes_)
        times = np.array([v[1] if v else 0.0 for v in versions], np.float64)
        return cls(encoded, labels_array, dict(rejected), tags, times)

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, i: int) -> str:
        return self.paths[i].decode("utf-8", "surrogateescape")

    def version(self, i: int) -> tuple[str, float] | None:
        """Input ``i``'s version as its listing gave it, ``None`` where it must be asked for."""
        if self.versions is None or not self.versions[i]:
            return None
        return self.versions[i].decode("utf-8", "surrogateescape"), float(self.modified[i])  # type: ignore[index]

    def page(self, start: int, stop: int) -> Entries:
        """Inputs ``start .. stop-1``, numbered from 0."""
        rejected = {i - start: why for i, why in self.rejected.items() if start <= i < stop}
        at, listed = slice(start, stop), self.versions is not None
        versions, modified = (self.versions[at], self.modified[at]) if listed else (None, None)  # type: ignore[index]
        return Entries(self.paths[at], self.labels[at], rejected, versions, modified)


def split(index: int) -> tuple[int, int]:
    """Dataset index -> (unit ordinal, position in the unit)."""
    return index // ITEM_STRIDE, index % ITEM_STRIDE


def expand_braces(pattern: str) -> list[str]:
    """``shards/{000000..000002}.tar`` -> the three names, zero padding kept (webdataset's brace notation)."""
    m = _BRACE.search(pattern)
    if not m:
        return [pattern]
    lo, hi = m.group(1), m.group(2)
    width = len(lo) if lo.startswith("0") else 0
    out = []
    for n in range(int(lo), int(hi) + 1):
        out += expand_braces(pattern[: m.start()] + str(n).zfill(width) + pattern[m.end() :])
    return out


def is_pattern(source: str) -> bool:
    return bool(_BRACE.search(source)) or any(c in source for c in "*?[")


def find_files(source: str, suffixes: tuple[str, ...], storage_options: dict[str, Any] | None = None) -> list[str]:
    """The files of ``source`` ending in ``suffixes``: a brace pattern, a glob, a folder (one level), or one file.

    One listing of the folder (or of each glob): never a stat of every file, never opening one.
    """
    if _BRACE.search(source):
        return expand_braces(source)  # named explicitly: a missing one is that shard's recorded failure
    if is_url(source) and protocol(source) != "file":
        fs = filesystem(source, storage_options)
        scheme = source.split("://", 1)[0]
        if any(c in source for c in "*?["):
            found = fs.glob(fs_path(source))
        elif fs.isdir(fs_path(source)):
            found = fs.ls(fs_path(source), detail=False)
        else:
            found = [fs_path(source)]
        named = (f if "://" in f else f"{scheme}://{f}" for f in found)  # HTTP listings are whole URLs already
        return sorted(f for f in named if f.lower().endswith(suffixes))
    local = local_path(source)
    if any(c in local for c in "*?["):
        return sorted(f for f in glob.glob(local) if f.lower().endswith(suffixes))
    if os.path.isdir(local):
        return sorted(os.path.join(local, n) for n in os.listdir(local) if n.lower().endswith(suffixes))
    return [local]


def shard_units(files: list[str], kind: UnitKind, source: str) -> list[Unit]:
    """One unit per file, named by its path below the files' common folder (``000123.tar``)."""
    bare = [f.split("://", 1)[-1] for f in files]
    # String prefix and slicing, not os.path.commonpath/relpath: 200,000 shard names in 1 s instead of 10 (2 busy cores).
    first, last = (min(bare), max(bare)) if bare else ("", "")
    base = os.path.dirname(first) if first == last else os.path.commonpath([first, last])  # all share it
    cut = len(base) + 1 if base else 0
    return [Unit(b[cut:], kind, f, i) for i, (f, b) in enumerate(zip(files, bare, strict=True))]


def list_units(
    list_file: str, unit_size: int, data: bytes | None = None, storage_options: dict[str, Any] | None = None
) -> list[Unit]:
    """Fixed ranges of ``unit_size`` entries of a ``.txt`` list, with their byte ranges: one pass over the bytes.

    Blank lines and ``#`` comments are not entries (as in a list source); a range's positions count entries only.
    """
    data = read_bytes(list_file, storage_options) if data is None else data
    units: list[Unit] = []
    entries, range_start, byte_start, pos = 0, 0, 0, 0
    for line in data.split(b"\n"):
        line += b"\n"  # the last piece has none; counting it past the end only moves byte_stop beyond the file
        stripped = line.removeprefix(BOM).strip(b" \t\r\n") if pos == 0 else line.strip(b" \t\r\n")
        if stripped and not stripped.startswith(b"#"):
            if entries - range_start == unit_size:
                units.append(_range(list_file, len(units), range_start, entries, byte_start, pos))
                range_start, byte_start = entries, pos
            entries += 1
        pos += len(line)
    if entries > range_start:
        units.append(_range(list_file, len(units), range_start, entries, byte_start, min(pos, len(data))))
    return units


def _range(location: str, ordinal: int, start: int, stop: int, byte_start: int, byte_stop: int) -> Unit:
    return Unit(f"lines-{start:012d}", "range", location, ordinal, start, stop, byte_start, byte_stop)


def read_bytes(path: str, storage_options: dict[str, Any] | None = None) -> bytes:
    if is_url(path) and protocol(path) != "file":
        return filesystem(path, storage_options).cat_file(fs_path(path))
    with open(local_path(path), "rb") as f:
        return f.read()


def read_range(unit: Unit, storage_options: dict[str, Any] | None = None) -> list[str]:
    """The entries of a range unit, read from its own bytes of the list file."""
    path = unit.location
    if is_url(path) and protocol(path) != "file":
        fs = filesystem(path, storage_options)
        data = fs.cat_file(fs_path(path), start=unit.byte_start, end=unit.byte_stop)
    else:
        with open(local_path(path), "rb") as f:
            f.seek(unit.byte_start)
            data = f.read(unit.byte_stop - unit.byte_start)
    # Split on "\n" only, as a whole-list source does: a file name may hold U+2028 or \x0c.
    text = data.decode("utf-8", "surrogateescape")
    text = text.removeprefix("\ufeff") if unit.byte_start == 0 else text  # a BOM, as utf-8-sig drops it
    lines = [raw.strip(" \t\r") for raw in text.split("\n")]
    entries = [line for line in lines if line and not line.startswith("#")]
    if len(entries) != unit.stop - unit.start:
        raise OSError(f"{path!r} changed since the source was listed: {len(entries)} entries in {unit.id}")
    return entries


def units_digest(units: list[Unit]) -> str:
    """What the listing is cut into, for the run's fingerprint: ids, kinds and ranges (not the bytes of every image)."""
    h = hashlib.sha256()
    for u in units:
        h.update(f"{u.id}\0{u.kind}\0{u.start}\0{u.stop}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def slot(rank: int, world_size: int, worker: int) -> int:
    """A (rank, DataLoader worker)'s first ordinal in a fixed share; it then takes every
    ``world_size * num_workers``-th. Ranks first: 2 shards on 2 ranks x 2 workers give each rank one."""
    return worker * world_size + rank


def assign(units: list[Unit], rank: int, world_size: int, worker: int, num_workers: int) -> list[Unit]:
    """The units of one DataLoader worker of one rank: every unit to exactly one (rank, worker), round robin over
    the ordinals (known before a folder's listing reaches them, so a worker takes its pages as they are cut).

    Units with a part each are leased between several ranks instead (data/leases.py), so that a slow rank takes
    fewer. With fewer units than ``world_size * num_workers`` the last slots get none and end.
    """
    slots = world_size * max(1, num_workers)
    first = slot(rank, world_size, worker)
    return [u for u in units if u.ordinal % slots == first]
