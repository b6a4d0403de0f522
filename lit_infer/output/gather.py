"""Bring the parts every rank committed to rank 0 over the process group, for ranks without a shared filesystem."""

from __future__ import annotations

import json
from typing import Any

import torch.distributed as dist

from lit_infer.data.storage import Storage
from lit_infer.errors import RunError
from lit_infer.output.manifest import check_record
from lit_infer.output.parts import PARTS_DIR, part_name

_THEN = "nothing was merged; rerun with a shared writer.output_dir"


def gather_parts(out: Storage, records: list[dict[str, Any]], rank: int) -> None:
    """Collective: each rank other than 0 sends the parts it committed in this attempt (their files and commit
    records); rank 0 writes them into its own parts folder ``out``, each record after its files.

    Rank 0 then sees what it would have seen on a shared filesystem, and the usual finalize and verified merge run
    unchanged (each file's size and SHA-256 against its record). A rank's parts travel as one message: they must fit
    in memory on rank 0 (predictions are small; big embedding runs want a shared filesystem). Parts an earlier
    attempt committed on another node are not sent: rank 0 never saw them as done, so this attempt predicted them.
    """
    payload = None
    if rank != 0:
        payload = [(r, {name: out.read_bytes(name) for name in r["files"].values()}) for r in records]
    received: list[Any] = [None] * dist.get_world_size() if rank == 0 else []
    dist.gather_object(payload, received if rank == 0 else None, dst=0)
    for item in received:
        for record, files in item or []:
            ordinal = record.get("ordinal") if isinstance(record, dict) else None
            if not isinstance(ordinal, int) or isinstance(ordinal, bool) or ordinal < 0:
                raise RunError(f"a part gathered from another rank has no ordinal; {_THEN}")
            blob = json.dumps(record, indent=1).encode()
            check_record(blob, ordinal, f"the record of {part_name(ordinal)} from another rank", _THEN)
            if set(files) != set(record["files"].values()) or any("/" in n or "\\" in n for n in files):
                raise RunError(f"{part_name(ordinal)} from another rank holds other files than its record; {_THEN}")
            for name, data in files.items():
                out.write_bytes(name, data)
            out.write_bytes(f"{PARTS_DIR}/{part_name(ordinal)}.json", blob)  # the commit: last
