"""Read the items of one unit, in order, as (position, key, bytes, label) — tar members, Parquet rows, list lines.

Streaming: a tar is read front to back once (``tarfile`` stream mode, works on an object-store stream), a Parquet
file one record batch at a time. A read that fails part-way raises :class:`UnitReadError` after the items read
before it were yielded: those keep their rows, and nothing is guessed about the rest. ``data.reading.io_retries`` and
``data.reading.read_timeout`` hold for a shard as for one image file: transient errors retried, every read bounded.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from lit_infer.data.reading import NotARegularFile, bounded, is_transient, read_errors
from lit_infer.data.sources import IMAGE_EXTENSIONS
from lit_infer.data.storage import is_url, local_path, open_binary, protocol
from lit_infer.records import NO_LABEL

LABEL_SUFFIXES = ("cls", "txt")


class UnitReadError(OSError):
    """A shard that could not be opened or read to its end."""


@dataclass
class Item:
    """One input of a unit. ``data`` is the image's bytes, or ``None`` for list entries (read from ``key``)."""

    position: int
    key: str
    data: bytes | None
    label: int = NO_LABEL
    error: str | None = None
    """Why this item cannot be read, found while listing it (a Parquet row without image bytes, say)."""
    image: Any = None
    """Its decoded pixels (H x W x 3 uint8 tensor), when they come from the cache."""


def tar_items(
    location: str,
    storage_options: dict[str, Any] | None = None,
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
    retries: int = 0,
    backoff_s: float = 0.05,
    timeout: float | None = None,
) -> Iterator[Item]:
    """The image members of a webdataset-style tar, one item each, keyed ``<shard>/<member>``.

    Members sharing a name without extension form a sample (webdataset's grouping); its ``.cls`` member (or a
    ``.txt`` holding an integer) is the label of the sample's images. ``retries``, ``backoff_s``, ``timeout``: as for
    one image file (``data.reading.io_retries``, ``data.reading.read_timeout``), see :func:`_resumed`.
    """
    exts = tuple(e.lower() for e in extensions)
    yield from _resumed(lambda: _tar_stream(location, storage_options, exts, timeout), location, retries, backoff_s)


def _tar_stream(
    location: str, storage_options: dict[str, Any] | None, exts: tuple[str, ...], timeout: float | None
) -> Iterator[Item]:
    position = 0
    with open_shard(location, storage_options, timeout) as f, tarfile.open(fileobj=f, mode="r|*") as tar:
        group: list[tuple[str, bytes]] = []
        group_key: str | None = None
        for member in tar:
            if not member.isfile():
                continue
            stem = _stem(member.name)
            if stem != group_key and group:
                for item in _group_items(location, group, position, exts):
                    yield item
                    position += 1
                group = []
            group_key = stem
            ext = member.name.rsplit(".", 1)[-1].lower() if "." in member.name else ""
            if ("." + ext) in exts or ext in LABEL_SUFFIXES:
                extracted = tar.extractfile(member)
                group.append((member.name, extracted.read() if extracted is not None else b""))
        yield from _group_items(location, group, position, exts)


def _resumed(
    stream: Callable[[], Iterator[Item]], location: str, retries: int, backoff_s: float, noun: str = "items"
) -> Iterator[Item]:
    """The items of ``stream()``; after a transient error (an object store's 503, a reset connection, NFS's EIO)
    the shard is opened again, up to ``retries`` times, and read on past the items already given: a unit's items
    are a function of its bytes, so position ``p`` is the same item on every read. Any other error, or the last
    one, ends the unit as a :class:`UnitReadError`: the items before it keep their rows."""
    given = 0
    remote = is_url(location) and protocol(location) != "file"
    for attempt in range(retries + 1):
        try:
            for item in stream():
                if item.position >= given:
                    yield item
                    given = item.position + 1
            return
        except (*read_errors(), tarfile.TarError, EOFError, ValueError) as exc:
            if attempt < retries and isinstance(exc, read_errors()) and is_transient(exc, remote):
                time.sleep(backoff_s * 2**attempt)
                continue
            raise UnitReadError(f"{type(exc).__name__}: {exc} (after {given} {noun})") from exc


