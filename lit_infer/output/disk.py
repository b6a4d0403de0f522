"""The output folder's filesystem, in one line a user can act on: disk full, read-only, a damaged record."""

from __future__ import annotations

import errno
from typing import Any

from lit_infer.atomic import read_json
from lit_infer.errors import RunError

_WHY = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def output_error(folder: str | None, exc: OSError, resumable: bool = False) -> str:
    """``writer.output_dir='out': cannot write there: the disk is full (...)``, and what was kept."""
    why = _WHY.get(exc.errno or 0) or exc.strerror or str(exc) or type(exc).__name__
    where = exc.filename if isinstance(exc.filename, str) else folder
    kept = (
        " Every batch committed so far is kept: free space (or fix the folder) and rerun the same command to resume."
        if resumable
        else " Free space, fix the folder's permissions, or choose another --writer.output_dir."
    )
    return f"writer.output_dir={folder!r}: cannot write {where!r}: {why}.{kept}"


def read_record(path: str) -> dict[str, Any]:
    try:
        summary = read_json(path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunError(
            f"writer.output_dir: {path!r} is damaged ({type(exc).__name__}: {exc}). Start fresh with "
            "--writer.overwrite=true (it removes only lit_infer's own files), or choose another --writer.output_dir."
        ) from None
    return summary if isinstance(summary, dict) else {}
