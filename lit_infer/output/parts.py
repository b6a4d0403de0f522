"""Parts out: each unit of work becomes one part file, committed when the unit is done.

While a unit is read, its batches are staged as frames (``frames.py``) in a local work folder
and committed per batch, so a killed run loses nothing it predicted. At the unit's last batch the staged rows are
ordered by position and written in the output format, uploaded beside the other parts (a local folder or any
fsspec URL: no gather, no shared filesystem), and then the unit's small record ``_parts/part-NNNNNN.json`` is
written: that record is the commit. A part whose record is missing is not there, whatever files exist.

Output folder::

    part-000000.csv            unit 0's rows, ordered by position (``index`` = position in a list, or in the shard)
    part-000000.errors.jsonl   its error records, when it has any
    part-000000.embedding.npy  with ``format: npy``: vector columns, one array per part
    _parts/part-000000.json    the commit record: unit, rows, failures, key range, checksums, fingerprint
    _manifest.json, _SUCCESS   written by finalize (manifest.py)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from typing import Any

import numpy as np

from lit_infer.atomic import read_json, write_json
from lit_infer.data.storage import Storage
from lit_infer.data.units import ITEM_STRIDE, UNIT_FAILED
from lit_infer.output.formats import Schema, Sink, write_errors
from lit_infer.output.frames import INDEX, append_frame, iter_frames, open_frames
from lit_infer.output.ownership import identity
from lit_infer.ragged import column_spec
from lit_infer.records import Failure, Predictions, UnitMark

PARTS_DIR = "_parts"
_STAGE = re.compile(r"^u(\d+)\.a(\d+)\.r(\d+)\.bin$")


class CoverageError(AssertionError):
    """Parts that miss or double an input of their units: an invariant of ours broke, never the user's input."""


def part_name(ordinal: int) -> str:
    return f"part-{ordinal:06d}"


def stage_name(ordinal: int, attempt: int, rank: int) -> str:
    return f"u{ordinal:06d}.a{attempt:03d}.r{rank:05d}.bin"


class _Stage:
    """One unit's frames from this process and attempt, appended and committed per batch (bytes in a sidecar)."""

    def __init__(self, path: str, fsync: bool, version: str | None) -> None:
        self.path, self.fsync, self.version = path, fsync, version
        self._file = open_frames(path)
        self.committed = 0
        self.rows = self.failures = self.batches = 0

    def append(self, pred: Predictions) -> None:
        self.committed += append_frame(self._file, pred, self.fsync)
        self.rows += len(pred)
        self.failures += len(pred.failures)
        self.batches += 1
        # The bytes are the commit; the counts say how far this stage got (for a person, or a test, looking in).
        state = {"bytes": self.committed, "rows": self.rows, "failures": self.failures, "batches": self.batches}
        state["version"] = self.version  # what the unit read: a resume continues it only if its inputs are the same
        write_json(_sidecar(self.path), state, durable=self.fsync)

    def close(self) -> None:
        self._file.close()


@dataclass
class Staged:
    """A unit's staged rows, read back: positions and columns of the predictions, and its failures."""

    positions: np.ndarray
    paths: list[str]
    columns: dict[str, np.ndarray]
    failures: list[Failure]


def staged_files(work_dir: str, ordinal: int | None = None) -> dict[int, list[str]]:
    """Unit ordinal -> its committed stage files in ``work_dir`` (every attempt and rank)."""
    out: dict[int, list[str]] = {}
    if not os.path.isdir(work_dir):
        return out
    for name in sorted(os.listdir(work_dir)):
        m = _STAGE.match(name)
        if m and (ordinal is None or int(m.group(1)) == ordinal):
            path = os.path.join(work_dir, name)
            if os.path.exists(_sidecar(path)):
                out.setdefault(int(m.group(1)), []).append(path)
    return out


def read_staged(paths: list[str]) -> Staged:
    positions, paths_out, failures = [np.zeros(0, np.int64)], [], []
    chunks: dict[str, list[np.ndarray]] = {}
    for path in paths:
        committed = int(read_json(_sidecar(path))["bytes"])
        with open(path, "rb") as f:
            for frame in iter_frames(f, committed):
                failures.extend(frame.failures)
                if frame.header["n"] == 0:
                    continue
                arrays = frame.arrays(f)
                positions.append(arrays.pop(INDEX) % ITEM_STRIDE)
                paths_out.extend(frame.header["paths"])
                for name, arr in arrays.items():
                    chunks.setdefault(name, []).append(arr)
    columns = {name: np.concatenate(parts) for name, parts in chunks.items()}
    return Staged(np.concatenate(positions), paths_out, columns, failures)


