"""Files that never exist half-written under their final name: write a temp file, fsync, rename, fsync the folder."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import IO, Any


def fsync_dir(path: str) -> None:
    # The rename is durable only once the directory entry is on disk too.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temp_name(final: str) -> str:
    head, tail = os.path.split(final)
    return os.path.join(head, f".{tail}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_open(final: str, mode: str = "w", durable: bool = True, **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temp file beside ``final``; on success fsync it and rename it into place, on error remove it.

    The rename alone survives a killed process; ``durable`` (fsync) also survives losing the machine.
    """
    tmp = temp_name(final)
    f = open(tmp, mode, **kwargs)  # noqa: SIM115 -- closed below, before the rename
    try:
        yield f
        f.flush()
        if durable:
            os.fsync(f.fileno())
        f.close()
        replace(tmp, final, durable)
    except BaseException:
        f.close()
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def replace(tmp: str, final: str, durable: bool = True) -> None:
    """Rename ``tmp`` over ``final``. A symlink at ``final`` is replaced, never followed."""
    os.replace(tmp, final)
    if durable:
        fsync_dir(os.path.dirname(final) or ".")


def write_json(final: str, obj: Any, durable: bool = True) -> None:
    with atomic_open(final, "w", durable=durable, encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)
