"""Find the images of a source: a folder, a ``.txt`` list or a ``.csv`` table. Pure functions over the filesystem."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lit_infer.errors import ConfigError
from lit_infer.records import NO_LABEL

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
LIST_SUFFIXES = (".txt", ".lst")
TABLE_SUFFIXES = (".csv",)


@dataclass
class ImageList:
    """The items of a source, in the order they will be numbered (their dataset index)."""

    paths: list[str]
    labels: list[int]
    class_names: list[str] | None = None
    root: str = "."
    rejected: list[tuple[str, str]] = field(default_factory=list)
    """Entries refused before reading (path, reason): they become error records, never silently dropped."""

    def __len__(self) -> int:
        return len(self.paths)


def discover(
    source: str | os.PathLike,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    labels_from_folders: bool = True,
    path_column: str = "path",
    label_column: str | None = "label",
    key: str = "data.source",
) -> ImageList:
    """List the images of ``source``; raise :class:`ConfigError` naming ``key`` when there are none."""
    path = Path(source)
    if not path.exists():
        raise ConfigError(
            key, str(source), "no such file or folder", "Point it at a folder of images, a .txt list or a .csv table"
        )
    if path.is_dir():
        items = _from_folder(path, extensions, labels_from_folders)
    elif path.suffix.lower() in LIST_SUFFIXES:
        items = _from_list(path)
    elif path.suffix.lower() in TABLE_SUFFIXES:
        items = _from_table(path, path_column, label_column, key)
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


def _from_folder(root: Path, extensions: Sequence[str], labels_from_folders: bool) -> ImageList:
    exts = tuple(e.lower() for e in extensions)
    found: list[str] = []
    # followlinks=False: a link to a directory outside the tree is not walked (it could loop or escape the root).
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        found.extend(os.path.join(dirpath, f) for f in filenames if f.lower().endswith(exts))
    rel = sorted(os.path.relpath(p, root) for p in found)
    paths = [os.path.join(str(root), r) for r in rel]
    top_dirs = [r.split(os.sep, 1)[0] for r in rel]
    # Class sub-folders (ImageFolder's convention) give labels only when every image lies inside one.
    if labels_from_folders and rel and all(os.sep in r for r in rel):
        class_names = sorted(set(top_dirs))
        lookup = {name: i for i, name in enumerate(class_names)}
        return ImageList(paths, [lookup[d] for d in top_dirs], class_names, str(root))
    return ImageList(paths, [NO_LABEL] * len(paths), None, str(root))


def _from_list(list_file: Path) -> ImageList:
    base = list_file.parent
    paths = []
    for line in list_file.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            paths.append(_resolve(base, line))
    return ImageList(paths, [NO_LABEL] * len(paths), None, str(base))


def _from_table(table: Path, path_column: str, label_column: str | None, key: str) -> ImageList:
    base = table.parent
    with table.open(newline="", encoding="utf-8") as f:
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
    paths = [_resolve(base, row[path_column].strip()) for row in rows]
    if not label_column or label_column not in header:
        return ImageList(paths, [NO_LABEL] * len(paths), None, str(base))
    raw = [row[label_column].strip() for row in rows]
    if all(v.lstrip("-").isdigit() for v in raw if v):
        return ImageList(paths, [int(v) if v else NO_LABEL for v in raw], None, str(base))
    class_names = sorted({v for v in raw if v})
    lookup = {name: i for i, name in enumerate(class_names)}
    return ImageList(paths, [lookup[v] if v else NO_LABEL for v in raw], class_names, str(base))


def _resolve(base: Path, entry: str) -> str:
    """Relative entries of a list are relative to the list file, not to the working directory."""
    return entry if os.path.isabs(entry) else os.path.join(str(base), entry)
