"""Finalize a parts run: every unit's commit record -> ``_manifest.json`` -> ``_SUCCESS`` (the Spark/Ray pattern).

Reads the small commit records only, never a prediction: finalize costs one listing and one small read per part.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from lit_infer.data.storage import Storage
from lit_infer.data.units import Unit
from lit_infer.output.merge import CoverageError
from lit_infer.output.parts import PARTS_DIR, part_name

MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"
RUN = "_run.json"
MANIFEST_VERSION = 1


def read_records(out: Storage) -> dict[int, dict[str, Any]]:
    """Unit ordinal -> its commit record, for every part committed in ``out``."""
    names = [n for n in out.listdir(PARTS_DIR) if n.startswith("part-") and n.endswith(".json")]
    blobs = out.read_many([f"{PARTS_DIR}/{n}" for n in names])
    records = {}
    for blob in blobs.values():
        record = json.loads(blob)
        records[int(record["ordinal"])] = record
    return records


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
    records = read_records(out)
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
    """Delete what a parts run wrote (``overwrite``): its parts, records, manifest and marker, nothing else."""
    records = read_records(out)
    for record in records.values():
        for name in record.get("files", {}).values():
            out.remove(name)
        out.remove(f"{PARTS_DIR}/{part_name(int(record['ordinal']))}.json")
    for name in (SUCCESS, MANIFEST, RUN):
        out.remove(name)
