"""Read one image file's bytes without letting the file hang or hurt the run.

- Only regular files are read: a FIFO, socket, device or directory named like an image is refused from its ``stat``
  alone, never opened (opening a FIFO for reading waits for a writer forever; opening a device can act on it).
- A read that does not finish within ``timeout`` seconds (a stuck network mount, a file held by a lease) becomes
  this item's error: the read runs in a helper thread that is abandoned if it hangs, so the worker moves on.
- Transient I/O errors (NFS, object-store mounts) are retried with a backoff; a missing file fails at once.
"""

from __future__ import annotations

import atexit
import errno
import functools
import os
import queue
import stat
import threading
import time
from collections.abc import Callable
from typing import Any

from lit_infer.data.access import FILE_KINDS
from lit_infer.data.storage import filesystem, fs_path, is_url, local_path, protocol

# Errors worth another read: the file may be fine and the storage briefly not (NFS, object-store mounts).
TRANSIENT_ERRNOS = {errno.EIO, errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT, errno.EBUSY, errno.ESTALE}


class NotARegularFile(OSError):
    """A path named like an image that is a FIFO, socket, device or directory: refused without opening it."""


class ReadTimeout(TimeoutError):
    """The read did not finish within ``data.reading.read_timeout`` seconds."""


def _check_regular(mode: int, path: str) -> None:
    if not stat.S_ISREG(mode):
        kind = FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise NotARegularFile(errno.EINVAL, f"{kind}, not an image file: not opened", path)


def read_regular_file(path: str) -> bytes:
    """The bytes of ``path`` if it is a regular file (checked before opening, and again on what was opened)."""
    _check_regular(os.stat(path).st_mode, path)
    # A path swapped for a FIFO between the stat and the open would wait here for a writer: read_timeout bounds that,
    # as any other hang (O_NONBLOCK would not do: it also turns a leased file's wait into an error).
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    with open(fd, "rb", closefd=True) as f:
        _check_regular(os.fstat(fd).st_mode, path)
        return f.read()


def read_object(url: str, storage_options: dict[str, Any] | None = None) -> bytes:
    """The bytes of one object behind a URL (``s3://``, ``https://``...), through fsspec."""
    return filesystem(url, storage_options).cat_file(fs_path(url))


def read_with_retries(
    path: str, retries: int, backoff_s: float, storage_options: dict[str, Any] | None = None
) -> bytes:
    remote = is_url(path) and protocol(path) != "file"
    for attempt in range(retries + 1):
        try:
            return read_object(path, storage_options) if remote else read_regular_file(local_path(path))
        except read_errors() as exc:
            if not is_transient(exc, remote) or attempt >= retries:
                raise
            time.sleep(backoff_s * 2**attempt)
    raise OSError(errno.EIO, f"no read attempt was made (retries={retries})", path)


@functools.cache
def read_errors() -> tuple[type[BaseException], ...]:
    """What a read of a file or object may fail with: ``OSError``, and over HTTP aiohttp's own errors (fsspec lets a
    503 through as ``aiohttp.ClientResponseError``, which is not an ``OSError``)."""
    try:
        import aiohttp
    except ImportError:
        return (OSError,)
    return (OSError, aiohttp.ClientError)


def is_transient(exc: BaseException, remote: bool) -> bool:
    """Worth another read: the file may be fine and the storage briefly not (NFS, an object store's 503, a reset
    connection). A missing, forbidden or special file, a timed-out read, or an HTTP 4xx does not get better."""
    if isinstance(exc, FileNotFoundError | PermissionError | NotARegularFile | ReadTimeout):
        return False
    status = getattr(exc, "status", None)  # aiohttp.ClientResponseError
    if isinstance(status, int):
        return status >= 500 or status == 429
    if not isinstance(exc, OSError):
        return True  # aiohttp's connection errors
    return remote or exc.errno in TRANSIENT_ERRNOS


def bounded(fn: Callable[[], Any], timeout: float | None) -> Any:
    """``fn()``, abandoned (:class:`ReadTimeout`, naming ``data.reading.read_timeout``) if it takes over ``timeout`` seconds."""
    return fn() if timeout is None else _helper.run(fn, timeout)


class _Helper:
    """One daemon thread per process that runs reads for the caller, which waits at most ``timeout``. A hung
    thread is abandoned (it cannot be killed, only left behind) and a fresh one takes the next read; being a
    daemon, it never keeps the process from exiting."""

    def __init__(self) -> None:
        self._pid = -1
        self._requests: queue.SimpleQueue[tuple[Callable[[], Any], queue.SimpleQueue]] | None = None

    def run(self, fn: Callable[[], Any], timeout: float) -> Any:
        if self._requests is None or self._pid != os.getpid():  # new, abandoned, or inherited through fork
            self._start()
        assert self._requests is not None
        results: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        self._requests.put((fn, results))
        try:
            ok, value = results.get(timeout=timeout)
        except queue.Empty:
            self._requests = None  # the thread is stuck in this read; the next read gets a new one
            raise ReadTimeout(
                f"the read took longer than data.reading.read_timeout={timeout:g} s (a stuck mount?) and was abandoned"
            ) from None
        if not ok:
            raise value
        return value

    def _start(self) -> None:
        requests: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=_serve, args=(requests,), daemon=True, name="lit-infer-read").start()
        if self._pid != os.getpid():
            atexit.register(self.stop)
        self._requests, self._pid = requests, os.getpid()

    def stop(self) -> None:
        """At exit: let an idle helper thread end, so no thread of ours is alive while the interpreter shuts down."""
        if self._requests is not None and self._pid == os.getpid():
            self._requests.put(None)
            self._requests = None


def _serve(requests: queue.SimpleQueue) -> None:
    while True:
        request = requests.get()
        if request is None:
            return
        fn, results = request
        try:
            results.put((True, fn()))
        except BaseException as exc:  # handed to the caller, which raises it as the item's error
            results.put((False, exc))


_helper = _Helper()


def read_image_file(
    path: str,
    retries: int = 2,
    backoff_s: float = 0.05,
    timeout: float | None = None,
    storage_options: dict[str, Any] | None = None,
) -> bytes:
    """The bytes of one image file or object: regular files only, transient errors retried, the whole read bounded."""
    if timeout is None:
        return read_with_retries(path, retries, backoff_s, storage_options)
    return _helper.run(lambda: read_with_retries(path, retries, backoff_s, storage_options), timeout)
