"""Output formats: streaming sinks that take ordered chunks of rows and appear atomically when committed."""

from __future__ import annotations

import contextlib
import csv
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from lit_infer.atomic import atomic_open, replace, temp_name
from lit_infer.errors import ConfigError
from lit_infer.ragged import RAGGED
from lit_infer.records import Failure, text_path

FORMATS: tuple[str, ...] = ("csv", "jsonl", "parquet", "npy")
TABLE_EXT = {"csv": "csv", "jsonl": "jsonl", "parquet": "parquet", "npy": "csv"}  # npy: arrays beside a CSV table
Schema = dict[str, tuple[np.dtype, tuple[int, ...]]]
"""Column name -> (dtype, shape of one row's value): ``()`` for a cell, ``(k,)`` for a vector, ``(RAGGED, ...)`` for
rows of varying length (a list cell: native lists in Parquet and JSON lines, a JSON-encoded cell in CSV)."""

# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection). Numbers are left alone.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError("writer.format", fmt, "unknown output format", f"Use one of {list(FORMATS)}")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError(
                "writer.format", fmt, "needs pyarrow", "pip install 'lit_infer[parquet]', or use csv/jsonl/npy"
            ) from None


def check_columns(fmt: str, schema: Schema) -> None:
    """Refuse columns the format cannot hold: ``npy`` has no rows of varying length."""
    ragged = [n for n, (_, shape) in schema.items() if _is_ragged(shape)]
    if fmt == "npy" and ragged:
        raise ConfigError(
            "writer.format",
            fmt,
            f"column {ragged[0]!r} has a varying number of values per image, which one array cannot hold",
            "Use parquet or jsonl (list columns) or csv (JSON cells)",
        )


def _is_ragged(shape: tuple[int, ...]) -> bool:
    return shape[:1] == (RAGGED,)


def output_files(fmt: str, directory: str, filename: str, schema: Schema) -> dict[str, str]:
    """The final files a format writes: ``table`` always, plus one ``.npy`` per vector column for ``npy``."""
    files = {"table": os.path.join(directory, f"{filename}.{TABLE_EXT[fmt]}")}
    if fmt == "npy":
        for name in _array_columns(schema):
            files[name] = os.path.join(directory, f"{name}.npy")
    return files


def _array_columns(schema: Schema) -> list[str]:
    return [
        n for n, (dtype, shape) in schema.items() if len(shape) == 1 and not _is_ragged(shape) and dtype.kind in "fiub"
    ]


class Sink:
    """Writes ordered chunks to temp files; ``commit`` renames them into place, ``abort`` removes them."""

    def __init__(self, fmt: str, directory: str, filename: str, schema: Schema, num_rows: int) -> None:
        check_columns(fmt, schema)
        self.fmt = fmt
        self.schema = schema
        self.files = output_files(fmt, directory, filename, schema)
        self.temps = {key: temp_name(path) for key, path in self.files.items()}
        self.arrays = _array_columns(schema) if fmt == "npy" else []
        table_schema = {n: s for n, s in schema.items() if n not in self.arrays}
        self._row = 0
        self._memmaps: dict[str, np.memmap] = {}
        for name in self.arrays:
            dtype, shape = schema[name]
            # Preallocated in final row order: each chunk lands in place, nothing held in memory.
            self._memmaps[name] = np.lib.format.open_memmap(
                self.temps[name], mode="w+", dtype=dtype, shape=(num_rows, *shape)
            )
        table = self.temps["table"]
        if fmt in ("csv", "npy"):
            self._table: Any = _CsvTable(table, table_schema)
        elif fmt == "jsonl":
            self._table = _JsonlTable(table)
        else:
            self._table = _ParquetTable(table, table_schema)

    def write(self, indices: np.ndarray, paths: Sequence[str], columns: dict[str, np.ndarray]) -> None:
        paths = [text_path(p) for p in paths]  # a name that is not UTF-8 on disk, escaped alike in every format
        for name in self.arrays:
            self._memmaps[name][self._row : self._row + len(indices)] = columns[name]
        self._table.write(indices, paths, {n: c for n, c in columns.items() if n not in self.arrays})
        self._row += len(indices)

    def commit(self) -> dict[str, str]:
        self._table.close()
        for mm in self._memmaps.values():
            mm.flush()
            del mm
        self._memmaps.clear()
        for key, final in self.files.items():
            with open(self.temps[key], "rb+") as f:
                os.fsync(f.fileno())
            replace(self.temps[key], final)
        return self.files

    def write_all(self, chunks: Iterable[tuple[np.ndarray, Sequence[str], dict[str, np.ndarray]]]) -> dict[str, str]:
        """Every chunk (indices, paths, columns), then :meth:`commit`; on any error :meth:`abort`: nothing appears."""
        try:
            for indices, paths, columns in chunks:
                self.write(indices, paths, columns)
            return self.commit()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._table.close()
        for tmp in self.temps.values():
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)


def write_table(
    fmt: str,
    directory: str,
    filename: str,
    schema: Schema,
    chunks: Iterable[tuple[np.ndarray, Sequence[str], dict[str, np.ndarray]]],
) -> str:
    """A table written from chunks of rows (indices, paths, columns) in the run's format, appearing atomically: the
    files a module derives from the merged ones (``npy`` runs get a CSV table). Returns its path."""
    return Sink("csv" if fmt == "npy" else fmt, directory, filename, schema, 0).write_all(chunks)["table"]


