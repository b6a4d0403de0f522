"""Read the items of one unit, in order, as (position, key, bytes, label) — tar members, Parquet rows, list lines.

Streaming: a tar is read front to back once (``tarfile`` stream mode, works on an object-store stream), a Parquet
file one record batch at a time. A read that fails part-way raises :class:`UnitReadError` after the items read
before it were yielded: those keep their rows, and nothing is guessed about the rest.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lit_infer.data.sources import IMAGE_EXTENSIONS
from lit_infer.data.storage import open_binary
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
    location: str, storage_options: dict[str, Any] | None = None, extensions: tuple[str, ...] = IMAGE_EXTENSIONS
) -> Iterator[Item]:
    """The image members of a webdataset-style tar, one item each, keyed ``<shard>/<member>``.

    Members sharing a name without extension form a sample (webdataset's grouping); its ``.cls`` member (or a
    ``.txt`` holding an integer) is the label of the sample's images.
    """
    exts = tuple(e.lower() for e in extensions)
    position = 0
    try:
        with open_binary(location, storage_options) as f, tarfile.open(fileobj=f, mode="r|*") as tar:
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
            for item in _group_items(location, group, position, exts):
                yield item
                position += 1
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UnitReadError(f"{type(exc).__name__}: {exc} (after {position} items)") from exc


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
) -> Iterator[Item]:
    """The rows of a Parquet file: image bytes from ``image_column`` (binary, or Hugging Face's ``{bytes, path}``).

    The key is ``key_column``'s value when the table has one (or the struct's own ``path``), else
    ``<file>#<row>``. Only the needed columns are read, one record batch at a time.
    """
    import pyarrow.parquet as pq

    position = 0
    try:
        with open_binary(location, storage_options) as f:
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
    except (OSError, EOFError, ValueError) as exc:
        raise UnitReadError(f"{type(exc).__name__}: {exc} (after {position} rows)") from exc


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
            f"{location!r} has {len(found)} image-bytes columns ({found}); set data.image_column to the one to read"
        )
    return found[0]
