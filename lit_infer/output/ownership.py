"""lit_infer deletes only what it wrote, inside ``output_dir``.

- The outputs of a finished run are recorded in its ``summary.json`` with each file's size and modification time.
  ``writer.overwrite`` removes a recorded file only if its name is one lit_infer writes (a plain name in the output
  folder: the table, ``errors.jsonl``, ``<column>.npy``) and it is still the file that run wrote. A planted or edited
  summary (``"../victim/keep.txt"``, a user's own ``thesis.csv``) deletes nothing.
- ``work_dir`` is never removed wholesale: only lit_infer's own files in it (``run.json``, ``part-*.bin/json``, temp
  files), then the folder if that left it empty. A ``work_dir`` that is the output folder, or that holds files of
  anyone else, is refused before the run.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from typing import Any

from lit_infer.errors import ConfigError

_WORK_FILE = re.compile(r"^(run\.json|part-\d{3,}-\d{5,}\.(bin|json)|\..+\.tmp-\d+)$")
_OUTPUT_SUFFIXES = (".csv", ".jsonl", ".parquet", ".npy")
RESERVED = ("errors.jsonl", "summary.json")


def check_filename(filename: str, ext: str) -> None:
    """``writer.filename`` must be a plain name whose file cannot be mistaken for another output."""
    bad = (
        not filename
        or filename != os.path.basename(filename)
        or "/" in filename
        or "\\" in filename
        or filename.startswith((".", "_", "part-"))
    )
    if bad:
        raise ConfigError(
            "writer.filename",
            filename,
            "must be a plain file name, not starting with '.', '_' or 'part-' (lit_infer's own files)",
            "Give a name such as 'predictions'",
        )
    if f"{filename}.{ext}" in RESERVED:
        raise ConfigError(
            "writer.filename",
            filename,
            f"{filename}.{ext} is where lit_infer writes its {filename} record",
            "Give another name, such as 'predictions'",
        )


def check_work_dir(work_dir: str, output_dir: str) -> None:
    """Refuse a ``work_dir`` that is the output folder or holds files lit_infer did not write."""
    if os.path.realpath(work_dir) == os.path.realpath(output_dir):
        raise ConfigError(
            "writer.work_dir",
            work_dir,
            "is the output folder itself (its shards would be cleaned up among the outputs)",
            "Leave it unset (default <output_dir>/.lit_infer) or give a folder of its own",
        )
    if not os.path.isdir(work_dir):
        return
    foreign = sorted(name for name in os.listdir(work_dir) if not _WORK_FILE.match(name))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f", ... (+{len(foreign) - 3})" if len(foreign) > 3 else "")
        raise ConfigError(
            "writer.work_dir",
            work_dir,
            f"holds files lit_infer did not write ({shown}), which its clean-up must never touch",
            "Give an empty folder, or one only lit_infer uses",
        )


def remove_work_files(work_dir: str) -> None:
    """lit_infer's own files in ``work_dir``, then the folder if nothing else is in it."""
    if not os.path.isdir(work_dir):
        return
    for name in os.listdir(work_dir):
        if _WORK_FILE.match(name):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.remove(os.path.join(work_dir, name))
    with contextlib.suppress(OSError):  # not empty: someone else's files stay, and so does the folder
        os.rmdir(work_dir)


def record(output_dir: str, files: Mapping[str, str]) -> dict[str, list[int]]:
    """Name -> [size, mtime_ns] of the outputs just written, for :func:`remove_recorded` to recognise them."""
    out = {}
    for name in files.values():
        st = os.stat(os.path.join(output_dir, name))
        out[name] = [st.st_size, st.st_mtime_ns]
    return out


def remove_recorded(output_dir: str, summary: Mapping[str, Any]) -> list[str]:
    """Remove the outputs an earlier run recorded in ``summary`` that are still its files; the names kept."""
    owned = summary.get("owned")
    files = summary.get("files")
    kept: list[str] = []
    if not isinstance(files, Mapping) or not isinstance(owned, Mapping):
        return kept
    for name in files.values():
        identity = owned.get(name) if isinstance(name, str) else None
        if not isinstance(name, str) or not _is_own_output(output_dir, name, identity):
            kept.append(str(name))
            continue
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(output_dir, name))
    return kept


def _is_own_output(output_dir: str, name: str, identity: Any) -> bool:
    if name != os.path.basename(name) or name in ("", ".", "..") or not name.endswith(_OUTPUT_SUFFIXES):
        return False
    path = os.path.join(output_dir, name)
    if os.path.realpath(os.path.dirname(path)) != os.path.realpath(output_dir):
        return False
    try:
        st = os.lstat(path)  # a symlink planted under the name is not the file lit_infer wrote
    except OSError:
        return False
    return isinstance(identity, list) and [st.st_size, st.st_mtime_ns] == identity
