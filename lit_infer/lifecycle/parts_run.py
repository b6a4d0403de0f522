"""The run's one commit protocol: plan (resume per unit), commit a part per unit, finalize (manifest, then merge).

Both layouts commit the same parts, each with its record, and finalize writes ``_manifest.json`` and ``_SUCCESS``
over them. ``layout: parts`` leaves them in ``output_dir`` (a folder or a URL). ``layout: single`` keeps them in the
work folder (``<output_dir>/.lit_infer/parts``), merges them (the verified merge of ``lit-infer merge``) into the
one ordered file in ``output_dir``, and removes them only once that file is published.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from lightning.pytorch.utilities import rank_zero_info

from lit_infer.atomic import remove_stale_temps
from lit_infer.data.identity import Version, versions_digest
from lit_infer.data.sources import SourceListing
from lit_infer.data.storage import Storage, is_url, protocol
from lit_infer.data.units import Unit
from lit_infer.errors import ConfigError, RunError
from lit_infer.lifecycle.changed import changed_since_committed, changed_since_finished, changed_since_staged
from lit_infer.lifecycle.finalize import SUMMARY_FILE
from lit_infer.lifecycle.fingerprint import differences, refusal
from lit_infer.output.disk import read_record
from lit_infer.output.formats import write_table
from lit_infer.output.manifest import (
    MANIFEST,
    RUN,
    SUCCESS,
    committed_units,
    finalize,
    read_own_json,
    read_records,
    remove_run,
)
from lit_infer.output.merge import merge_parts
from lit_infer.output.ownership import check_work_dir, record, recorded_outputs, remove_work_files
from lit_infer.output.parts import PARTS_DIR, PartWriter, done_positions, remove_stages, staged_files
from lit_infer.plan import exact_pixels, fingerprint_digest
from lit_infer.records import Predictions, UnitMark
from lit_infer.system import command_started_at


class PartsRun:
    """Plan, per-unit commits and finalize of one run read in units (see the module docstring).

    Args:
        output_dir: Where the outputs go (a folder or a URL).
        layout: ``parts`` or ``single``.
        fmt: The output format.
        filename: Base name of the merged file (``single``).
        work_dir: Local folder for the stages. ``None``: ``<output_dir>/.lit_infer``, or for a remote
            ``output_dir`` one under the system's temp folder named after the URL.
        storage_options: fsspec options for a remote ``output_dir``.
        fsync: Flush every staged batch.
        units: The source's units, as the data module lists them (a folder's while it is read); finalize proves
            each has its part.
        version_of: What a unit reads now (:mod:`lit_infer.data.identity`), asked by a resume of the units an earlier
            attempt committed or staged; ``None``: a data module that names no versions (nothing is checked).
    """

    def __init__(
        self,
        output_dir: str,
        layout: str,
        fmt: str,
        filename: str,
        work_dir: str | None,
        storage_options: dict[str, Any] | None,
        fsync: bool,
        units: SourceListing,
        version_of: Callable[[Unit], Version] | None = None,
    ) -> None:
        self.units, self.version_of = units, version_of
        self.output_dir, self.layout, self.fmt, self.filename, self.fsync = output_dir, layout, fmt, filename, fsync
        remote = is_url(output_dir) and protocol(output_dir) != "file"
        if work_dir is None and remote:
            work_dir = os.path.join(
                tempfile.gettempdir(), "lit_infer", hashlib.sha256(output_dir.encode()).hexdigest()[:16]
            )
        self.work_dir = work_dir if work_dir is not None else os.path.join(output_dir, ".lit_infer")
        self.stage_dir = os.path.join(self.work_dir, "stages")
        parts_root = output_dir if layout == "parts" else os.path.join(self.work_dir, "parts")
        self.out = Storage(parts_root, storage_options, key="writer.output_dir")
        self.writer: PartWriter | None = None
        self.fingerprint: dict[str, Any] = {}
        self.digest = ""
        self.complete = False

    # ---- plan ---------------------------------------------------------------------------------------------
    def prepare(self, fingerprint: dict[str, Any], overwrite: bool) -> dict[str, Any]:
        """Rank 0 alone: start, resume or refuse, so every rank acts on one answer."""
        digest = fingerprint_digest(fingerprint)
        check_work_dir(self.work_dir, self.output_dir)  # its clean-up removes lit_infer's own files only
        check_work_dir(self.stage_dir, self.output_dir)
        if not self.out.remote:  # a merge or a record cut short by a kill between write and rename
            for folder in (self.output_dir, self.work_dir, self.stage_dir, self.out.path(), self.out.path(PARTS_DIR)):
                remove_stale_temps(folder)
        if overwrite:
            summary_file = os.path.join(self.output_dir, SUMMARY_FILE)
            try:
                merged = self._merged_summary()
            except RunError:  # damaged: it records nothing, and it alone goes
                merged = {}
            earlier = recorded_outputs(self.output_dir, merged, summary_file) if merged else []  # checked first
            remove_run(self.out)
            remove_work_files(self.stage_dir)
            for name in [*earlier, SUMMARY_FILE] if merged is not None else []:
                Storage(self.output_dir).remove(name)
        merged = self._merged_summary()
        if merged is not None:  # a single file merged by an earlier run: the parts are gone, its summary says
            if merged.get("run_digest") != digest:
                return {"error": refusal(self.output_dir, differences(merged.get("fingerprint") or {}, fingerprint))}
            recorded = merged.get("inputs_sha256")
            changed = changed_since_finished(self.units.all_units(), recorded, self.version_of, self.output_dir)
            if changed is not None:
                return {"error": changed}
            return {"done_units": [], "attempt": 0, "complete": True}
        self.out.makedirs()
        then = "nothing was changed. Start fresh in another --writer.output_dir"
        previous = read_own_json(self.out, RUN, then) if self.out.exists(RUN) else None
        if previous is not None and previous.get("digest") != digest:
            return {"error": refusal(self.output_dir, differences(previous.get("fingerprint") or {}, fingerprint))}
        done = committed_units(read_records(self.out, then), digest)
        changed = changed_since_committed(self.units.unit, done, self.version_of)
        if changed is not None:
            return {"error": changed}
        complete = (
            self.out.exists(SUCCESS)
            and self.out.exists(MANIFEST)
            and not read_own_json(self.out, MANIFEST, then).get("failed_units")
        )
        attempt = (previous or {}).get("attempts", 0) + 1
        run = {"fingerprint": fingerprint, "digest": digest, "attempts": attempt}
        self.out.write_bytes(RUN, json.dumps(run, indent=1, sort_keys=True).encode())
        if not complete:
            self.out.remove(SUCCESS)  # retrying failed units: the run is not a success until finalize says so
        return {"done_units": sorted(done), "attempt": attempt, "complete": complete}

    def _merged_summary(self) -> dict[str, Any] | None:
        if self.layout != "single":
            return None
        path = os.path.join(self.output_dir, SUMMARY_FILE)
        return read_record(path) if os.path.exists(path) else None

    def start(self, decision: dict[str, Any], fingerprint: dict[str, Any], rank: int) -> tuple[set[int], dict]:
        """Every rank, on rank 0's decision: open this rank's part writer. Returns the units done and, per unit in
        progress, the positions staged by an earlier attempt (this node's stages), for the plan."""
        self.fingerprint, self.digest = fingerprint, fingerprint_digest(fingerprint)
        self.complete = bool(decision["complete"])
        done = set(decision["done_units"])
        # Stages of units whose part is committed are leftovers of a kill between the two: drop them. So are the
        # stages of a unit whose inputs changed since they were staged: it is redone whole, never continued.
        version_of = None if self.complete else self.version_of
        for ordinal, paths in staged_files(self.stage_dir).items():
            if ordinal in done or changed_since_staged(self.units.unit(ordinal), paths, version_of):
                remove_stages(paths)
        staged = done_positions(self.stage_dir)
        os.makedirs(self.stage_dir, exist_ok=True)
        self.writer = PartWriter(self.out, self.stage_dir, self.fmt, decision["attempt"], rank, self.digest, self.fsync)
        if self.complete:
            rank_zero_info(f"lit-infer: {self.output_dir} is already complete; nothing to do")
        elif done or staged:  # a stop after a few batches may have finished no unit yet: its batches still count
            inputs = sum(len(p) for p in staged.values())
            progress = f", {inputs} inputs of units in progress" if inputs else ""
            rank_zero_info(f"lit-infer: resuming {self.output_dir}: {len(done)} units already done{progress}")
        return done, staged

    def remove_fresh(self) -> None:
        """A first attempt of a ``single`` layout that committed nothing (a failed start): its own run record and
        its empty folders go, so that no work folder is left behind; anything else in them stays."""
        if self.layout != "single" or self.out.remote:
            return
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.out.path(RUN))
        for folder in (self.stage_dir, self.out.path(), self.work_dir):
            with contextlib.suppress(OSError):
                os.rmdir(folder)

    # ---- predict ------------------------------------------------------------------------------------------
    def append(self, pred: Predictions, mark: UnitMark) -> None:
        assert self.writer is not None
        self.writer.append(pred, mark)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    # ---- finalize -----------------------------------------------------------------------------------------
    def committed(self) -> list[dict[str, Any]]:
        """The commit records of the parts this process committed in this attempt."""
        return list(self.writer.committed) if self.writer is not None else []

    def finish(
        self,
        stats: dict[str, Any],
        within_budget: Callable[[int, int], bool],
        derive: Callable[[str, dict[str, str], Callable[..., str]], dict[str, str]] | None = None,
    ) -> dict[str, Any]:
        """Rank 0, after every rank committed: the manifest (and ``_SUCCESS`` if ``within_budget(failed, items)``),
        then for ``layout: single`` the merged file; then ``summary.json``. Returns the summary.

        Args:
            stats: What this attempt measured and where it ran: ``num_processed_this_run``, ``wall_seconds`` (the
                predict loop), ``steady_images_per_second`` (after each rank's first batch, summed over ranks),
                ``metrics``, ``world_size``, ``strategy``.
            derive: The module's files made from the merged ones (a detector's COCO results, its table of one row
                per box), before the summary records what the run wrote. It gets the output folder, the merged files
                and a table writer in the run's format (``write_table(filename, schema, chunks)``).
        """
        began = time.perf_counter()
        seen, wall = stats["num_processed_this_run"], stats["wall_seconds"]
        command = time.time() - command_started_at()
        steady = stats.get("steady_images_per_second")
        info = {
            **stats,
            "wall_seconds": round(wall, 3),
            "command_seconds": round(command, 3),
            # Over the whole command, start-up included (what a user waits for), and steady, after the first batch.
            "images_per_second": round(seen / command, 2) if command > 0 else None,
            "steady_images_per_second": round(steady, 2) if steady else None,
            "exact_pixels": exact_pixels(self.fingerprint.get("data", {})),
            "layout": self.layout,
        }
        merged = self._merged_summary() if self.complete else None
        if merged is not None:  # the single file an earlier run merged and recorded: nothing to write, not even that
            self._remove_work()  # this attempt's empty work folders
            return merged
        if self.complete and self.out.exists(MANIFEST):  # finalized, and (single) killed before its summary
            manifest = read_own_json(self.out, MANIFEST, "rerun with --writer.overwrite=true")
        else:
            units = self.units.all_units()
            manifest = finalize(self.out, units, self.fingerprint, self.digest, self.fmt, info, success=False)
        result = {k: manifest[k] for k in _COUNTS}
        result["run_digest"] = self.digest
        # What every unit read, for a rerun of the finished run (whose parts are gone, in the single layout).
        result["inputs_sha256"] = versions_digest(p.get("version") for p in manifest["parts"])
        if self.layout == "single":  # verified before anything is claimed: _SUCCESS only after the merge
            files = merge_parts(self.out, self.output_dir, self.filename, require_success=False)
            if derive is not None:
                writer = functools.partial(write_table, self.fmt, self.output_dir)
                files.update(derive(self.output_dir, dict(files), writer))
            result["files"] = {k: os.path.relpath(v, self.output_dir) for k, v in files.items()}
            result["owned"] = record(self.output_dir, result["files"])  # what a later overwrite may remove
        else:
            result["files"] = {"manifest": MANIFEST}
        if within_budget(manifest["num_failed"], manifest["num_items"]):
            self.out.write_bytes(SUCCESS, b"")
        summary = {**result, **info, "finalize_seconds": round(time.perf_counter() - began, 3)}
        summary["fingerprint"] = self.fingerprint  # a rerun that differs is told what changed
        summary["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        target = Storage(self.output_dir, self.out.storage_options, key="writer.output_dir")
        target.write_bytes(SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=True).encode())
        # Only now, with the merged file published and recorded, do the parts of the single layout go; a failed
        # unit's stages in the parts layout stay, so that its retry skips what it read.
        if self.layout == "single" or not result.get("failed_units"):
            self._remove_work()
        return summary

    def remove_gathered(self) -> None:
        """A rank other than 0 without a shared filesystem, once rank 0 has merged the copies it gathered: this
        rank's own parts of ``layout: single`` and its stages (each file proven its own first)."""
        if self.layout == "single":
            self._remove_work()

    def _remove_work(self) -> None:
        """lit_infer's own files in the work folder (a config names it: never removed wholesale), then the folders
        they leave empty. The parts of ``layout: single`` go as a run's parts go: each proven its own first."""
        remove_work_files(self.stage_dir)
        if self.layout == "single":
            remove_run(self.out)
            for folder in (self.out.path(PARTS_DIR), self.out.path()):
                with contextlib.suppress(OSError):
                    os.rmdir(folder)
        remove_work_files(self.work_dir)


_COUNTS = ("num_items", "num_predicted", "num_failed", "num_units", "failed_units")


def check_layout(layout: str, output_dir: str | os.PathLike | None) -> None:
    """``writer.layout`` is ``single`` or ``parts``, and an object-store ``output_dir`` takes parts only."""
    if layout not in ("single", "parts"):
        raise ConfigError("writer.layout", layout, "unknown layout", "Use 'single' or 'parts'")
    if output_dir is not None and is_url(os.fspath(output_dir)) and layout != "parts":
        raise ConfigError(
            "writer.output_dir", os.fspath(output_dir), "a URL takes part files only", "Set writer.layout=parts"
        )
