"""The one merge: the parts of a run -> one file ordered like the input, verified before anything is published. The
end of every ``layout: single`` run, and ``lit-infer merge OUTPUT_DIR`` of a ``layout: parts`` run.

First the manifest is proven to list exactly the committed parts (``manifest.verified_parts``). Then parts are
streamed one at a time, in unit order, so memory holds one part: each file's size and SHA-256 are checked against
its commit record as it is read (``ownership.read_owned``: a plain name of the part's own, inside the folder), and
its rows against the record: as many as recorded, every index inside its unit once, as a row or as a failure. The
outputs are written to temp names and renamed into place only when every part has passed: a truncated, missing,
doubled or foreign part is a one-line refusal naming it, and nothing is published. A row's ``index`` becomes its
place in the whole input: the items of the units before it plus its position in its own unit.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from typing import Any

import numpy as np

from lit_infer.atomic import temp_name
from lit_infer.data.storage import Storage
from lit_infer.errors import RunError
from lit_infer.output.formats import TABLE_EXT
from lit_infer.output.manifest import verified_parts
from lit_infer.output.ownership import read_owned
from lit_infer.output.parts import PARTS_DIR, part_name

_THEN = "nothing was published"


def merge_parts(out: Storage, dest: str, filename: str = "predictions", require_success: bool = True) -> dict[str, str]:
    """Write ``<dest>/<filename>.<ext>`` (+ ``errors.jsonl``, + ``<column>.npy``) from the parts in ``out``.
    ``require_success=False``: the end of a ``layout: single`` run, which writes its outputs and ``errors.jsonl``
    and then checks ``writer.max_errors``."""
    fmt, parts = verified_parts(out, _THEN, require_success)
    offsets = np.cumsum([0] + [p["items"] for p in parts]).tolist()
    columns = _columns(out, parts)
    os.makedirs(dest, exist_ok=True)
    table = _Table(fmt, os.path.join(dest, f"{filename}.{TABLE_EXT[fmt]}"))
    errors = _Errors(os.path.join(dest, "errors.jsonl"))
    total = sum(p["rows"] for p in parts)
    arrays = {c: _Array(os.path.join(dest, f"{c}.npy"), total) for c in columns}
    sinks: list[Any] = [table, errors, *arrays.values()]
    try:
        for part, offset in zip(parts, offsets, strict=False):
            name = part_name(part["ordinal"])
            where = out.url(f"{PARTS_DIR}/{name}.json")

            def read(key: str, part: dict[str, Any] = part, where: str = where, name: str = name) -> bytes:
                file = part["files"][key]
                return read_owned(out, file, part["owned"].get(file), where, _THEN, prefix=name + ".")

            shift = offset - part["start"]
            rows = table.add(read("table"), shift)
            failed = errors.add(read("errors") if "errors" in part["files"] else b"", shift, part)
            _check_rows(part, rows, failed, where)
            for column, array in arrays.items():
                if column in part["files"]:
                    array.add(read(column), part["rows"], where)
        for sink in sinks:
            sink.close()
        if any(a.filled != total for a in arrays.values()):
            raise RunError(f"{out.root!r}: a vector column does not cover every row; {_THEN}")
    except BaseException:
        for sink in sinks:
            sink.abort()
            with contextlib.suppress(FileNotFoundError):
                os.remove(sink.tmp)
        raise
    for sink in sinks:  # every part passed: publish
        os.replace(sink.tmp, sink.path)
    return {"table": table.path, **{c: a.path for c, a in arrays.items()}, "errors": errors.path}


def _columns(out: Storage, parts: list[dict[str, Any]]) -> list[str]:
    """The vector columns (``npy``): every part with rows has the same ones."""
    sets = {frozenset(k for k in p["files"] if k not in ("table", "errors")) for p in parts if p["rows"]}
    if len(sets) > 1:
        raise RunError(f"{out.root!r}: its parts have different columns; {_THEN}")
    return sorted(next(iter(sets), frozenset()))


def _check_rows(part: dict[str, Any], rows: np.ndarray, failed: np.ndarray, where: str) -> None:
    """The part's table and errors hold what its record says: that many rows and failures, each index of its unit
    at most once (once exactly for a unit read to its end: its record's counts add up to its items)."""
    start, stop = part["start"], part["start"] + part["items"]
    every = np.concatenate([rows, failed])
    why = None
    if len(rows) != part["rows"] or len(failed) != part["failed"]:
        why = f"holds {len(rows)} rows and {len(failed)} failures where its record says {part['rows']} and {part['failed']}"
    elif len(every) and (every.min() < start or every.max() >= stop):
        why = f"holds an index outside its unit's range [{start}, {stop})"
    elif len(np.unique(every)) != len(every):
        why = "holds an index twice"
    if why is not None:
        raise RunError(f"{part_name(part['ordinal'])} ({where}) {why}; {_THEN}")


class _Table:
    """Appends each part's table with its ``index`` column shifted, to a temp name; returns each part's indices."""

    def __init__(self, fmt: str, path: str) -> None:
        self.fmt, self.path, self.tmp = fmt, path, temp_name(path)
        self._f: Any = None if fmt == "parquet" else open(self.tmp, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._csv: Any = csv.writer(self._f) if fmt in ("csv", "npy") else None
        self._header: list[str] | None = None
        self._empty_header: list[str] | None = None
        self._pq: Any = None
        self._empty_pq: Any = None

    def add(self, data: bytes, shift: int) -> np.ndarray:
        try:
            return self._add(data, shift)
        except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as exc:
            raise RunError(f"a part's table cannot be read ({type(exc).__name__}: {exc}); {_THEN}") from None

    def _add(self, data: bytes, shift: int) -> np.ndarray:
        if self.fmt in ("csv", "npy"):
            rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
            if not rows:
                return np.zeros(0, np.int64)
            header, rows = rows[0], rows[1:]
            if not rows:  # a part with no rows has no value columns: its header is used only if all are empty
                self._empty_header = self._empty_header or header
                return np.zeros(0, np.int64)
            if self._header is None:
                self._header = header
                self._csv.writerow(header)
            elif header != self._header:
                raise ValueError("its columns differ from the other parts'")
            indices = np.asarray([int(row[0]) for row in rows], np.int64)
            self._csv.writerows([str(i + shift), *row[1:]] for i, row in zip(indices.tolist(), rows, strict=True))
            return indices
        if self.fmt == "jsonl":
            records = [json.loads(line) for line in data.decode("utf-8").splitlines()]
            indices = np.asarray([int(r["index"]) for r in records], np.int64)
            for record in records:
                record["index"] += shift
                self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
            return indices
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(pa.BufferReader(data))
        indices = np.asarray(table.column("index"), np.int64)
        if table.num_rows == 0:
            self._empty_pq = self._empty_pq or table
            return indices
        shifted = pa.array(indices + shift, pa.int64())
        table = table.set_column(table.schema.get_field_index("index"), "index", shifted)
        if self._pq is None:
            self._pq = pq.ParquetWriter(self.tmp, table.schema)
        self._pq.write_table(table.cast(self._pq.schema))
        return indices

    def close(self) -> None:
        if self._header is None and self._empty_header is not None and self._csv is not None:
            self._csv.writerow(self._empty_header)
        if self.fmt == "parquet" and self._pq is None and self._empty_pq is not None:
            import pyarrow.parquet as pq

            self._pq = pq.ParquetWriter(self.tmp, self._empty_pq.schema)
        if self._pq is not None:
            self._pq.close()
        if self._f is not None:
            self._f.close()
        if not os.path.exists(self.tmp):
            open(self.tmp, "wb").close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            if self._pq is not None:
                self._pq.close()
        if self._f is not None:
            self._f.close()


class _Errors:
    """Each part's error records with their ``index`` shifted, and one record per unit that could not be read."""

    def __init__(self, path: str) -> None:
        self.path, self.tmp = path, temp_name(path)
        self._f = open(self.tmp, "w", encoding="utf-8")  # noqa: SIM115 -- closed in close/abort

    def add(self, data: bytes, shift: int, part: dict[str, Any]) -> np.ndarray:
        indices = []
        try:
            for line in data.decode("utf-8").splitlines():
                record = json.loads(line)
                indices.append(int(record["index"]))
                record["index"] += shift
                self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise RunError(f"{part_name(part['ordinal'])}'s errors cannot be read ({exc}); {_THEN}") from None
        if not part["complete"]:
            unit_error = {"index": None, "path": part.get("unit"), "error_type": "UnitReadError"}
            self._f.write(json.dumps({**unit_error, "message": part.get("error")}) + "\n")
        return np.asarray(indices, np.int64)

    def close(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()

    def abort(self) -> None:
        self._f.close()


class _Array:
    """One ``.npy`` from the parts' arrays, filled part by part into a preallocated memory map (one part in memory)."""

    def __init__(self, path: str, rows: int) -> None:
        self.path, self.tmp, self.rows = path, temp_name(path), rows
        self.filled = 0
        self._map: Any = None

    def add(self, data: bytes, rows: int, where: str) -> None:
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise RunError(f"{where}: an array cannot be read ({exc}); {_THEN}") from None
        if self._map is None:
            shape = (self.rows, *array.shape[1:])
            self._map = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=array.dtype, shape=shape)
        if len(array) != rows or array.dtype != self._map.dtype or array.shape[1:] != self._map.shape[1:]:
            raise RunError(f"{where}: an array of shape {array.shape} ({array.dtype}) for {rows} rows; {_THEN}")
        if self.filled + rows > self.rows:
            raise RunError(f"{where}: more array rows than recorded; {_THEN}")
        self._map[self.filled : self.filled + rows] = array
        self.filled += rows

    def close(self) -> None:
        if self._map is not None:
            self._map.flush()
        self._map = None

    def abort(self) -> None:
        self._map = None
