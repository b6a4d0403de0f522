"""Read a finished run for its report: summary, predictions (any format, ``single`` or ``parts`` layout), failures,
the timings of each rank and how the run started.

Every file name comes from the run's own records (``summary.json``, ``_manifest.json``), which may have been
edited: a name is used only if it stays inside the output folder and is a regular file (:func:`inside`).
The predictions themselves are read by ``tables.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from dataclasses import dataclass
from typing import Any

from lit_infer.errors import RunError
from lit_infer.report.files import REPORT_DIR, RUN_INFO, timings_name
from lit_infer.report.tables import TableFile


@dataclass
class Run:
    """What a finished run left in its output folder, as far as the report needs it."""

    output_dir: str
    summary: dict[str, Any]
    layout: str
    tables: list[TableFile]
    error_files: list[str]
    failed_units: list[dict[str, Any]]
    fingerprint: dict[str, Any]
    run_info: dict[str, Any] | None
    timings: list[dict[str, Any]]
    problems: list[str]
    """What could not be read (shown in the report instead of the part it would have filled)."""


def inside(root: str, name: Any) -> str | None:
    """``root/name`` if ``name`` is a plain relative name of a regular file that stays inside ``root``, else ``None``."""
    if not isinstance(name, str) or not name or os.path.isabs(name) or "\\" in name or "\x00" in name:
        return None
    if any(part in ("..", "") for part in name.split("/")):
        return None
    path = os.path.join(root, name)
    real_root = os.path.realpath(root)
    if not os.path.realpath(path).startswith(real_root + os.sep):
        return None
    try:
        return path if stat.S_ISREG(os.stat(path).st_mode) else None
    except OSError:
        return None


def read_run(output_dir: str) -> Run:
    """The run in ``output_dir`` (a finished one: its ``summary.json`` is there)."""
    summary_path = os.path.join(output_dir, "summary.json")
    try:
        with open(summary_path, encoding="utf-8") as f:
            summary = json.load(f)
    except FileNotFoundError:
        raise RunError(f"{output_dir!r} has no summary.json: not a finished lit_infer run") from None
    except (OSError, ValueError) as exc:
        raise RunError(f"{summary_path!r} cannot be read ({exc})") from None
    if not isinstance(summary, dict):
        raise RunError(f"{summary_path!r} is not a lit_infer summary")
    problems: list[str] = []
    files = summary.get("files") if isinstance(summary.get("files"), dict) else {}
    tables: list[TableFile] = []
    errors: list[str] = []
    failed_units: list[dict[str, Any]] = []
    fingerprint = summary.get("fingerprint") or {}
    layout = "single"
    if "manifest" in files:
        layout = "parts"
        manifest_path = inside(output_dir, files["manifest"])
        manifest = _load_json(manifest_path, problems) if manifest_path else None
        if not isinstance(manifest, dict):
            problems.append("the manifest named in summary.json cannot be read: no predictions shown")
            manifest = {}
        fingerprint = manifest.get("fingerprint") or fingerprint
        fmt = manifest.get("format")
        failed_units = [u for u in manifest.get("failed_units") or [] if isinstance(u, dict)]
        for part in sorted(
            manifest.get("parts") or [], key=lambda p: p.get("ordinal", 0) if isinstance(p, dict) else 0
        ):
            names = part.get("files") if isinstance(part, dict) else None
            if not isinstance(names, dict):
                continue
            table = _table(output_dir, fmt, names, problems)
            if table is not None:
                tables.append(table)
            if "errors" in names:
                path = inside(output_dir, names["errors"])
                if path is None:
                    problems.append(f"errors file {names['errors']!r} of a part is not inside the output folder")
                else:
                    errors.append(path)
    else:
        fmt = (fingerprint.get("output") or {}).get("format")
        if fmt is None and isinstance(files.get("table"), str):
            fmt = {"csv": "csv", "jsonl": "jsonl", "parquet": "parquet"}.get(files["table"].rsplit(".", 1)[-1])
            fmt = "npy" if fmt == "csv" and len(files) > 2 else fmt
        table = _table(output_dir, fmt, files, problems) if files.get("table") else None
        if table is not None:
            tables.append(table)
        if files.get("errors"):
            path = inside(output_dir, files["errors"])
            if path is not None:
                errors.append(path)
    return Run(
        output_dir=output_dir,
        summary=summary,
        layout=layout,
        tables=tables,
        error_files=errors,
        failed_units=failed_units,
        fingerprint=fingerprint if isinstance(fingerprint, dict) else {},
        run_info=_run_info(output_dir),
        timings=_timings(output_dir, summary),
        problems=problems,
    )


def _table(root: str, fmt: Any, names: dict[str, Any], problems: list[str]) -> TableFile | None:
    if fmt not in ("csv", "jsonl", "parquet", "npy"):
        problems.append(f"unknown output format {fmt!r}: no predictions shown")
        return None
    path = inside(root, names.get("table"))
    if path is None:
        problems.append(f"table {names.get('table')!r} is missing or not inside the output folder")
        return None
    arrays = {}
    for key, name in names.items():
        if key in ("table", "errors"):
            continue
        array_path = inside(root, name)
        if array_path is None or not array_path.endswith(".npy"):
            problems.append(f"array {name!r} is missing or not inside the output folder")
            continue
        arrays[key] = array_path
    return TableFile(fmt, path, arrays)


def _load_json(path: str | None, problems: list[str]) -> Any:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        problems.append(f"{os.path.basename(path)} cannot be read ({exc})")
        return None


def _run_info(output_dir: str) -> dict[str, Any] | None:
    path = inside(output_dir, f"{REPORT_DIR}/{RUN_INFO}")
    info = _load_json(path, []) if path else None
    return info if isinstance(info, dict) else None


def _timings(output_dir: str, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each rank's timings of the run's last attempt (files of other runs, or of absent ranks, are left out)."""
    world = summary.get("world_size") if isinstance(summary.get("world_size"), int) else 1
    found = []
    for rank in range(min(world, 4096)):
        path = inside(output_dir, f"{REPORT_DIR}/{timings_name(rank)}")
        record = _load_json(path, []) if path else None
        if isinstance(record, dict) and isinstance(record.get("rows"), list) and record.get("world_size") == world:
            found.append(record)
    if found:
        attempt = found[0].get("attempt")
        found = [r for r in found if r.get("attempt") == attempt]
    return found


# ---- failures -----------------------------------------------------------------------------------------------------
def failures_by_type(run: Run, first: int = 5, max_types: int = 30) -> list[dict[str, Any]]:
    """Failures grouped by error type, most frequent first: count, the first paths and the first message."""
    groups: dict[str, dict[str, Any]] = {}

    def add(error_type: Any, path: Any, message: Any) -> None:
        key = str(error_type)[:200]
        group = groups.setdefault(key, {"error_type": key, "count": 0, "paths": [], "message": str(message)[:300]})
        group["count"] += 1
        if len(group["paths"]) < first:
            group["paths"].append(str(path)[:500])

    for path in run.error_files:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if isinstance(record, dict):
                        add(record.get("error_type"), record.get("path"), record.get("message"))
    if run.layout == "parts":
        for unit in run.failed_units:
            add("UnitReadError", unit.get("unit"), unit.get("error"))
    ordered = sorted(groups.values(), key=lambda g: -g["count"])
    return ordered[:max_types]
