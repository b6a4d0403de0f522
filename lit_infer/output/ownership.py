"""lit_infer deletes only what it wrote, inside ``output_dir``.

- Every file a run publishes is recorded with its size and SHA-256: the outputs of a single-file run in its
  ``summary.json``, each part in its commit record ``_parts/part-NNNNNN.json``. Before ``writer.overwrite`` removes
  or a merge reads a file named in such a record, :func:`check_owned` proves it one of lit_infer's own: a plain
  name of an output in the output folder (the table, ``errors.jsonl``, ``<column>.npy``, ``part-NNNNNN.*``), a
  regular file, the recorded bytes. A planted or edited record (``"../victim/keep.txt"``, ``/etc/passwd``, a
  folder, a user's own ``thesis.csv``) is refused in one line naming it, before anything is touched.
- ``work_dir`` is never removed wholesale: only lit_infer's own files in it (``run.json``, ``part-*.bin/json``, temp
  files), then the folder if that left it empty. A ``work_dir`` that is the output folder, or that holds files of
  anyone else, is refused before the run.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

from lit_infer.checksum import sha256_file
from lit_infer.data.storage import Storage
from lit_infer.errors import ConfigError, RunError

# A run's stages (``u<unit>.a<attempt>.r<rank>``), the folders holding them
# and, for ``layout: single``, the parts before their merge; temp files.
_WORK_FILE = re.compile(
    r"^(u\d{6,}\.a\d{3,}\.r\d{5,}\.(bin|json)|part-\d{6,}\.errors\.jsonl|stages|parts|\..+\.tmp-\d+)$"
)
_OUTPUT_SUFFIXES = (".csv", ".jsonl", ".parquet", ".npy")
DERIVED_FILES = ("coco_results.json",)
"""Outputs a module derives from the merged table (``ObjectDetector(coco_results=True)``), by their one name."""
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
            "is the output folder itself (its stages and parts would be cleaned up among the outputs)",
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


def identity(path: str) -> dict[str, Any]:
    """What a commit record keeps of a file lit_infer just wrote: its size and SHA-256."""
    return {"size": os.path.getsize(path), "sha256": sha256_file(path)}


def record(output_dir: str, files: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Name -> identity of the outputs just written, for :func:`check_owned` to recognise them later."""
    return {name: identity(os.path.join(output_dir, name)) for name in files.values()}


def check_owned(out: Storage, name: Any, recorded: Any, where: str, then: str, prefix: str = "") -> bool:
    """Whether ``name``, taken from the record ``where``, is a file lit_infer wrote in ``out`` and still the same.

    ``True``: a plain name of an output (starting with ``prefix``) in the folder itself, a regular file (no link, no
    folder, no device) of the recorded size and SHA-256. ``False``: such a name, recorded, but no file there. Anything
    else (``../x``, an absolute path, a folder, a link, a file of other bytes) raises :class:`RunError` in one line
    naming the record and the name and ending with ``then`` (what was not done).
    """
    refuse = _refusal(name, where, then)
    _check_name(out, name, recorded, prefix, refuse)
    try:
        if out.remote:
            size = int(out.fs.info(out.path(name))["size"])
            digest = _remote_sha256(out, name) if size == recorded["size"] else None
        else:
            size, digest = _local_identity(out.path(), name, recorded["size"])
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise refuse(_unreadable(exc)) from None
    _check_identity(size, digest, recorded, refuse)
    return True


def read_owned(out: Storage, name: Any, recorded: Any, where: str, then: str, prefix: str = "") -> bytes:
    """The bytes of a file a record names, proven the recorded ones as by :func:`check_owned` (and a file that is
    not there is refused too): a merge reads each part once, and checks what it read."""
    refuse = _refusal(name, where, then)
    _check_name(out, name, recorded, prefix, refuse)
    try:
        data = read_own_file(out, name)
    except FileNotFoundError:
        raise refuse("is missing") from None
    except OSError as exc:
        raise refuse(_unreadable(exc)) from None
    _check_identity(len(data), hashlib.sha256(data).hexdigest(), recorded, refuse)
    return data