def staged_versions(paths: list[str]) -> set[str | None]:
    """What a unit's stages read (:attr:`~lit_infer.records.UnitMark.version`), from their sidecars alone."""
    return {read_json(_sidecar(path)).get("version") for path in paths}


def _sidecar(stage: str) -> str:
    return stage[: -len(".bin")] + ".json"  # the stage's committed length, counts and version


def done_positions(work_dir: str) -> dict[int, np.ndarray]:
    """Unit ordinal -> positions an earlier attempt staged (predicted or failed) but did not commit as a part."""
    done = {}
    for ordinal, paths in staged_files(work_dir).items():
        try:
            s = read_staged(paths)
        except FileNotFoundError:  # committed meanwhile by a process still finishing (its stages go): nothing staged
            continue
        failed = [f.index % ITEM_STRIDE for f in s.failures if f.index % ITEM_STRIDE != UNIT_FAILED]
        done[ordinal] = np.concatenate([s.positions, np.asarray(failed, dtype=np.int64)])
    return done


class PartWriter:
    """Stages this process's batches per unit and commits each unit's part when its last batch arrives.

    Args:
        out: Where parts go (local folder or URL).
        work_dir: Local folder for the stages.
        fmt: ``csv``, ``jsonl``, ``parquet`` or ``npy``.
        attempt: This run's attempt number (stage names never collide with an earlier attempt's).
        rank: This process's global rank.
        fingerprint: The run's fingerprint digest, recorded in every part's commit record.
        fsync: Flush every staged batch to disk.
    """

    def __init__(
        self, out: Storage, work_dir: str, fmt: str, attempt: int, rank: int, fingerprint: str, fsync: bool = True
    ) -> None:
        self.out, self.work_dir, self.fmt = out, work_dir, fmt
        self.attempt, self.rank, self.fingerprint, self.fsync = attempt, rank, fingerprint, fsync
        self._stages: dict[int, _Stage] = {}
        self.committed: list[dict[str, Any]] = []
        os.makedirs(work_dir, exist_ok=True)

    def append(self, pred: Predictions, mark: UnitMark) -> None:
        stage = self._stages.get(mark.ordinal)
        if stage is None:
            path = os.path.join(self.work_dir, stage_name(mark.ordinal, self.attempt, self.rank))
            stage = self._stages[mark.ordinal] = _Stage(path, self.fsync, mark.version)
        stage.append(pred)
        if mark.last:
            stage.close()
            del self._stages[mark.ordinal]
            self.committed.append(self.commit(mark))

    def close(self) -> None:
        for stage in self._stages.values():
            stage.close()
        self._stages.clear()

    def commit(self, mark: UnitMark) -> dict[str, Any]:
        """Write unit ``mark``'s part from every stage of it, then its commit record; return the record.

        At most once: the record is created exclusively. A unit redone after its lease's attempt ended may meet
        the earlier holder's commit (already there, or racing this one): the first record stands, this process
        drops its rows, and the part files both wrote hold the same rows (the merge checks them against it).
        """
        stages = [p for p in staged_files(self.work_dir, mark.ordinal).get(mark.ordinal, []) if self._counts(p)]
        name = part_name(mark.ordinal)
        record_name = f"{PARTS_DIR}/{name}.json"
        earlier = self._record(record_name)
        if earlier is not None and earlier.get("complete") and earlier.get("fingerprint") == self.fingerprint:
            return self._drop(stages, record_name)
        s = read_staged(stages)
        unit_failures = [f for f in s.failures if f.index % ITEM_STRIDE == UNIT_FAILED]
        failures = [f for f in s.failures if f.index % ITEM_STRIDE != UNIT_FAILED]
        fail_pos = np.asarray([f.index % ITEM_STRIDE for f in failures], dtype=np.int64)
        every = np.concatenate([s.positions, fail_pos])
        items = max(mark.items, int(every.max()) + 1 if len(every) else 0)
        _check_positions(every, items, mark, complete=mark.error is None)
        order = np.argsort(s.positions, kind="stable")
        files = self._write_part(name, s, order, mark.start)
        errors = [
            Failure(mark.start + int(p), f.path, f.error_type, f.message)
            for f, p in zip(failures, fail_pos, strict=True)
        ]
        if errors:
            tmp = os.path.join(self.work_dir, f"{name}.errors.jsonl")
            write_errors(tmp, errors)
            files["errors"] = self._upload(tmp, f"{name}.errors.jsonl")
        keys = [s.paths[i] for i in order] if len(order) else []
        record = {
            "unit": mark.id,
            "ordinal": mark.ordinal,
            "start": mark.start,
            "items": items,
            "rows": len(order),
            "failed": len(errors),
            "complete": mark.error is None,
            "error": mark.error or (unit_failures[0].message if unit_failures else None),
            "index_range": [mark.start + int(s.positions[order[0]]), mark.start + int(s.positions[order[-1]])]
            if len(order)
            else None,
            "key_range": [keys[0], keys[-1]] if keys else None,
            "files": {k: v["name"] for k, v in files.items()},
            # What overwrite and merge check before they touch a file this record names (output/ownership.py).
            "owned": {v["name"]: {"size": v["size"], "sha256": v["sha256"]} for v in files.values()},
            "fingerprint": self.fingerprint,
            "version": mark.version,
            "attempt": self.attempt,
            "rank": self.rank,
        }
        # A unit an earlier attempt could not read to its end is retried, and its record replaced; any other is new.
        data = json.dumps(record, indent=1).encode()
        if not self.out.write_bytes(record_name, data, self.fsync, exclusive=earlier is None):
            return self._drop(stages, record_name)
        if mark.error is None:  # a unit read only in part keeps its stages: the rerun that retries it skips them
            remove_stages(stages)
        return record

    def _counts(self, stage: str) -> bool:
        """Whether a stage of this unit is part of this commit: this process's own, or an earlier attempt's (whose
        positions this attempt skipped). Another process of this attempt or a later one redoes the unit on its own."""
        m = _STAGE.match(os.path.basename(stage))
        assert m is not None, "staged_files lists stage names only"
        attempt, rank = int(m.group(2)), int(m.group(3))
        return attempt < self.attempt or (attempt, rank) == (self.attempt, self.rank)

    def _record(self, record_name: str) -> dict[str, Any] | None:
        return json.loads(self.out.read_bytes(record_name)) if self.out.exists(record_name) else None

    def _drop(self, stages: list[str], record_name: str) -> dict[str, Any]:
        """Another process committed this unit first: its record stands; this one's stages go."""
        remove_stages(stages)
        return json.loads(self.out.read_bytes(record_name))

    def _write_part(self, name: str, s: Staged, order: np.ndarray, start: int) -> dict[str, dict[str, Any]]:
        schema: Schema = {n: column_spec(c) for n, c in s.columns.items()}
        tmp_dir = os.path.join(self.work_dir, f".{name}.tmp-{os.getpid()}")
        os.makedirs(tmp_dir, exist_ok=True)
        try:
            columns = {n: c[order] for n, c in s.columns.items()}
            rows = (start + s.positions[order], [s.paths[i] for i in order], columns)
            local = Sink(self.fmt, tmp_dir, name, schema, len(order)).write_all([rows])
            out = {}
            for key, path in local.items():
                final = os.path.basename(path) if key == "table" else f"{name}.{key}.npy"
                out[key] = self._upload(path, final)
            return out
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)

    def _upload(self, local: str, final: str) -> dict[str, Any]:
        owned = identity(local)
        self.out.makedirs()
        self.out.put_file(local, final)
        return {"name": final, **owned}


def remove_stages(stages: list[str]) -> None:
    for path in stages:
        for leftover in (path, _sidecar(path)):
            with contextlib.suppress(FileNotFoundError):  # another rank on the same folder took it first
                os.remove(leftover)


def _check_positions(every: np.ndarray, items: int, mark: UnitMark, complete: bool) -> None:
    counts = np.bincount(every, minlength=items) if len(every) else np.zeros(items, np.int64)
    doubled, missing = np.flatnonzero(counts > 1), np.flatnonzero(counts == 0)
    if len(doubled) or (complete and len(missing)):
        raise CoverageError(
            f"unit {mark.id!r}: {len(missing)} positions missing (first {missing[:10].tolist()}), "
            f"{len(doubled)} doubled (first {doubled[:10].tolist()})"
        )
