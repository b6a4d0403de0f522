"""Find the images of a source: a folder, a ``.txt`` list or a ``.csv`` table. Pure functions over the filesystem."""

from __future__ import annotations

import csv
import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lit_infer.errors import ConfigError
from lit_infer.records import NO_LABEL

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
LIST_SUFFIXES = (".txt", ".lst")
TABLE_SUFFIXES = (".csv",)
PathPolicy = Literal["reject", "allow"]


@dataclass
class ImageList:
    """The items of a source, in the order they will be numbered (their dataset index)."""

    paths: list[str]
    labels: list[int]
    class_names: list[str] | None = None
    root: str = "."
    rejected: list[tuple[int, str]] = field(default_factory=list)
    """Entries refused before reading (index, reason): they keep their place in ``paths`` and become error records,
    never silently dropped, never read."""

    entries: list[str] | None = None
    """The paths as written in a list or table, before joining them to its folder."""

    from_folders: bool = False
    """The labels are class sub-folder names: labels only if the model's classes agree (``ImageClassifier``)."""

    def __len__(self) -> int:
        return len(self.paths)


def discover(
    source: str | os.PathLike,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    labels_from_folders: bool = True,
    path_column: str = "path",
    label_column: str | None = "label",
    key: str = "data.source",
    root: str | os.PathLike | None = None,
    path_policy: PathPolicy = "reject",
) -> ImageList:
    """List the images of ``source``; raise :class:`ConfigError` naming ``key`` when there are none.

    Entries of a list or table that could reach files the source should not (``..`` components, absolute paths
    outside ``root``, symlinks resolving outside it) are refused one by one with ``path_policy="reject"``; see
    :func:`check_paths`. ``root`` defaults to the list's own folder (absolute entries are then not restricted). The
    symlinked files of a folder source are checked only against a declared ``root``.
    """
    if path_policy not in ("reject", "allow"):
        raise ConfigError("data.path_policy", path_policy, "unknown policy", "Use 'reject' or 'allow'")
    path = Path(source)
    if not path.exists() and glob.has_magic(str(source)):
        items = _from_glob(str(source), extensions)
        links = {p for p in items.paths if os.path.islink(p)}
        items.rejected = check_links(items.paths, links, root if root is not None else items.root, path_policy)
    elif not path.exists():
        raise ConfigError(
            key, str(source), "no such file or folder", "Point it at a folder of images, a .txt list or a .csv table"
        )
    elif path.is_dir():
        items, links = _from_folder(path, extensions, labels_from_folders)
        # Symlinked files in a folder the user named are read wherever they point (a curated subset of a dataset,
        # as torchvision's ImageFolder reads it); data.path_root fences them in. Only regular files are ever read.
        items.rejected = check_links(items.paths, links, root, path_policy) if root is not None else []
    elif path.suffix.lower() in LIST_SUFFIXES + TABLE_SUFFIXES:
        base = Path(root) if root is not None else path.parent  # where relative entries are read from
        if path.suffix.lower() in LIST_SUFFIXES:
            items = _from_list(path, base)
        else:
            items = _from_table(path, base, path_column, label_column, key)
        check_relative_base(items.entries, str(base), str(source), key)
        items.rejected = check_paths(items.entries, base, root, path_policy)
    else:
        raise ConfigError(
            key,
            str(source),
            f"unknown source type {path.suffix!r}",
            "Use a folder, a .txt list (one path per line) or a .csv table",
        )
    if len(items) == 0 and not items.rejected:
        raise ConfigError(
            key,
            str(source),
            f"no images found (extensions: {', '.join(extensions)})",
            "Check the path, or set data.extensions",
        )
    return items


def _from_glob(pattern: str, extensions: Sequence[str]) -> ImageList:
    """The images a quoted glob names (``'photos/*.jpg'``, ``'photos/**/*.png'``), sorted; no labels."""
    exts = tuple(e.lower() for e in extensions)
    paths = sorted(p for p in glob.glob(pattern, recursive=True) if p.lower().endswith(exts) and os.path.isfile(p))
    root = pattern[: min(pattern.find(c) for c in "*?[" if c in pattern)]
    return ImageList(paths, [NO_LABEL] * len(paths), None, os.path.dirname(root) or ".")


def _from_folder(root: Path, extensions: Sequence[str], labels_from_folders: bool) -> tuple[ImageList, set[str]]:
    """The images under ``root``, and which of them are symlinks (as paths relative to ``root``)."""
    found, links = _walk(str(root), tuple(e.lower() for e in extensions))
    rel = sorted(os.path.relpath(p, root) for p in found)
    link_paths = {os.path.join(str(root), os.path.relpath(p, root)) for p in links}
    paths = [os.path.join(str(root), r) for r in rel]
    top_dirs = [r.split(os.sep, 1)[0] for r in rel]
    # Class sub-folders (ImageFolder's convention) give labels only when every image lies inside one.
    if labels_from_folders and rel and all(os.sep in r for r in rel):
        class_names = sorted(set(top_dirs))
        lookup = {name: i for i, name in enumerate(class_names)}
        labels = [lookup[d] for d in top_dirs]
        return ImageList(paths, labels, class_names, str(root), from_folders=True), link_paths
    return ImageList(paths, [NO_LABEL] * len(paths), None, str(root)), link_paths


