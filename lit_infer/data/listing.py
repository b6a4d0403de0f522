"""A folder's files, one directory at a time, in a deterministic order: what a folder source is listed by, in pages,
while the run reads it (:mod:`lit_infer.data.pages`); and which version of an object a run read.

A local folder is walked with ``os.scandir``; a bucket prefix (``s3://``, ``gs://``) with one fsspec ``ls`` per
directory (paged by the store: 1,000 keys a request on S3); an HTTP folder from each directory's index page (as
``python -m http.server`` serves it). Each directory is sorted as it is reached, a folder as ``name/``, so the order
is that of the sorted relative paths (``a.jpg`` before ``a/x.jpg`` before ``a0.jpg``) without sorting the whole
listing, and a walk can be read lazily: nothing below a directory is asked for before the files sorted ahead of it
are handed on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote

from lit_infer.data.access import protocol
from lit_infer.data.storage import filesystem, fs_path, is_url, local_path

CHUNK = 4096
"""Most files a walk hands on at once."""


class Listed(NamedTuple):
    """Files of a walked folder, in order (one run of a directory's files, between two of its sub-folders): their
    paths below the folder (``names``, decoded), what to read (``paths``: local paths or URLs as the store spells
    them), which are symlinks (local folders), and, where a bucket's listing gave them, each one's version
    (``size:ETag``) and modification time; ``None`` where the reading worker asks for them. A list per field, not a
    tuple per file: a million files are a second less of Python in the listing thread."""

    names: list[str]
    paths: list[str]
    links: list[bool] | None = None
    versions: list[tuple[str, float] | None] | None = None


class FolderWalk:
    """The files below ``source`` ending in one of ``extensions`` (lower case), in the order of their relative paths
    (iterate it: each directory is listed only when the walk reaches it), and what lies directly in the folder
    (``folders``, :meth:`holds`: read as it is made, with the first directory). A link to a folder is not walked (it could
    loop, or lead out of the tree); an unreadable folder is skipped, as ``os.walk`` does.

    Local entries stay ``os.DirEntry`` objects (a million of them in a directory are sorted in half a second; made
    into tuples first, they take three times that)."""

    def __init__(
        self, source: str, extensions: tuple[str, ...], storage_options: Mapping[str, Any] | None = None
    ) -> None:
        self.extensions = extensions
        self.remote = is_url(source) and protocol(source) != "file"
        if self.remote:
            self.fs = filesystem(source, storage_options)
            self.base, self.http = fs_path(source).rstrip("/"), protocol(source) in ("http", "https")
            self.url = source.rstrip("/")
        else:
            self.base = str(Path(local_path(source)))  # paths as a first run named them: "photos/x.jpg" for "./photos/"
        self._root = self._children(self.base)
        self._top = list(self._root)  # the walk pops its entries
        self.folders = sorted(c.name for c in self._top if c.is_dir(follow_symlinks=False))

    def holds(self, suffixes: tuple[str, ...]) -> bool:
        """Whether a file directly in the folder ends in one of ``suffixes`` (lower case)."""
        return any(c.name.lower().endswith(suffixes) and not c.is_dir(follow_symlinks=False) for c in self._top)

    def __iter__(self) -> Iterator[Listed]:
        stack: list[tuple[str, list[Any]]] = [("", self._root)]
        while stack:
            prefix, entries = stack[-1]
            if not entries:
                stack.pop()
            elif entries[-1].is_dir(follow_symlinks=False):  # sorted last first: the next entry is at the end
                child = entries.pop()
                stack.append((f"{prefix}{child.name}/", self._children(child.path)))
            else:  # the files up to the next sub-folder, a chunk at a time (a flat folder's first page comes early)
                last, stop = len(entries), max(0, len(entries) - CHUNK)
                while last > stop and not entries[last - 1].is_dir(follow_symlinks=False):
                    last -= 1
                files = entries[last:][::-1]
                del entries[last:]
                if (listed := self._listed(prefix, files)).names:
                    yield listed

    def _listed(self, prefix: str, files: list[Any]) -> Listed:
        exts = self.extensions
        files = [c for c in files if c.name.lower().endswith(exts)]
        names = [prefix + c.name for c in files]
        if self.remote:
            if self.http:
                return Listed(names, [f"{self.url}/{prefix}{c.href}" for c in files])
            return Listed(names, [f"{self.url}/{n}" for n in names], None, [_listed_version(c.info) for c in files])
        root = os.path.join(self.base, "")  # not os.path.join per file: 200,000 names in a tenth of the time
        links = [c.is_symlink() for c in files]
        if any(links):  # a symlinked file is read wherever it points (the fence judges); one to a folder is not walked
            keep = [not (link and _links_to_folder(c.path)) for c, link in zip(files, links, strict=True)]
            names = [n for n, k in zip(names, keep, strict=True) if k]
            links = [link for link, k in zip(links, keep, strict=True) if k]
        return Listed(names, [root + n for n in names], links)

    def _children(self, folder: str) -> list[Any]:
        """A directory's entries, sorted last first (popped from the end), a folder as ``name/``."""
        if self.remote:
            found: list[Any] = _remote_children(self.fs, folder, self.http)
        else:
            try:
                with os.scandir(folder) as it:
                    found = list(it)
            except OSError:
                return []
        return sorted(found, key=lambda c: c.name + "/" if c.is_dir(follow_symlinks=False) else c.name, reverse=True)


class _Child(NamedTuple):
    """A directory entry of a bucket or an HTTP folder, read like an ``os.DirEntry``."""

    name: str
    path: str
    dir: bool
    href: str
    info: Mapping[str, Any]

    def is_dir(self, follow_symlinks: bool = False) -> bool:
        return self.dir


def _links_to_folder(path: str) -> bool:
    try:
        return os.path.isdir(path)
    except OSError:  # a symlink loop (ELOOP): kept as an item, whose read then fails as that item's error record
        return False


def _remote_children(fs: Any, folder: str, http: bool) -> list[_Child]:
    """One directory of a bucket or an HTTP folder. Only a direct child of the folder is kept: an index page is
    the server's to write, and ``../x/``, ``./`` or a link to another folder would read outside the folder or walk
    the same pages forever."""
    target = folder + "/" if http else folder
    fs.invalidate_cache(target)  # fsspec keeps listings per process: a resume must see the folder as it is now
    try:
        listed = fs.ls(target, detail=True)
    except FileNotFoundError:
        return []
    found = []
    for info in listed:
        name = str(info["name"])
        href = name[len(folder) + 1 :].rstrip("/") if name.startswith(folder + "/") else ""
        shown = unquote(href) if http else href
        if not href or "/" in href or shown in (".", ".."):
            continue
        found.append(_Child(shown, f"{folder}/{href}", info.get("type") == "directory", href, info))
    return found


def _listed_version(info: Mapping[str, Any]) -> tuple[str, float] | None:
    size, tag, modified = _version(info)
    return (f"{size}:{tag}", modified) if tag else None


def object_version(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[int, str, float] | None:
    """One object's size, version tag (ETag, or its modification time) and modification time; ``None`` if it
    cannot be asked for (gone, forbidden): it then fails as its own item's record."""
    try:
        return _version(filesystem(url, storage_options).info(fs_path(url)))
    except (OSError, ValueError):
        return None


def _version(info: Mapping[str, Any]) -> tuple[int, str, float]:
    tag = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified")
    tag = tag or info.get("Last-Modified") or ""
    return int(info.get("size") or 0), str(tag).strip('"'), _modified(info)


def _modified(info: Mapping[str, Any]) -> float:
    """An object's modification time from whichever field its store fills (s3fs ``LastModified``, gcsfs
    ``updated``, the local ``mtime``, an HTTP ``Last-Modified`` header)."""
    value = info.get("LastModified") or info.get("updated") or info.get("mtime") or info.get("Last-Modified")
    try:
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        pass
    return 0.0
