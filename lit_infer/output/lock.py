"""One output folder, one run at a time: an advisory lock the kernel releases when its holder dies.

``flock`` on ``<output_dir>/.lit_infer.lock``, taken by the process that decides the run (rank 0) before it reads
or changes anything in the folder, held until the run ends. A second run into the same folder is refused at once,
naming the folder and the holder (pid and host, written into the lock file by the holder), and touches nothing:
committed work is never discarded by a collision. A holder killed with ``kill -9`` holds nothing: the kernel drops a
dead process's locks, so the next run simply takes it. On NFS, Linux maps ``flock`` to the server's byte-range
locks, which other clients see too.

The lock file stays (empty of meaning once unlocked): removing it while another process waits on the same path
would let two runs each lock a different file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time

from lit_infer.errors import RunError

LOCK_NAME = ".lit_infer.lock"


class FolderLock:
    """Hold ``<folder>/.lit_infer.lock`` exclusively (``acquire``), or fail naming the holder."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunError(
                f"writer.output_dir={self.folder!r} is in use by another run ({holder}). Wait for it to finish, "
                "or choose another --writer.output_dir."
            ) from None
        # Who holds it, for the refusal above; written after locking, so only the holder writes.
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": round(time.time())})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode() + b"\n", 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing drops the flock


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "its holder is starting"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
    return f"pid {info.get('pid')} on {info.get('host')}, since {since}"


_held: dict[str, FolderLock] = {}
"""Folder -> the lock this process holds on it for the run in progress (rank 0 takes it in the plan, finalize and
a failure release it)."""


def claim(folder: str) -> FolderLock:
    """Make ``folder`` if needed and lock it for this run: a file in its place, or another run holding it, is refused
    in one line before anything in it is read or changed."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise RunError(f"writer.output_dir={folder!r}: is a file. Give a folder (new or existing)")
    os.makedirs(folder, exist_ok=True)
    release(folder)  # an earlier run of this process that ended without releasing it: that run is over
    lock = FolderLock(folder)
    lock.acquire()
    _held[os.path.realpath(folder)] = lock
    return lock


def release(folder: str) -> None:
    """Give up this process's lock on ``folder``, if it holds one."""
    lock = _held.pop(os.path.realpath(folder), None)
    if lock is not None:
        lock.release()
