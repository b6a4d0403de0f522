"""Bring every rank's committed shard to rank 0 over the process group, for ranks without a shared filesystem."""

from __future__ import annotations

import os

import torch.distributed as dist

from lit_infer.atomic import read_json, write_json
from lit_infer.output.shards import committed_path


def gather_shards(shard_path: str, work_dir: str, rank: int) -> list[str]:
    """Collective: each rank sends its shard's committed bytes; rank 0 writes them into its own ``work_dir``.

    Only the committed part of a shard travels, with its commit file, so rank 0 then sees exactly what it would have
    seen on a shared filesystem and the usual merge (and its coverage proof) runs unchanged. Whole shards travel
    as single messages: they must fit in memory on rank 0 (predictions are small; big embedding runs want a shared
    filesystem).

    Returns:
        On rank 0, the shard files written; elsewhere ``[]``.
    """
    payload = None
    if rank != 0:
        commit = read_json(committed_path(shard_path))
        with open(shard_path, "rb") as f:
            data = f.read(int(commit["bytes"]))
        payload = (os.path.basename(shard_path), data, commit)
    received: list = [None] * dist.get_world_size() if rank == 0 else []
    dist.gather_object(payload, received if rank == 0 else None, dst=0)
    written = []
    for item in received:
        if item is None:
            continue
        name, data, commit = item
        path = os.path.join(work_dir, os.path.basename(name))
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # The commit file last: a shard counts only once its bytes are on disk.
        write_json(committed_path(path), commit)
        written.append(path)
    return written
