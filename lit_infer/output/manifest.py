"""Finalize a parts run: every unit's commit record -> ``_manifest.json`` -> ``_SUCCESS`` (the Spark/Ray pattern).

Reads the small commit records only, never a prediction: finalize costs one listing and one small read per part.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from typing import Any

from lit_infer.atomic import is_temp_name
from lit_infer.data.storage import Storage
from lit_infer.data.units import Unit
from lit_infer.errors import RunError
from lit_infer.output.formats import TABLE_EXT
from lit_infer.output.ownership import check_owned, read_own_file
from lit_infer.output.parts import PARTS_DIR, CoverageError, part_name

MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"
RUN = "_run.json"
MANIFEST_VERSION = 1
_RECORD = re.compile(r"^part-(\d{6,})\.json$")
_COLUMN = re.compile(r"^(table|errors|[A-Za-z_][A-Za-z0-9_]{0,99})$")


def read_records(out: Storage, then: str) -> dict[int, dict[str, Any]]:
    """Unit ordinal -> its commit record, for every part committed in ``out``. Anything in ``_parts/`` that is not a
    well-formed record of lit_infer's (a planted name, a link, a record naming files of another part) is refused in
    one line ending with ``then``."""
    if not out.remote and os.path.islink(out.path(PARTS_DIR)):  # never list, let alone read, another folder
        raise RunError(f"{out.path(PARTS_DIR)!r} is a link, not lit_infer's folder of commit records; {then}")
    names = [n for n in out.listdir(PARTS_DIR) if not is_temp_name(n)]  # a temp: a record a kill cut short
    for name in names:
        if not _RECORD.match(name):
            raise RunError(f"{out.url(PARTS_DIR + '/' + name)!r} is not a commit record lit_infer writes; {then}")
    paths = [f"{PARTS_DIR}/{n}" for n in names]
    try:
        blobs = out.read_many(paths) if out.remote else {p: read_own_file(out, p) for p in paths}
    except OSError as exc:
        raise RunError(f"{out.root!r}: a commit record in {PARTS_DIR}/ cannot be read ({exc}); {then}") from None
    records = {}
    for path, blob in blobs.items():
        ordinal = int(_RECORD.match(path.rsplit("/", 1)[1]).group(1))  # type: ignore[union-attr]
        records[ordinal] = check_record(blob, ordinal, out.url(path), then)
    return records


def read_own_json(out: Storage, name: str, then: str) -> dict[str, Any]:
    """``_manifest.json`` or ``_run.json``: lit_infer's own file in ``out`` (no link out of it), a JSON object."""
    try:
        value = json.loads(read_own_file(out, name))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise RunError(f"{out.url(name)!r} is damaged or not lit_infer's ({type(exc).__name__}); {then}") from None
    if not isinstance(value, dict):
        raise RunError(f"{out.url(name)!r} is not a JSON object; {then}")
    return value


def check_record(blob: bytes, ordinal: int, where: str, then: str) -> dict[str, Any]:
    """A commit record as lit_infer writes it: its unit's counts, and files named after its own part only."""

    def refuse(why: str) -> RunError:
        return RunError(f"{where} {why}; {then}")

    try:
        record = json.loads(blob)
    except (ValueError, UnicodeDecodeError) as exc:
        raise refuse(f"is damaged ({type(exc).__name__})") from None
    if not isinstance(record, dict) or record.get("ordinal") != ordinal:
        raise refuse(f"is not the commit record of {part_name(ordinal)}")
    counts = {k: record.get(k) for k in ("start", "items", "rows", "failed")}
    bad = [k for k, v in counts.items() if not isinstance(v, int) or isinstance(v, bool) or v < 0]
    if bad or not isinstance(record.get("complete"), bool):
        raise refuse(f"has no valid {', '.join(bad) or 'complete'}")
    done = counts["rows"] + counts["failed"]
    if done > counts["items"] or (record["complete"] and done != counts["items"]):
        raise refuse(f"counts {done} rows and failures for {counts['items']} inputs")
    files, owned = record.get("files"), record.get("owned")
    if not isinstance(files, dict) or "table" not in files or not isinstance(owned, dict):
        raise refuse("names no files")
    for key, name in files.items():
        own = isinstance(name, str) and name in owned and name.startswith(part_name(ordinal) + ".")
        if not isinstance(key, str) or not _COLUMN.match(key) or not own:
            raise refuse(f"names {name!r} as its {key!r}, which is not a file of {part_name(ordinal)}")
    return record


def committed_units(records: dict[int, dict[str, Any]], fingerprint: str) -> dict[int, dict[str, Any]]:
    """The records of units a rerun must not redo: read to their end, by a run with this fingerprint."""
    return {o: r for o, r in records.items() if r.get("complete") and r.get("fingerprint") == fingerprint}


