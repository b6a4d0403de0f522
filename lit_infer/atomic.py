"""Files that never exist half-written under their final name: write a temp file, fsync, rename, fsync the folder.

The one atomic write of the package (outputs, manifests, the pixel cache). Temp files are ``.<name>.tmp-<pid>``
beside the final name: removed on an error, and by :func:`remove_stale_temps` when a killed process left one.
"""

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


def is_temp_name(name: str) -> bool:
    """Whether a file name is one :func:`temp_name` makes."""
    return name.startswith(".") and ".tmp-" in name and name.rsplit(".tmp-", 1)[1].isdigit()


@contextlib.contextmanager
def atomic_open(
    final: str, mode: str = "w", durable: bool = True, exclusive: bool = False, **kwargs: Any
) -> Iterator[IO[Any]]:
    """Open a temp file beside ``final``; on success fsync it and rename it into place, on error remove it.

    The rename alone survives a killed process; ``durable`` (fsync) also survives losing the machine.
    ``exclusive``: publish only if ``final`` does not exist yet (a hard link, which fails on an existing name): when
    several processes race to create the same file, the first one's stays and the others' are dropped.
    """
    tmp = temp_name(final)
    f = open(tmp, mode, **kwargs)  # noqa: SIM115 -- closed below, before the rename
    try:
        yield f
        f.flush()
        if durable:
            os.fsync(f.fileno())
        f.close()
        if exclusive:
            with contextlib.suppress(FileExistsError):
                os.link(tmp, final)
            os.remove(tmp)
            if durable:
                fsync_dir(os.path.dirname(final) or ".")
        else:
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


def write_json(final: str, obj: Any, durable: bool = True, exclusive: bool = False) -> None:
    with atomic_open(final, "w", durable=durable, exclusive=exclusive, encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def remove_stale_temps(directory: str, shared: bool = False) -> None:
    """Temp files left in ``directory`` by a process killed between write and rename.

    ``shared``: other live processes on this machine may be writing there too (a cache several runs use), so only
    the temps of processes that no longer exist are removed.
    """
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        if is_temp_name(name) and not (shared and _alive(int(name.rsplit(".tmp-", 1)[1]))):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(directory, name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