def _walk(root: str, exts: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Files under ``root`` with one of ``exts``, and the symlinks among them, from the directory entries alone (no
    stat per file). A link to a folder is not walked: it could loop, or lead out of the tree."""
    found: list[str] = []
    links: list[str] = []
    stack = [root]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                entries = list(it)
        except OSError:
            continue  # an unreadable folder is skipped, as os.walk does
        for entry in entries:
            if entry.is_symlink():
                if entry.name.lower().endswith(exts) and not _is_dir(entry):
                    found.append(entry.path)
                    links.append(entry.path)
            elif entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            elif entry.name.lower().endswith(exts):
                found.append(entry.path)
    return found, links


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symlink loop (ELOOP): kept as an item, whose read then fails as that item's error record
        return False


def check_links(
    paths: Sequence[str], links: set[str], root: str | os.PathLike, policy: PathPolicy = "reject"
) -> list[tuple[int, str]]:
    """The symlinked files of a folder source that resolve outside ``root``, as (index, reason)."""
    if policy == "allow" or not links:
        return []
    limit = os.path.realpath(root)
    return [
        (index, f"the symlink resolves outside {limit!r} (set data.path_root or data.path_policy)")
        for index, path in enumerate(paths)
        if path in links and not _inside(os.path.realpath(path), limit)
    ]


# Paths are bytes on POSIX: a list or table is decoded as UTF-8 (a byte-order mark dropped), and bytes that are not
# UTF-8 (a latin-1 list, a name written by another system) are kept as they are (surrogateescape), so the entry still
# names the file on disk, exactly as os.listdir would give it.
_ENCODING = {"encoding": "utf-8-sig", "errors": "surrogateescape"}


def _from_list(list_file: Path, base: Path) -> ImageList:
    entries = []
    # One entry per "\n" only: str.splitlines would also split at U+2028, U+0085, \x0c... which a file name may hold.
    for line in list_file.read_text(**_ENCODING).split("\n"):
        line = line.strip(" \t\r")
        if line and not line.startswith("#"):
            entries.append(line)
    paths = [_resolve(base, e) for e in entries]
    return ImageList(paths, [NO_LABEL] * len(paths), None, str(base), entries=entries)


def _from_table(table: Path, base: Path, path_column: str, label_column: str | None, key: str) -> ImageList:
    with table.open(newline="", **_ENCODING) as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        if path_column not in header:
            raise ConfigError(
                "data.path_column",
                path_column,
                f"not a column of {str(table)!r} (columns: {header})",
                "Set data.path_column to the column holding the image paths",
            )
        rows = list(reader)
    # A short row has no cell for a column (DictReader gives None): an empty path becomes that row's error record.
    entries = [(row[path_column] or "").strip() for row in rows]
    paths = [_resolve(base, e) for e in entries]
    if label_column and label_column not in header and label_column != "label":
        # The default may be absent (a table without labels); a column the user named must exist, or every label
        # would be silently dropped and the metrics with them.
        raise ConfigError(
            "data.label_column",
            label_column,
            f"not a column of {str(table)!r} (columns: {header})",
            "Set data.label_column to the column holding the labels, or to null for none",
        )
    if not label_column or label_column not in header:
        return ImageList(paths, [NO_LABEL] * len(paths), None, str(base), entries=entries)
    raw = [(row[label_column] or "").strip() for row in rows]
    if all(v.lstrip("-").isdigit() for v in raw if v):
        return ImageList(paths, [int(v) if v else NO_LABEL for v in raw], None, str(base), entries=entries)
    class_names = sorted({v for v in raw if v})
    lookup = {name: i for i, name in enumerate(class_names)}
    return ImageList(paths, [lookup[v] if v else NO_LABEL for v in raw], class_names, str(base), entries=entries)


def check_relative_base(entries: Sequence[str], base: str, source: str, key: str = "data.source") -> None:
    """Refuse a list written relative to the working directory rather than to its own folder: every entry would be a
    "no such file" record. Judged on the first relative entries (a few ``stat`` calls, whatever the list's length):
    none found from ``base`` while most are found from the working directory."""
    sample = [e for e in entries[:_SAMPLE] if e and not os.path.isabs(e)]
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
            f"Set data.path_root={os.getcwd()!r}, or write the entries relative to {base!r} or absolute",
        )


_SAMPLE = 32


def _resolve(base: Path, entry: str) -> str:
    """Relative entries are relative to ``base`` (the list's folder, or ``data.path_root``), not to the working
    directory."""
    return entry if os.path.isabs(entry) else os.path.join(str(base), entry)


def check_paths(
    entries: Sequence[str], base: str | os.PathLike, root: str | os.PathLike | None, policy: PathPolicy = "reject"
) -> list[tuple[int, str]]:
    """The entries of a list that must not be read, as (index, reason).

    With ``policy="reject"``: an entry with a ``..`` component; a relative entry that resolves (through symlinks)
    outside ``root`` (default: the list's folder ``base``); an absolute entry outside ``root`` when one is declared.
    One ``lstat`` per entry and one ``realpath`` per folder, so a million-line list stays cheap.
    """
    if policy == "allow":
        return []
    if policy != "reject":
        raise ConfigError("data.path_policy", policy, "unknown policy", "Use 'reject' or 'allow'")
    declared = root is not None
    limit = os.path.realpath(root if root is not None else base)
    folders: dict[str, str] = {}
    rejected = []
    for index, entry in enumerate(entries):
        if not entry:
            rejected.append((index, "the row has no path (a short or empty row)"))
            continue
        if ".." in Path(entry).parts or ".." in entry.replace("\\", "/").split("/"):
            rejected.append((index, "the path contains '..' (set data.path_policy=allow to permit it)"))
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
                    f"the path resolves outside {limit!r} (a symlink or an absolute path; set data.path_root or data.path_policy)",
                )
            )
    return rejected


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)