def finalize(
    out: Storage,
    units: list[Unit],
    fingerprint: dict[str, Any],
    digest: str,
    fmt: str,
    summary: dict[str, Any],
    success: bool = True,
) -> dict[str, Any]:
    """Check that every unit has its part, then write the manifest and (when ``success``) ``_SUCCESS``."""
    records = read_records(out, "the run is not finalized; rerun it, or start fresh in another --writer.output_dir")
    missing = [u.id for u in units if u.ordinal not in records]
    if missing:
        raise CoverageError(f"{len(missing)} units have no committed part (first {missing[:5]})")
    stale = [u.id for u in units if records[u.ordinal].get("fingerprint") != digest]
    if stale:
        raise CoverageError(f"{len(stale)} parts come from another run (first {stale[:5]})")
    parts = [records[u.ordinal] for u in units]
    failed_units = [{"unit": p["unit"], "error": p["error"]} for p in parts if not p["complete"]]
    manifest = {
        "version": MANIFEST_VERSION,
        "layout": "parts",
        "format": fmt,
        "fingerprint": fingerprint,
        "num_units": len(parts),
        "num_items": sum(p["items"] for p in parts),
        "num_predicted": sum(p["rows"] for p in parts),
        "num_failed": sum(p["failed"] for p in parts) + len(failed_units),
        "failed_units": failed_units,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "summary": summary,
        "parts": parts,
    }
    out.write_bytes(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
    if success:
        out.write_bytes(SUCCESS, b"")
    return manifest


def remove_run(out: Storage) -> None:
    """Delete what a parts run wrote (``overwrite``): its parts, records, manifest and marker, nothing else. Every file
    a record names is proven the part's own (name, size, SHA-256) before the first one goes."""
    then = (
        f"nothing was deleted. Remove the earlier run's files from {out.root!r} yourself, or choose another "
        "--writer.output_dir"
    )
    records = read_records(out, then)
    present = []
    for ordinal, record in sorted(records.items()):
        where = out.url(f"{PARTS_DIR}/{part_name(ordinal)}.json")
        for name in record["files"].values():
            if check_owned(out, name, record["owned"][name], where, then, prefix=part_name(ordinal) + "."):
                present.append(name)
    own = [f"{PARTS_DIR}/{part_name(o)}.json" for o in records] + [SUCCESS, MANIFEST, RUN]
    for name in own:
        if not out.remote and os.path.isdir(out.path(name)) and not os.path.islink(out.path(name)):
            raise RunError(f"{out.path(name)!r} is a folder, not lit_infer's file; {then}")
    for name in present + own:
        out.remove(name)


def verified_parts(out: Storage, then: str, require_success: bool = True) -> tuple[str, list[dict[str, Any]]]:
    """The format and parts of a finished run, in unit order, once ``_manifest.json`` is proven to list exactly the
    committed records (none dropped, doubled or added, each entry equal to its record), one per unit, every unit
    once, every file named as its part's own. A merge then checks each file's bytes as it reads them.
    ``require_success=False``: the end of the run itself, which merges before it checks the error budget."""
    if not out.exists(MANIFEST):
        raise RunError(f"{out.root!r} has no {MANIFEST}: not a finished parts run (or it is still running)")
    if require_success and not out.exists(SUCCESS):
        raise RunError(f"{out.root!r} has a manifest but no {SUCCESS}: the run did not succeed; rerun it first")
    manifest = read_own_json(out, MANIFEST, then)
    where = out.url(MANIFEST)
    fmt, entries = manifest.get("format"), manifest.get("parts")
    if fmt not in TABLE_EXT or not isinstance(entries, list):
        raise RunError(f"{where} names no known format or no parts; {then}")
    records = read_records(out, then)
    listed: dict[int, dict[str, Any]] = {}
    for entry in entries:
        ordinal = entry.get("ordinal") if isinstance(entry, dict) else None
        if not isinstance(ordinal, int) or isinstance(ordinal, bool):
            raise RunError(f"{where} lists a part with no ordinal; {then}")
        name = part_name(ordinal)
        if ordinal in listed:
            raise RunError(f"{where} lists {name} twice; {then}")
        if ordinal not in records:
            raise RunError(f"{where} lists {name}, which has no commit record {PARTS_DIR}/{name}.json; {then}")
        if entry != records[ordinal]:
            raise RunError(f"{where}: the entry of {name} differs from its commit record; {then}")
        listed[ordinal] = entry
    dropped = sorted(set(records) - set(listed))
    if dropped:
        raise RunError(f"{where} leaves out {part_name(dropped[0])}, which is committed; {then}")
    if sorted(listed) != list(range(len(listed))):
        gap = min(set(range(len(listed) + 1)) - set(listed))
        raise RunError(f"{where}: unit {part_name(gap)} has no part; {then}")
    parts = [listed[o] for o in range(len(listed))]
    counts = {"num_units": len(parts), "num_items": sum(p["items"] for p in parts)}
    if any(manifest.get(k) != v for k, v in counts.items()) or len({p.get("fingerprint") for p in parts}) > 1:
        raise RunError(f"{where}: its counts or run differ from its parts'; {then}")
    for p in parts:
        name = part_name(p["ordinal"])
        expected = {"table": f"{name}.{TABLE_EXT[fmt]}", "errors": f"{name}.errors.jsonl"}
        for key, file in p["files"].items():
            if file != expected.get(key, f"{name}.{key}.npy") or (key not in expected and fmt != "npy"):
                raise RunError(f"{out.url(f'{PARTS_DIR}/{name}.json')} names {file!r} as its {key!r}; {then}")
    return fmt, parts
