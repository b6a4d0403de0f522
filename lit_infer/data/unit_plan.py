"""Which sources are read in units, and their units: tar shards, Parquet files, and ranges of a ``.txt`` list."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from lit_infer.data.sources import LIST_SUFFIXES
from lit_infer.data.storage import filesystem, is_url, protocol, strip_protocol
from lit_infer.data.units import Unit, find_files, is_pattern, list_units, read_bytes, shard_units
from lit_infer.errors import ConfigError

TAR_SUFFIXES = (".tar",)
PARQUET_SUFFIXES = (".parquet", ".pq")
DEFAULT_UNIT_SIZE = 4096
"""Entries per range of a list: a part per ~4k images keeps parts few (250 per million) and a lost unit cheap."""
LARGE_LIST = 65_536
"""A ``.txt`` list with at least this many entries is read in units even for ``layout: single``: its first batch
then comes without a listing and a stat of every entry (a 1,000,000-line list: see BENCHMARKS.md)."""


def default_unit_size(batch_size: int | str) -> int:
    """About :data:`DEFAULT_UNIT_SIZE`, in whole batches: a range then ends where a batch ends, and its batches
    are the batches a single-file run makes over the same list (so are the predictions, bit for bit)."""
    if not isinstance(batch_size, int):
        return DEFAULT_UNIT_SIZE
    return batch_size * max(1, round(DEFAULT_UNIT_SIZE / batch_size))


def unit_kind(source: str, storage_options: dict[str, Any] | None = None) -> str | None:
    """``tar``, ``parquet``, ``list`` (a ``.txt`` list), or ``None`` for a local folder or table (read whole)."""
    lower = source.lower().rstrip("/")
    if lower.endswith(TAR_SUFFIXES) or (is_pattern(source) and ".tar" in lower):
        return "tar"
    if lower.endswith(PARQUET_SUFFIXES) or (is_pattern(source) and ".parquet" in lower):
        return "parquet"
    if lower.endswith(LIST_SUFFIXES):
        return "list"
    remote = is_url(source) and protocol(source) != "file"
    if remote:
        fs = filesystem(source, storage_options)
        if not fs.isdir(strip_protocol(source)):
            return None
        names = [n.lower() for n in fs.ls(strip_protocol(source), detail=False)]
    else:
        local = source[len("file://") :] if source.startswith("file://") else source
        if not os.path.isdir(local):
            return None
        names = [n.lower() for n in os.listdir(local)]
    if any(n.endswith(TAR_SUFFIXES) for n in names):
        return "tar"
    if any(n.endswith(PARQUET_SUFFIXES) for n in names):
        return "parquet"
    if remote:
        raise ConfigError(
            "data.source",
            source,
            "a remote folder is read as tar shards or Parquet files, and it holds neither",
            "Point it at shards, a Parquet table, or a .txt list of image URLs",
        )
    return None


def plan_units(
    source: str, kind: str, unit_size: int, storage_options: dict[str, Any] | None = None
) -> tuple[list[Unit], str | None]:
    """The units of ``source`` (one per shard or file; a brace pattern names them without a listing), and for a list
    the sha256 of its bytes: a list edited in place must not resume into the outputs of the old one."""
    digest = None
    if kind == "list":
        data = read_bytes(source, storage_options)
        digest = hashlib.sha256(data).hexdigest()
        units = list_units(source, unit_size, data)
    else:
        suffixes = TAR_SUFFIXES if kind == "tar" else PARQUET_SUFFIXES
        units = shard_units(find_files(source, suffixes, storage_options), kind, source)  # type: ignore[arg-type]
    if not units:
        raise ConfigError("data.source", source, f"no {kind} inputs found", "Check the path, pattern or URL")
    return units, digest


def exists(source: str) -> bool:
    """Whether a local source can be checked up front (patterns and URLs are checked where they are read)."""
    return is_url(source) or is_pattern(source) or os.path.exists(source)