def open_shard(location: str, storage_options: dict[str, Any] | None, timeout: float | None) -> Any:
    """A shard opened to be streamed: a local one only if it is a regular file (a FIFO would wait for a writer), and
    with ``timeout`` its open and every read bounded (:func:`~lit_infer.data.reading.bounded`), 1 MB at a time."""
    if not (is_url(location) and protocol(location) != "file"):
        mode = os.stat(local_path(location)).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(errno.EINVAL, "not a regular file: not opened", location)
    f = bounded(lambda: open_binary(location, storage_options), timeout)
    return f if timeout is None else io.BufferedReader(_Bounded(f, timeout), 1 << 20)


class _Bounded(io.RawIOBase):
    """A file whose every read gives up after ``timeout`` seconds (a stuck mount or connection): the unit's end."""

    def __init__(self, f: Any, timeout: float) -> None:
        super().__init__()
        self._f, self._timeout = f, timeout

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._f.seekable()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def readinto(self, buffer: Any) -> int:
        data = bounded(lambda: self._f.read(len(buffer)), self._timeout)
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()


def _stem(name: str) -> str:
    folder, base = os.path.split(name)
    return os.path.join(folder, base.split(".", 1)[0])


def _group_items(location: str, group: list[tuple[str, bytes]], first: int, exts: tuple[str, ...]) -> list[Item]:
    label = NO_LABEL
    for name, data in group:
        if name.lower().endswith(LABEL_SUFFIXES):
            text = data.decode("utf-8", "replace").strip()
            if text.lstrip("-").isdigit():
                label = int(text)
    images = [(n, d) for n, d in group if n.lower().endswith(exts)]
    return [Item(first + i, f"{location}/{name}", data, label) for i, (name, data) in enumerate(images)]


def parquet_items(
    location: str,
    storage_options: dict[str, Any] | None = None,
    image_column: str | None = None,
    label_column: str | None = "label",
    key_column: str | None = "path",
    retries: int = 0,
    backoff_s: float = 0.05,
    timeout: float | None = None,
) -> Iterator[Item]:
    """The rows of a Parquet file: image bytes from ``image_column`` (binary, or Hugging Face's ``{bytes, path}``).

    The key is ``key_column``'s value when the table has one (or the struct's own ``path``), else
    ``<file>#<row>``. Only the needed columns are read, one record batch at a time. ``retries``, ``backoff_s``,
    ``timeout``: as for a tar shard.
    """
    columns = (image_column, label_column, key_column)
    rows = lambda: _parquet_stream(location, storage_options, *columns, timeout)  # noqa: E731
    yield from _resumed(rows, location, retries, backoff_s, "rows")


def _parquet_stream(
    location: str,
    storage_options: dict[str, Any] | None,
    image_column: str | None,
    label_column: str | None,
    key_column: str | None,
    timeout: float | None,
) -> Iterator[Item]:
    import pyarrow.parquet as pq

    position = 0
    with open_shard(location, storage_options, timeout) as f:
        pf = pq.ParquetFile(f)
        names = pf.schema_arrow.names
        column = image_column or find_image_column(pf.schema_arrow, location)
        wanted = [column] + [c for c in (label_column, key_column) if c and c in names and c != column]
        for record_batch in pf.iter_batches(batch_size=256, columns=wanted):
            table = record_batch.to_pydict()
            images = table[column]
            labels = table.get(label_column) if label_column else None
            keys = table.get(key_column) if key_column and key_column != column else None
            for i, cell in enumerate(images):
                data, inner_path = (cell.get("bytes"), cell.get("path")) if isinstance(cell, dict) else (cell, None)
                key = keys[i] if keys is not None and keys[i] is not None else inner_path
                label = labels[i] if labels is not None and isinstance(labels[i], int) else NO_LABEL
                error = None if data else "the row has no image bytes"
                yield Item(position, f"{location}#{key if key else position}", data or None, label, error)
                position += 1


def find_image_column(schema: Any, location: str) -> str:
    """The one column holding image bytes: binary, or a struct with a binary ``bytes`` field (HF's Image)."""
    import pyarrow as pa

    def is_image(t: Any) -> bool:
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return True
        return pa.types.is_struct(t) and t.get_field_index("bytes") >= 0

    found = [f.name for f in schema if is_image(f.type)]
    if len(found) != 1:
        raise ValueError(
            f"{location!r} has {len(found)} image-bytes columns ({found}); set data.inputs.image_column to the one to read"
        )
    return found[0]
