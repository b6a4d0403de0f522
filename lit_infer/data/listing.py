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


class Listed(NamedTuple):
    """A file of a walked folder: its path below the folder (``name``, decoded), what to read (``path``: a local
    path or a URL as the store spells it), whether it is a symlink (local), and, where a bucket's listing gave them,
    its version (``size:ETag``) and modification time; ``None`` where the reading worker asks for them."""

    name: str
    path: str
    link: bool = False
    version: tuple[str, float] | None = None


def walk_folder(
    source: str, extensions: tuple[str, ...], storage_options: Mapping[str, Any] | None = None
) -> Iterator[Listed]:
    """The files below ``source`` ending in one of ``extensions`` (lower case), in the order of their relative paths,
    each directory listed only when the walk reaches it. A link to a folder is not walked (it could loop, or lead out
    of the tree); an unreadable folder is skipped, as ``os.walk`` does."""
    remote = is_url(source) and protocol(source) != "file"
    if remote:
        fs = filesystem(source, storage_options)
        base, http = fs_path(source).rstrip("/"), protocol(source) in ("http", "https")
        url = source.rstrip("/")
        children = lambda folder: _remote_children(fs, folder, http)  # noqa: E731
    else:
        base = str(Path(local_path(source)))  # paths as a first run named them: "photos/x.jpg" for "./photos/"
        prefix_path = os.path.join(base, "")  # not os.path.join per file: 200,000 names in a tenth of the time
        children = _local_children
    stack: list[tuple[str, list[_Child]]] = [("", children(base))]
    while stack:
        prefix, entries = stack[-1]
        if not entries:
            stack.pop()
            continue
        child = entries.pop()
        if child.is_dir:
            stack.append((f"{prefix}{child.name}/", children(child.path)))
        elif child.name.lower().endswith(extensions):
            name = prefix + child.name
            if remote:
                path = f"{url}/{prefix}{child.href}" if http else f"{url}/{name}"
                version = None if http else _listed_version(child.info)
                yield Listed(name, path, False, version)
            else:
                yield Listed(name, prefix_path + name, child.link)


def top_folders(source: str, storage_options: Mapping[str, Any] | None = None) -> tuple[list[str], list[str]]:
    """The folders and files directly in ``source`` (sorted names): class sub-folders, or shards beside no image."""
    if is_url(source) and protocol(source) != "file":
        fs = filesystem(source, storage_options)
        listed = _remote_children(fs, fs_path(source).rstrip("/"), protocol(source) in ("http", "https"))
    else:
        listed = _local_children(local_path(source))
    return sorted(c.name for c in listed if c.is_dir), sorted(c.name for c in listed if not c.is_dir)


class _Child(NamedTuple):
    name: str
    path: str
    is_dir: bool
    link: bool = False
    href: str = ""
    info: Mapping[str, Any] = {}


def _local_children(folder: str) -> list[_Child]:
    """A directory's entries, last first (popped from the end), from the entries alone: no ``stat`` per file."""
    try:
        with os.scandir(folder) as it:
            found = [_Child(e.name, e.path, e.is_dir(follow_symlinks=False), e.is_symlink()) for e in it]
    except OSError:
        return []
    # A symlink to a file is kept (read wherever it points; the path fence judges it); one to a folder is not walked.
    found = [c for c in found if c.is_dir or not c.link or not _links_to_folder(c.path)]
    return sorted(found, key=lambda c: c.name + "/" if c.is_dir else c.name, reverse=True)


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
        found.append(_Child(shown, f"{folder}/{href}", info.get("type") == "directory", False, href, info))
    return sorted(found, key=lambda c: c.name + "/" if c.is_dir else c.name, reverse=True)


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
