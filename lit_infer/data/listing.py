"""What a folder behind a URL holds, and which version of each object a run read: a bucket prefix listed by fsspec
in pages, an HTTP folder from its index pages; an object's size, ETag (or modification time) for the resume's
fingerprint. Local folders are walked by :mod:`lit_infer.data.sources` itself (``os.scandir``)."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple
from urllib.parse import unquote

from lit_infer.data.access import protocol
from lit_infer.data.storage import filesystem, fs_path


def list_objects(url: str, storage_options: Mapping[str, Any] | None = None) -> list[Listed]:
    """Every object below the prefix ``url``, as :class:`Listed`, in the order of their relative paths.

    The tag is the object's ETag (or its modification time where the store has none): what a resumed run compares.
    fsspec lists a bucket in pages (1,000 keys a request on S3) and an HTTP folder from the links of each directory's
    index page (as ``python -m http.server`` serves it, names percent-encoded: sorted by the names they encode, so an
    HTTP folder is read in the order of the same folder on disk). An index page gives no sizes: HTTP objects are asked
    for theirs (a ``HEAD`` each, 16 at a time). A link that leads outside the folder is not followed.
    """
    fs = filesystem(url, storage_options)
    base = fs_path(url).rstrip("/")
    http = protocol(url) in ("http", "https")
    if http:
        found = _walk_index_pages(fs, base)
        with ThreadPoolExecutor(16) as pool:
            found = dict(zip(found, pool.map(lambda p: {**found[p], **_head(fs, p)}, found), strict=True))
    else:
        found = {p: i for p, i in fs.find(base, detail=True).items() if i.get("type", "file") == "file"}
    out = []
    for path, info in found.items():
        name = path[len(base) + 1 :] if path.startswith(base + "/") else path.rsplit("/", 1)[-1]
        size, tag, modified = _version(info)
        out.append(Listed(unquote(name) if http else name, name, size, tag, modified))
    return sorted(out)


class Listed(NamedTuple):
    """An object of a listed folder: its relative path (``name``, decoded), the same as the store spells it in a URL
    (``href``), its size, version tag (ETag or modification time) and modification time (seconds since the epoch,
    0 if unknown: what names the object written last when a resume is refused)."""

    name: str
    href: str
    size: int
    tag: str
    modified: float


def _walk_index_pages(fs: Any, base: str) -> dict[str, dict[str, Any]]:
    """The files below ``base`` from the links of each folder's index page, one page at a time, each folder once.

    Only a link to a direct child of the page's folder is followed (``a.jpg``, ``sub/``): an index page is the
    server's to write, and ``../x/``, ``./`` or a link to another folder would read outside the folder or walk
    the same pages forever."""
    found: dict[str, dict[str, Any]] = {}
    todo, seen = [base], set()
    while todo:
        folder = todo.pop()
        if folder in seen:
            continue
        seen.add(folder)
        for info in fs.ls(folder + "/", detail=True):
            name = str(info["name"])
            child = name[len(folder) + 1 :].rstrip("/") if name.startswith(folder + "/") else ""
            if not child or "/" in child or unquote(child) in (".", ".."):
                continue
            if info.get("type") == "directory":
                todo.append(f"{folder}/{child}")
            else:
                found[name] = info
    return found


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


def _head(fs: Any, path: str) -> dict[str, Any]:
    try:
        return fs.info(path)
    except OSError:  # gone since the index page was read: its read fails later, as that item's error record
        return {}


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