def _refusal(name: Any, where: str, then: str) -> Callable[[str], RunError]:
    return lambda why: RunError(f"{where} names {name!r}, which {why}; {then}")


def _unreadable(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a link
        return "is a link, not a file lit_infer wrote"
    return f"cannot be read as a file ({exc.strerror or exc})"


def _check_name(out: Storage, name: Any, recorded: Any, prefix: str, refuse: Callable[[str], RunError]) -> None:
    if not isinstance(name, str) or not _is_output_name(name, prefix):
        raise refuse(f"is not a file lit_infer writes in {out.root!r} (a plain name of one of its outputs)")
    if not isinstance(recorded, Mapping) or not isinstance(recorded.get("size"), int) or not recorded.get("sha256"):
        raise refuse("has no recorded size and SHA-256")


def _check_identity(
    size: int, digest: str | None, recorded: Mapping[str, Any], refuse: Callable[[str], RunError]
) -> None:
    if size != recorded["size"]:
        raise refuse(f"has {size} bytes where {recorded['size']} were recorded")
    if digest != recorded["sha256"]:
        raise refuse("has other bytes than recorded (SHA-256 differs)")


def read_own_file(out: Storage, name: str) -> bytes:
    """A file of lit_infer's own bookkeeping in ``out`` (``_manifest.json``, ``_parts/part-NNNNNN.json``): locally,
    only a regular file inside the folder, never through a link (a planted ``_parts`` link to another folder, a
    record linked to ``/etc/passwd``)."""
    if out.remote:
        return out.read_bytes(name)
    root = out.path()
    path = os.path.join(root, name)
    if os.path.commonpath([os.path.realpath(os.path.dirname(path)), os.path.realpath(root)]) != os.path.realpath(root):
        raise OSError(errno.EXDEV, "outside the output folder")
    with _open_regular(path) as f:
        return f.read()


def recorded_outputs(output_dir: str, summary: Mapping[str, Any], where: str) -> list[str]:
    """The outputs an earlier run recorded in ``summary`` (read from ``where``) that are still there, once every one
    of them is proven its own; otherwise a refusal, and nothing is removed."""
    files, owned = summary.get("files"), summary.get("owned")
    if not isinstance(files, Mapping) or not files:
        return []
    owned = owned if isinstance(owned, Mapping) else {}
    then = (
        f"nothing was deleted. Remove the earlier run's files from {output_dir!r} yourself, or choose another "
        "--writer.output_dir"
    )
    out = Storage(output_dir)
    return [
        name
        for name in files.values()
        if check_owned(out, name, owned.get(name) if isinstance(name, str) else None, where, then)
    ]


def _is_output_name(name: str, prefix: str) -> bool:
    return (
        name == os.path.basename(name)
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
        and name not in ("", ".", "..")
        and not os.path.isabs(name)
        and name.startswith(prefix)
        and (name.endswith(_OUTPUT_SUFFIXES) or (not prefix and name in DERIVED_FILES))
    )


def _local_identity(folder: str, name: str, expected_size: int) -> tuple[int, str | None]:
    with _open_regular(os.path.join(folder, name)) as f:
        size = os.fstat(f.fileno()).st_size
        return size, sha256_file(f) if size == expected_size else None


def _open_regular(path: str) -> BinaryIO:
    """``path`` opened without following a link, and checked to be a regular file before a byte is read (never a
    FIFO)."""
    f = os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)), "rb")
    if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
        f.close()
        raise OSError(errno.EINVAL, "not a regular file")
    return f


def _remote_sha256(out: Storage, name: str) -> str:
    with out.fs.open(out.path(name), "rb") as f:
        return sha256_file(f)
