"""What a unit of work read: its version, recorded with its part and checked before a run resumes.

A resumed run appends to the rows an earlier attempt committed; an image rewritten in between would mix two
versions silently. So each unit, as a worker starts reading it, names what it reads without decoding it:

- a tar shard or Parquet file by its own size and modification time (a local file) or size and ETag (an object);
- a page of a folder or table, or a range of a list, by one digest over each of its inputs' size and modification
  time (one ``stat`` each), or with ``data.reading.file_identity: content`` over a SHA-256 of each one's bytes (for
  files rewritten in place with the same size within the clock's resolution); an object behind a URL by its size and
  ETag, as its folder's listing gave them or asked for with a ``HEAD`` (16 at a time).

The version travels with the unit's batches: into its stage (an unfinished unit whose inputs changed is redone
whole, not continued) and its part's commit record (a committed unit whose inputs changed refuses the resume, naming
the file written last). Nothing of this is asked before the first batch: the listing names the inputs only, and the
run's fingerprint covers their names, never a ``stat`` per file.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, NamedTuple

from lit_infer.checksum import sha256_file
from lit_infer.data.listing import object_version
from lit_infer.data.storage import is_url, local_path, protocol

Identity = Literal["stat", "content"]
IDENTITIES: tuple[str, ...] = ("stat", "content")
MISSING = "missing"
"""The version of an input that cannot be asked for (gone, unreadable): its read fails as its own error record."""


class Version(NamedTuple):
    """What names a unit's inputs (``tag``), and the one written last among them (``newest``, modified at
    ``modified`` seconds since the epoch: a refused resume names it, as the likeliest to have changed)."""

    tag: str
    newest: str
    modified: float = 0.0


def file_version(
    path: str, identity: Identity = "stat", storage_options: Mapping[str, Any] | None = None
) -> tuple[str, float]:
    """One input's version (``size:mtime_ns``, ``size:ETag``, or ``sha256:<hex>`` of its bytes) and its modification
    time in seconds; :data:`MISSING` and 0 when it cannot be asked for. Only a regular file is ever opened to hash."""
    if is_url(path) and protocol(path) != "file":
        version = object_version(path, storage_options)
        return (f"{version[0]}:{version[1]}", version[2]) if version is not None else (MISSING, 0.0)
    try:
        st = os.stat(local_path(path))
        if identity == "content":
            if not stat.S_ISREG(st.st_mode):  # never open a FIFO or a device to hash it
                return MISSING, 0.0
            return f"sha256:{sha256_file(local_path(path))}", st.st_mtime
        return f"{st.st_size}:{st.st_mtime_ns}", st.st_mtime
    except (OSError, ValueError):
        return MISSING, 0.0


def inputs_version(
    paths: Sequence[str],
    identity: Identity = "stat",
    storage_options: Mapping[str, Any] | None = None,
    known: Sequence[tuple[str, float] | None] | None = None,
) -> Version:
    """One digest over each input's path and :func:`file_version`, in order. ``known``: versions and modification
    times already given by a listing (a bucket's), ``None`` where they must be asked for. URLs are asked 16 at a
    time."""
    known = known if known is not None else [None] * len(paths)
    remote = [i for i, p in enumerate(paths) if known[i] is None and is_url(p) and protocol(p) != "file"]
    asked: dict[int, tuple[str, float]] = {}
    if remote:
        with ThreadPoolExecutor(16) as pool:
            found = pool.map(lambda i: file_version(paths[i], identity, storage_options), remote)
            asked = dict(zip(remote, found, strict=True))
    digest = hashlib.sha256(identity.encode())
    newest = (-1.0, "")
    for i, path in enumerate(paths):
        if (given := known[i]) is not None:
            version, modified = given
        else:
            version, modified = asked[i] if i in asked else file_version(path, identity, storage_options)
        digest.update(f"{path}\0{version}\n".encode("utf-8", "surrogateescape"))
        newest = max(newest, (modified, path))
    return Version(f"{identity}:{len(paths)}:{digest.hexdigest()}", newest[1], max(newest[0], 0.0))


def versions_digest(tags: Iterable[str | None]) -> str:
    """One digest over the versions of a run's units, in order: what a finished run's summary keeps of them."""
    return hashlib.sha256("\n".join(str(t) for t in tags).encode("utf-8", "surrogateescape")).hexdigest()


def labels_digest(labels: Iterable[int]) -> str:
    return hashlib.sha256(",".join(str(int(v)) for v in labels).encode()).hexdigest()
