"""What a source is, as units of work: a folder (local or behind a URL), a ``.txt`` list, a ``.csv`` table, tar
shards or Parquet files -> a :class:`SourceListing`. Pure functions over the filesystem; nothing here decodes an image.

- A folder is listed while the run reads it (:mod:`lit_infer.data.pages`): walked one directory at a time in sorted
  order (:mod:`lit_infer.data.listing`), its files cut into fixed pages of ``unit_size`` as they are found. Its
  class sub-folders (labels) come from its own entries, as torchvision's ``ImageFolder`` finds its classes.
- A ``.csv`` table is read once (its labels may be class names, whose sorted set numbers them), then paged alike.
- A ``.txt`` list is cut into ranges of its bytes (:func:`~lit_infer.data.units.list_units`): a worker reads only its
  own lines and checks their paths, and nothing but the list's bytes is read before the first batch.
- Tar shards and Parquet files are a unit each.

Nothing here asks for a file's size or modification time: what each unit read is named by the worker that reads it
(:mod:`lit_infer.data.identity`), so a folder's listing costs its directory entries alone.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lit_infer.data.listing import FolderWalk
from lit_infer.data.pages import FolderPages
from lit_infer.data.storage import is_url, local_path, open_binary, protocol
from lit_infer.data.units import (
    Entries,
    Unit,
    default_unit_size,
    find_files,
    is_pattern,
    list_units,
    read_bytes,
    shard_units,
    units_digest,
)
from lit_infer.errors import ConfigError
from lit_infer.records import NO_LABEL

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
LIST_SUFFIXES = (".txt", ".lst")
TABLE_SUFFIXES = (".csv",)
TAR_SUFFIXES = (".tar",)
PARQUET_SUFFIXES = (".parquet", ".pq")
PathPolicy = Literal["reject", "allow"]
SourceKind = Literal["folder", "table", "list", "tar", "parquet"]


@dataclass
class SourceListing:
    """A source cut into units of work, with what is known of it before any image is read.

    Attributes:
        kind: ``folder``, ``table``, ``list``, ``tar`` or ``parquet``.
        units: The units, in order (``unit.ordinal`` is the position); a folder's only once its listing has ended
            (:meth:`ended`): ask for one with :meth:`unit`, for all with :meth:`all_units`.
        entries: The inputs of a table or a glob (the units are pages of it); ``None`` for the others.
        class_names: Class names the labels index (class sub-folders, or a table's label names), or ``None``.
        from_folders: The labels are class sub-folder names (used only if they are the model's classes).
        num_items: Inputs of the whole source, when known (a list, a table, Parquet footers, a folder whose
            listing has ended); ``None`` for tar shards and a folder still being listed.
        identity: What names this source in the run's fingerprint: a list's or table's bytes, not each file's
            version (each unit's own, recorded with its part), nor a folder's names (each page's, in its version).
        pages: A folder's pages, listed while the run reads them; ``None`` for the others.
    """

    kind: SourceKind
    units: list[Unit]
    entries: Entries | None = None
    class_names: list[str] | None = None
    from_folders: bool = False
    num_items: int | None = None
    identity: dict[str, Any] = field(default_factory=dict)
    pages: FolderPages | None = None

    def unit(self, ordinal: int) -> Unit | None:
        """Unit ``ordinal``, or ``None`` past the last (a folder's: waiting for its listing to reach it)."""
        if self.pages is not None:
            return self.pages.unit(ordinal)
        return self.units[ordinal] if ordinal < len(self.units) else None

    def all_units(self) -> list[Unit]:
        """Every unit (a folder's: waiting for its listing to end)."""
        if self.pages is not None and not self.ended():
            self.pages.all_units()  # waits for the listing's end
            self.ended()
        return self.units

    def ended(self) -> bool:
        """Whether every unit is known (a folder's listing has ended); its units and inputs are then counted."""
        if self.pages is not None and self.num_items is None and (end := self.pages.end()) is not None:
            self.units, self.num_items = self.pages.all_units(), end["items"]
        return self.pages is None or self.num_items is not None

    def page(self, unit: Unit) -> Entries:
        """The inputs of a page unit (of a folder or a table), numbered from 0."""
        if self.pages is not None:
            return self.pages.entries(unit)
        assert self.entries is not None, "a page unit comes from a listed folder or a table"
        return self.entries.page(unit.start, unit.stop)

    def close(self) -> None:
        """Stop a folder's listing and remove its pages."""
        if self.pages is not None:
            self.pages.close()

    def describe(self) -> str:
        """The source in plain words, for the start line: ``3 tar shards``, ``a list of 2,000 images``."""
        if not self.ended():
            return "a folder (listed while it is read)"
        n = len(self.units)
        if self.kind in ("tar", "parquet"):
            noun = "tar shard" if self.kind == "tar" else "Parquet file"
            rows = f" ({self.num_items:,} rows)" if self.num_items is not None else ""
            return f"{n:,} {noun}{'s' if n != 1 else ''}{rows}"
        what = {"folder": "a folder", "table": "a table", "list": "a list"}[self.kind]
        images = f"{self.num_items:,} image{'s' if self.num_items != 1 else ''}"
        return f"{what} of {images}" + (f" ({n:,} units)" if n > 1 else "")


def source_kind(source: str) -> SourceKind:
    """What ``source`` is, from its name (and, for a folder, whether it holds shards or Parquet files)."""
    lower = source.lower().rstrip("/")
    if lower.endswith(TAR_SUFFIXES) or (is_pattern(source) and ".tar" in lower):
        return "tar"
    if lower.endswith(PARQUET_SUFFIXES) or (is_pattern(source) and ".parquet" in lower):
        return "parquet"
    if lower.endswith(LIST_SUFFIXES):
        return "list"
    if lower.endswith(TABLE_SUFFIXES):
        return "table"
    return "folder"


def list_source(
    source: str,
    unit_size: int | None,
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
    labels_from_folders: bool = True,
    path_column: str = "path",
    label_column: str | None = "label",
    root: str | None = None,
    path_policy: PathPolicy = "reject",
    identity: str = "stat",
    storage_options: dict[str, Any] | None = None,
) -> SourceListing:
    """Cut ``source`` into units (of ``unit_size`` inputs, ``None``: :func:`default_unit_size`); raise
    :class:`ConfigError` naming ``data.source`` when it holds no inputs."""
    remote = is_url(source) and protocol(source) != "file"
    if remote and identity == "content":
        raise ConfigError(
            "data.reading.file_identity",
            identity,
            "objects behind a URL are identified by their size and ETag, not read twice",
            "Use data.reading.file_identity=stat",
        )
    kind = source_kind(source)
    if kind == "folder" and not is_url(source) and not os.path.exists(source) and glob.has_magic(source):
        listing = _glob(source, unit_size, extensions, root, path_policy)
    elif kind == "folder":
        listing = _folder(source, unit_size, extensions, labels_from_folders, root, path_policy, storage_options)
    elif kind == "table":
        listing = _table(source, unit_size, path_column, label_column, root, path_policy, storage_options)
    elif kind == "list":
        listing = _list(source, unit_size, root, storage_options)
    else:
        listing = _shards(source, kind, storage_options)
    if listing.unit(0) is None and not (listing.entries is not None and listing.entries.rejected):
        found = f"no images found (extensions: {', '.join(extensions)})" if kind == "folder" else f"no {kind} inputs"
        raise ConfigError("data.source", source, found, "Check the path, pattern or URL, or set data.inputs.extensions")
    if listing.pages is None:  # a folder's pages are named by their versions, each with its part
        listing.identity["units_sha256"] = units_digest(listing.units)
    return listing


# ---- folders ------------------------------------------------------------------------------------------------
def _folder(
    source: str,
    unit_size: int | None,
    extensions: tuple[str, ...],
    labels_from_folders: bool,
    root: str | None,
    policy: PathPolicy,
    storage_options: dict[str, Any] | None,
) -> SourceListing:
    """A folder listed while it is read (:class:`~lit_infer.data.pages.FolderPages`); returned once its first page
    is cut. One that holds no image but tar shards or Parquet files is read as those."""
    exts = tuple(e.lower() for e in extensions)
    remote = is_url(source) and protocol(source) != "file"
    if not remote and not os.path.isdir(local_path(source)):
        raise ConfigError(
            "data.source", source, "no such file or folder", "Point it at a folder of images, a list or a table"
        )
    walk = FolderWalk(source, exts, storage_options)  # lists the folder itself: its class sub-folders, its files
    # Class sub-folders (ImageFolder's convention: every folder in it, sorted) give labels when no image lies
    # beside them.
    class_names = walk.folders if labels_from_folders and walk.folders and not walk.holds(exts) else None
    label_of = None
    if class_names is not None:
        lookup = {name: i for i, name in enumerate(class_names)}
        label_of = lambda name: lookup.get(name.split("/", 1)[0], NO_LABEL)  # noqa: E731
    # Symlinked files in a folder the user named are read wherever they point (a curated subset of a dataset, as
    # torchvision's ImageFolder reads it); data.reading.path_root fences them in. Only regular files are ever read.
    fence = None
    if root is not None and not remote:
        fence = lambda paths, links: check_links(paths, links, root, policy)  # noqa: E731
    pages = FolderPages(source, iter(walk), unit_size, label_of, fence)
    if pages.start().unit(0) is None:
        pages.close()
        for kind, suffixes in (("tar", TAR_SUFFIXES), ("parquet", PARQUET_SUFFIXES)):
            if walk.holds(suffixes):
                return _shards(source, kind, storage_options)  # type: ignore[arg-type]
        return SourceListing("folder", [], num_items=0)
    listing = SourceListing("folder", [], None, class_names, class_names is not None, pages=pages)
    listing.ended()
    return listing


def _glob(
    pattern: str,
    unit_size: int | None,
    extensions: tuple[str, ...],
    root: str | None,
    policy: PathPolicy,
) -> SourceListing:
    """The images a quoted glob names (``'photos/*.jpg'``, ``'photos/**/*.png'``), sorted; no labels."""
    exts = tuple(e.lower() for e in extensions)
    paths = sorted(p for p in glob.glob(pattern, recursive=True) if p.lower().endswith(exts) and os.path.isfile(p))
    links = {p for p in paths if os.path.islink(p)}
    rejected = check_links(paths, links, root, policy) if root is not None else []
    entries = Entries.of(paths, None, rejected)
    ident = {"paths_sha256": _paths_digest(paths), "rejected": len(rejected)}
    return SourceListing(
        "folder", page_units(pattern, len(entries), unit_size), entries, None, False, len(entries), ident
    )


def page_units(source: str, num_items: int, unit_size: int | None) -> list[Unit]:
    """Fixed pages of ``unit_size`` inputs of a table or a glob (a folder's are cut as it is listed)."""
    unit_size = unit_size or default_unit_size(num_items)
    return [
        Unit(f"items-{start:012d}", "page", source, i, start, min(start + unit_size, num_items))
        for i, start in enumerate(range(0, num_items, unit_size))
    ]


# ---- tables and lists -----------------------------------------------------------------------------------------
# Paths are bytes on POSIX: a list or table is decoded as UTF-8 (a byte-order mark dropped), and bytes that are not
# UTF-8 (a latin-1 list, a name written by another system) are kept as they are (surrogateescape), so the entry still
# names the file on disk, exactly as os.listdir would give it.
def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape").removeprefix("\ufeff")


def _table(
    source: str,
    unit_size: int | None,
    path_column: str,
    label_column: str | None,
    root: str | None,
    policy: PathPolicy,
    storage_options: dict[str, Any] | None,
) -> SourceListing:
    remote = is_url(source) and protocol(source) != "file"
    try:
        data = read_bytes(source, storage_options)
    except FileNotFoundError:
        raise ConfigError("data.source", source, "no such file", "Point it at a .csv table") from None
    reader = csv.DictReader(io.StringIO(_text(data), newline=""))
    header = reader.fieldnames or []
    if path_column not in header:
        raise ConfigError(
            "data.inputs.path_column",
            path_column,
            f"not a column of {source!r} (columns: {header})",
            "Set data.inputs.path_column to the column holding the image paths",
        )
    rows = list(reader)
    # A short row has no cell for a column (DictReader gives None): an empty path becomes that row's error record.
    entries = [(row[path_column] or "").strip() for row in rows]
    if label_column and label_column not in header and label_column != "label":
        # The default may be absent (a table without labels); a column the user named must exist, or every label
        # would be silently dropped and the metrics with them.
        raise ConfigError(
            "data.inputs.label_column",
            label_column,
            f"not a column of {source!r} (columns: {header})",
            "Set data.inputs.label_column to the column holding the labels, or to null for none",
        )
    base = root if root is not None and not remote else list_folder(source)  # where relative entries are read from
    if not remote:
        check_relative_base(entries, base, source)
    paths = [resolve(base, e) for e in entries]
    labels, class_names = None, None
    if label_column and label_column in header:
        raw = [(row[label_column] or "").strip() for row in rows]
        if all(v.lstrip("-").isdigit() for v in raw if v):
            labels = [int(v) if v else NO_LABEL for v in raw]
        else:
            class_names = sorted({v for v in raw if v})
            lookup = {name: i for i, name in enumerate(class_names)}
            labels = [lookup[v] if v else NO_LABEL for v in raw]
    rejected = [] if remote else check_paths(entries, base, root, policy)
    if remote:
        rejected = [(i, "the row has no path (a short or empty row)") for i, e in enumerate(entries) if not e]
    found = Entries.of(paths, labels, rejected)
    return SourceListing(
        "table",
        page_units(source, len(found), unit_size),
        found,
        class_names,
        False,
        len(found),
        {"table_sha256": hashlib.sha256(data).hexdigest(), "rejected": len(rejected)},
    )


def _list(
    source: str, unit_size: int | None, root: str | None, storage_options: dict[str, Any] | None
) -> SourceListing:
    """Ranges of the list's bytes, whatever its length: each worker reads its own lines and checks their paths, so
    a million-line list costs one read of its bytes before the first batch."""
    try:
        data = read_bytes(source, storage_options)
    except FileNotFoundError:
        raise ConfigError("data.source", source, "no such file", "Point it at a .txt list of image paths") from None
    units = list_units(source, unit_size or default_unit_size(data.count(b"\n") + 1), data)
    remote = is_url(source) and protocol(source) != "file"
    if not remote:  # judged on the list's first entries alone
        base = root if root is not None else list_folder(source)
        lines = [line.strip(" \t\r") for line in _text(data[: 1 << 16]).split("\n")]
        check_relative_base([e for e in lines if e and not e.startswith("#")], base, source)
    num_items = units[-1].stop if units else 0
    return SourceListing("list", units, None, None, False, num_items, {"list_sha256": hashlib.sha256(data).hexdigest()})


def list_folder(source: str) -> str:
    """The folder relative entries of a list or table are relative to (``.`` for a list in the working folder)."""
    if is_url(source) and protocol(source) != "file":
        return source.rsplit("/", 1)[0]
    return str(Path(local_path(source)).parent)


def check_relative_base(entries: list[str], base: str, source: str, key: str = "data.source") -> None:
    """Refuse a list written relative to the working directory rather than to its own folder: every entry would be a
    "no such file" record. Judged on the first relative entries (a few ``stat`` calls, whatever the list's length):
    none found from ``base`` while most are found from the working directory."""
    sample = [e for e in entries[:_SAMPLE] if e and not os.path.isabs(e) and "://" not in e]
    if not sample or os.path.realpath(base) == os.path.realpath(os.getcwd()):
        return
    if any(os.path.lexists(os.path.join(base, e)) for e in sample):
        return
    here = sum(os.path.lexists(e) for e in sample)
    if here * 2 >= len(sample):
        raise ConfigError(
            key,
            source,
            f"its entries are relative to the working directory, not to {base!r} where relative entries are read "
            f"from ({here} of the first {len(sample)} exist from here, none from there)",
            f"Set data.reading.path_root={os.getcwd()!r}, or write the entries relative to {base!r} or absolute",
        )


_SAMPLE = 32


def resolve(base: str, entry: str) -> str:
    """Relative entries of a list or table are relative to its own folder, not to the working directory."""
    if not entry or entry.startswith("/") or "://" in entry:
        return entry
    return f"{base.rstrip('/')}/{entry}" if is_url(base) else os.path.join(base, entry)


# ---- shards -------------------------------------------------------------------------------------------------
def _shards(source: str, kind: SourceKind, storage_options: dict[str, Any] | None) -> SourceListing:
    suffixes = TAR_SUFFIXES if kind == "tar" else PARQUET_SUFFIXES
    files = find_files(source, suffixes, storage_options)
    units = shard_units(files, kind, source)  # type: ignore[arg-type]
    # The shards are named by path, not by their bytes: a shard that failed and was repaired must be retried by the
    # same run. Their sizes and tags belong in each unit's part record (a committed unit whose shard changed).
    ident: dict[str, Any] = {"shards": len(files)}
    num_items = _parquet_rows(units, storage_options) if kind == "parquet" else None
    return SourceListing(kind, units, None, None, False, num_items, ident)


def _parquet_rows(units: list[Unit], storage_options: dict[str, Any] | None) -> int | None:
    """The rows of every Parquet file, from their footers, as each unit's ``stop`` and in all (the progress bar's
    total); ``None`` if a file cannot be opened now (that unit's recorded failure later)."""
    import pyarrow.parquet as pq

    try:
        for unit in units:
            with open_binary(unit.location, storage_options) as fh:
                unit.stop = pq.ParquetFile(fh).metadata.num_rows
    except Exception:
        for unit in units:
            unit.stop = 0
        return None
    return sum(u.stop for u in units)


# ---- path checks --------------------------------------------------------------------------------------------
def check_links(
    paths: list[str], links: set[str], root: str | os.PathLike, policy: PathPolicy = "reject"
) -> list[tuple[int, str]]:
    """The symlinked files of a folder source that resolve outside ``root``, as (index, reason)."""
    if policy == "allow" or not links:
        return []
    limit = os.path.realpath(root)
    return [
        (index, f"the symlink resolves outside {limit!r} (set data.reading.path_root or data.reading.path_policy)")
        for index, path in enumerate(paths)
        if path in links and not _inside(os.path.realpath(path), limit)
    ]


def check_paths(
    entries: list[str], base: str | os.PathLike, root: str | os.PathLike | None, policy: PathPolicy = "reject"
) -> list[tuple[int, str]]:
    """The entries of a list that must not be read, as (index, reason).

    With ``policy="reject"``: an entry with a ``..`` component; a relative entry that resolves (through symlinks)
    outside ``root`` (default: the list's folder ``base``); an absolute entry outside ``root`` when one is declared.
    One ``lstat`` per entry and one ``realpath`` per folder, so a million-line list stays cheap.
    """
    if policy == "allow":
        return []
    if policy != "reject":
        raise ConfigError("data.reading.path_policy", policy, "unknown policy", "Use 'reject' or 'allow'")
    declared = root is not None
    limit = os.path.realpath(root if root is not None else base)
    folders: dict[str, str] = {}
    rejected = []
    for index, entry in enumerate(entries):
        if not entry:
            rejected.append((index, "the row has no path (a short or empty row)"))
            continue
        if ".." in Path(entry).parts or ".." in entry.replace("\\", "/").split("/"):
            rejected.append((index, "the path contains '..' (set data.reading.path_policy=allow to permit it)"))
            continue
        if os.path.isabs(entry) and not declared:
            continue
        full = entry if os.path.isabs(entry) else os.path.join(str(base), entry)
        folder, name = os.path.split(full)
        if folder not in folders:
            folders[folder] = os.path.realpath(folder)
        real = os.path.join(folders[folder], name)
        if os.path.islink(real):
            real = os.path.realpath(real)
        if not _inside(real, limit):
            rejected.append(
                (
                    index,
                    f"the path resolves outside {limit!r} (a symlink or an absolute path; set data.reading.path_root or data.reading.path_policy)",
                )
            )
    return rejected


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _paths_digest(paths: list[str]) -> str:
    return hashlib.sha256("\n".join(paths).encode("utf-8", "surrogateescape")).hexdigest()
