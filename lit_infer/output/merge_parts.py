"""``lit-infer merge OUTPUT_DIR``: the parts of a finished run -> one file ordered like the input, as ``layout:
single`` writes it.

Parts are streamed one at a time, in unit order, so memory holds one part. A row's ``index`` becomes its place in
the whole input: the items of the units before it (predicted or failed) plus its position in its own unit; for a
list source that is the entry's line in the list, as a single-file run numbers it.
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any

import numpy as np

from lit_infer.atomic import atomic_open, temp_name
from lit_infer.data.storage import Storage
from lit_infer.errors import RunError
from lit_infer.output.manifest import MANIFEST, SUCCESS

_EXT = {"csv": "csv", "jsonl": "jsonl", "parquet": "parquet", "npy": "csv"}


def merge_parts(out: Storage, dest: str, filename: str = "predictions") -> dict[str, str]:
    """Write ``<dest>/<filename>.<ext>`` (+ ``errors.jsonl``, + ``<column>.npy``) from the parts in ``out``."""
    if not out.exists(MANIFEST):
        raise RunError(f"{out.root!r} has no {MANIFEST}: not a finished parts run (or it is still running)")
    manifest = json.loads(out.read_bytes(MANIFEST))
    if not out.exists(SUCCESS):
        raise RunError(f"{out.root!r} has a manifest but no {SUCCESS}: the run did not succeed; rerun it first")
    fmt = manifest["format"]
    parts = sorted(manifest["parts"], key=lambda p: p["ordinal"])
    offsets = np.cumsum([0] + [p["items"] for p in parts])
    os.makedirs(dest, exist_ok=True)
    table = os.path.join(dest, f"{filename}.{_EXT[fmt]}")
    files = {"table": table}
    writer = _Writer(fmt, table)
    try:
        arrays: dict[str, list[str]] = {}
        for part, offset in zip(parts, offsets.tolist(), strict=False):
            data = out.read_bytes(part["files"]["table"])
            writer.add(data, offset - part["start"])
            for key, name in part["files"].items():
                if key not in ("table", "errors"):
                    arrays.setdefault(key, []).append(name)
        writer.close()
        for column, names in arrays.items():
            files[column] = _concat_npy(out, names, os.path.join(dest, f"{column}.npy"))
    except BaseException:
        writer.abort()
        raise
    files["errors"] = _merge_errors(out, parts, offsets.tolist(), os.path.join(dest, "errors.jsonl"))
    return files


class _Writer:
    """Appends each part's table with its ``index`` column shifted; the file appears under its name at ``close``."""

    def __init__(self, fmt: str, path: str) -> None:
        self.fmt, self.path, self.tmp = fmt, path, temp_name(path)
        self._f: Any = None if fmt == "parquet" else open(self.tmp, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._csv: Any = csv.writer(self._f) if fmt in ("csv", "npy") else None
        self._header: list[str] | None = None
        self._pq: Any = None

    def add(self, data: bytes, shift: int) -> None:
        if self.fmt in ("csv", "npy"):
            rows = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
            header = next(rows, None)
            if header is None:
                return
            if self._header is None:
                self._header = header
                self._csv.writerow(header)
            for row in rows:
                self._csv.writerow([str(int(row[0]) + shift), *row[1:]])
        elif self.fmt == "jsonl":
            for line in data.decode("utf-8").splitlines():
                row = json.loads(line)
                row["index"] += shift
                self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pq.read_table(pa.BufferReader(data))
            if table.num_rows == 0 and self._pq is not None:
                return
            index = pa.array(np.asarray(table.column("index")) + shift, pa.int64())
            table = table.set_column(table.schema.get_field_index("index"), "index", index)
            if self._pq is None:
                self._pq = pq.ParquetWriter(self.tmp, table.schema)
            self._pq.write_table(table.cast(self._pq.schema))

    def close(self) -> None:
        if self._pq is not None:
            self._pq.close()
        if self._f is not None:
            self._f.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


def _concat_npy(out: Storage, names: list[str], path: str) -> str:
    """One array from the parts' arrays, filled part by part into a preallocated memory map (one part in memory)."""
    first = np.load(io.BytesIO(out.read_bytes(names[0])))
    headers = [_npy_rows(out, n) for n in names]
    tmp = temp_name(path)
    merged = np.lib.format.open_memmap(tmp, mode="w+", dtype=first.dtype, shape=(sum(headers), *first.shape[1:]))
    row = 0
    for name in names:
        array = np.load(io.BytesIO(out.read_bytes(name)))
        merged[row : row + len(array)] = array
        row += len(array)
    merged.flush()
    del merged
    os.replace(tmp, path)
    return path


def _npy_rows(out: Storage, name: str) -> int:
    with out.fs.open(out.path(name), "rb") if out.remote else open(out.path(name), "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, _ = read(f)
    return int(shape[0])


def _merge_errors(out: Storage, parts: list[dict[str, Any]], offsets: list[int], path: str) -> str:
    with atomic_open(path, "w", encoding="utf-8") as f:
        for part, offset in zip(parts, offsets, strict=False):
            name = part["files"].get("errors")
            if name is not None:
                for line in out.read_bytes(name).decode("utf-8").splitlines():
                    record = json.loads(line)
                    record["index"] += offset - part["start"]
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")
            if not part["complete"]:
                f.write(
                    json.dumps(
                        {"index": None, "path": part["unit"], "error_type": "UnitReadError", "message": part["error"]}
                    )
                    + "\n"
                )
    return path