def _cells(column: np.ndarray) -> list[Any]:
    """Cell values for text formats: float32 printed at its own shortest round-trip precision, not float64's."""
    if column.dtype.kind == "f":
        return [float(s) for s in column.astype(str)]
    return column.tolist()


def _nested(row: np.ndarray) -> list[Any]:
    """A ragged row as nested lists, float32 at its own shortest round-trip precision (as :func:`_cells`)."""
    if row.dtype.kind == "f":
        return row.astype(str).astype(np.float64).tolist()
    return row.tolist()


def escape_formula(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


class _CsvTable:
    def __init__(self, path: str, schema: Schema) -> None:
        self._f = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115 -- closed in close()
        self._w = csv.writer(self._f)
        header = ["index", "path"]
        for name, (_, shape) in schema.items():
            # Vectors (top-k lists) become one column per position: topk_label_1, topk_label_2, ...
            # A ragged column (a detector's boxes) is one JSON-encoded cell.
            header += [f"{name}_{i + 1}" for i in range(shape[0])] if shape and not _is_ragged(shape) else [name]
        self._w.writerow(header)

    def write(self, indices: np.ndarray, paths: Sequence[str], columns: dict[str, np.ndarray]) -> None:
        cells = [indices.tolist(), [escape_formula(p) for p in paths]]
        for column in columns.values():
            if column.dtype == object:
                cells.append([json.dumps(_nested(row), ensure_ascii=False) for row in column])
            elif column.ndim == 1:
                cells.append(_cells(column))
            else:
                cells.extend(_cells(column[:, i]) for i in range(column.shape[1]))
        for row in zip(*cells, strict=True):
            self._w.writerow([escape_formula(v) for v in row])

    def close(self) -> None:
        self._f.close()


class _JsonlTable:
    def __init__(self, path: str) -> None:
        self._f = open(path, "w", encoding="utf-8")  # noqa: SIM115 -- closed in close()

    def write(self, indices: np.ndarray, paths: Sequence[str], columns: dict[str, np.ndarray]) -> None:
        names = list(columns)
        values = [
            [_nested(row) for row in c]
            if c.dtype == object
            else _cells(c)
            if c.ndim == 1
            else [_cells(row) for row in c]
            for c in columns.values()  # vectors and ragged rows stay lists
        ]
        for i, (index, path) in enumerate(zip(indices.tolist(), paths, strict=True)):
            row = {"index": index, "path": path, **{n: v[i] for n, v in zip(names, values, strict=True)}}
            self._f.write(json.dumps(row, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self._f.close()


class _ParquetTable:
    def __init__(self, path: str, schema: Schema) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._pa = pa
        fields = [pa.field("index", pa.int64()), pa.field("path", pa.string())]
        for name, (dtype, shape) in schema.items():
            value = pa.string() if dtype.kind == "U" else pa.from_numpy_dtype(dtype)
            for size in reversed(shape):  # (RAGGED, 4): a list of 4-lists; (k,): a k-list
                value = pa.list_(value) if size == RAGGED else pa.list_(value, size)
            fields.append(pa.field(name, value))
        self._schema = pa.schema(fields)
        self._w = pq.ParquetWriter(path, self._schema)

    def write(self, indices: np.ndarray, paths: Sequence[str], columns: dict[str, np.ndarray]) -> None:
        pa = self._pa
        arrays = [pa.array(indices, pa.int64()), pa.array(list(paths), pa.string())]
        for field, column in zip(list(self._schema)[2:], columns.values(), strict=True):
            if column.dtype == object:
                arrays.append(self._ragged(column, field.type))
            elif column.ndim == 1:
                arrays.append(pa.array(column, field.type))
            else:
                flat = pa.array(column.reshape(-1), field.type.value_type)
                arrays.append(pa.FixedSizeListArray.from_arrays(flat, column.shape[1]))
        self._w.write_table(pa.Table.from_arrays(arrays, schema=self._schema))

    def _ragged(self, column: np.ndarray, kind: Any) -> Any:
        """Rows of varying length as a list array: offsets into the rows' values end to end, no padding."""
        pa = self._pa
        fixed = _fixed_lists(kind.value_type)  # (RAGGED, 4): each row's values are 4-lists
        leaf = fixed[-1].value_type if fixed else kind.value_type
        rows = [np.asarray(r).reshape(-1) for r in column]
        flat = np.concatenate(rows) if rows else np.zeros(0)
        values = pa.array(flat).cast(leaf) if len(flat) else pa.array([], leaf)
        for t in reversed(fixed):
            values = pa.FixedSizeListArray.from_arrays(values, t.list_size)
        lengths = np.fromiter((len(r) for r in column), dtype=np.int64, count=len(column))
        return pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(lengths)]), pa.int32()), values)

    def close(self) -> None:
        self._w.close()


def _fixed_lists(kind: Any) -> list[Any]:
    """The nested fixed-size list types inside a ragged column's value type, outermost first."""
    import pyarrow as pa

    out = []
    while pa.types.is_fixed_size_list(kind):
        out.append(kind)
        kind = kind.value_type
    return out


def write_errors(path: str, failures: list[Failure]) -> str:
    """Error records as JSON lines, ordered by input (``errors.jsonl``, a part's ``*.errors.jsonl``)."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        for failure in sorted(failures, key=lambda x: x.index):
            f.write(json.dumps(failure.to_dict(), ensure_ascii=False) + "\n")
    return path
