"""Paths and URLs alike: local files through ``os``, anything with a scheme (``s3://``, ``gs://``, ``https://``,
``file://``) through fsspec, an optional extra (``pip install 'lit_infer[remote]'``).

Credentials and endpoints come from the standard environment of each filesystem (for S3: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``AWS_REGION``, read by botocore itself). ``storage_options`` pass
only through the allow-list of :mod:`lit_infer.data.access`.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Mapping
from typing import Any

from lit_infer.atomic import atomic_open
from lit_infer.data.access import PROTOCOLS, SCHEME, check_options, is_url, protocol
from lit_infer.errors import ConfigError

EXTRAS = {"s3": ("s3fs", "remote"), "http": ("aiohttp", "remote"), "gs": ("gcsfs", "gcs"), "az": ("adlfs", "azure")}
"""The package each filesystem family needs, and the extra of lit_infer that brings it (pyproject.toml): a missing
one is refused in one line naming the extra. gs:// and az:// go through the same calls as s3:// (list, open, cat)."""


def filesystem(url: str, storage_options: Mapping[str, Any] | None = None, key: str = "data.source") -> Any:
    """The fsspec filesystem for ``url`` (its protocol), or a one-line error naming ``key`` and the extra to install.

    Protocols and options outside the allow-list are refused first (:func:`check_options`), whoever calls."""
    options_key = f"{key.rsplit('.', 1)[0]}.storage_options" if "." in key else "--storage_options"
    check_options(url, storage_options, key, options_key)
    try:
        import fsspec
    except ImportError:
        raise ConfigError(key, url, "URLs need fsspec", "pip install 'lit_infer[remote]' (fsspec, s3fs)") from None
    proto = protocol(url)
    try:
        return fsspec.filesystem(proto, **dict(storage_options or {}))
    except ImportError:
        package, extra = EXTRAS.get(PROTOCOLS.get(proto, ""), (proto, "remote"))
        raise ConfigError(
            key, url, f"{proto}:// needs {package}, which is not installed", f"pip install 'lit_infer[{extra}]'"
        ) from None
    except ValueError as exc:
        # fsspec names the missing package itself ("Install s3fs to access S3").
        raise ConfigError(key, url, f"no filesystem for {proto!r} ({exc})", "Install the package it names") from None


def strip_protocol(url: str) -> str:
    """``s3://bucket/key`` -> ``bucket/key``, the form fsspec's methods take."""
    m = SCHEME.match(url)
    return url[m.end() :] if m else url


def fs_path(url: str) -> str:
    """The path fsspec's methods take for ``url``: without its scheme, except over HTTP, whose filesystem takes
    (and needs) the whole URL."""
    return url if protocol(url) in ("http", "https") else strip_protocol(url)


def local_path(path: str) -> str:
    """``file:///x`` -> ``/x``; a plain path as it is."""
    return path[len("file://") :] if path.startswith("file://") else path


def join(base: str, *names: str) -> str:
    """Join with ``/`` for URLs (object stores have no ``os.sep``), with ``os.path.join`` for local paths."""
    if is_url(base):
        return "/".join([base.rstrip("/"), *names])
    return os.path.join(base, *names)


class Storage:
    """A folder, local or remote, with the few operations the writer and the sources need. Picklable (workers).

    Example::

        out = Storage("s3://bucket/run1", {"anon": False})
        out.write_bytes("part-00000.csv", data)   # atomic: a reader sees the whole object or none
    """

    def __init__(
        self, root: str | os.PathLike, storage_options: Mapping[str, Any] | None = None, key: str = ""
    ) -> None:
        self.root = os.fspath(root)
        self.remote = is_url(self.root) and protocol(self.root) != "file"
        self.storage_options = dict(storage_options or {})
        self.key = key
        self._fs: Any = None

    @property
    def fs(self) -> Any:
        if self._fs is None:
            self._fs = filesystem(self.root, self.storage_options, self.key)
        return self._fs

    def path(self, name: str = "") -> str:
        """The full path of ``name`` inside this folder (a URL without its scheme for remote folders)."""
        if not self.remote:
            local = self.root[len("file://") :] if self.root.startswith("file://") else self.root
            return os.path.join(local, name) if name else local
        base = strip_protocol(self.root).rstrip("/")
        return f"{base}/{name}" if name else base

    def url(self, name: str) -> str:
        return join(self.root, name) if self.remote else self.path(name)

    def exists(self, name: str) -> bool:
        return self.fs.exists(self.path(name)) if self.remote else os.path.exists(self.path(name))

    def listdir(self, name: str = "") -> list[str]:
        """Names (not paths) in the folder ``name``; empty if it does not exist."""
        if not self.remote:
            folder = self.path(name)
            return sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        try:
            entries = self.fs.ls(self.path(name), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def read_bytes(self, name: str) -> bytes:
        if self.remote:
            return self.fs.cat_file(self.path(name))
        with open(self.path(name), "rb") as f:
            return f.read()

    def read_many(self, names: list[str]) -> dict[str, bytes]:
        """Several small objects at once: s3fs fetches them concurrently, where one at a time costs a round trip each."""
        if not names:
            return {}
        if not self.remote:
            return {n: self.read_bytes(n) for n in names}
        got = self.fs.cat([self.path(n) for n in names])
        return {n: got[self.path(n)] for n in names}

    def write_bytes(self, name: str, data: bytes, durable: bool = True, exclusive: bool = False) -> bool:
        """All or nothing under ``name``: an object-store PUT is atomic; a local file is a temp file renamed.

        ``exclusive``: only if ``name`` does not exist yet, atomically (a hard link; on S3 a conditional PUT,
        ``If-None-Match``). Returns whether these bytes were written (``False``: another writer's came first)."""
        if self.remote:
            if not exclusive:
                self.fs.pipe_file(self.path(name), data)
                return True
            try:
                self.fs.pipe_file(self.path(name), data, mode="create")
            except FileExistsError:
                return False
            return True
        final = self.path(name)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        try:
            with atomic_open(final, "wb", durable, exclusive=exclusive) as f:
                f.write(data)
                ours = os.fstat(f.fileno())
        except OSError as exc:
            if not exclusive or exc.errno not in _NO_LINKS:
                raise
            # A filesystem without hard links (some FUSE mounts of object stores): checked, then renamed into place.
            if os.path.exists(final):
                return False
            with atomic_open(final, "wb", durable) as f:
                f.write(data)
            return True
        # Exclusive: the name is ours if it links our file (the one there first was alive alongside it: never equal).
        return not exclusive or _same_file(os.stat(final), ours)

    def put_file(self, local: str, name: str) -> None:
        """Upload a finished local file (a part written to a temp file first)."""
        if self.remote:
            self.fs.put_file(local, self.path(name))  # one PUT (or a multipart upload completed at once): atomic
            return
        final = self.path(name)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        try:
            os.replace(local, final)
        except OSError:  # another filesystem: copy beside the final name first, so the rename stays atomic
            with atomic_open(final, "wb") as out, open(local, "rb") as src:
                shutil.copyfileobj(src, out)
            os.remove(local)

    def remove(self, name: str) -> None:
        if self.remote:
            if self.fs.exists(self.path(name)):
                self.fs.rm(self.path(name), recursive=True)
        elif os.path.isdir(self.path(name)):
            shutil.rmtree(self.path(name), ignore_errors=True)
        elif os.path.exists(self.path(name)):
            os.remove(self.path(name))

    def makedirs(self, name: str = "") -> None:
        if not self.remote:
            os.makedirs(self.path(name), exist_ok=True)
        # Object stores have no folders: a key's prefix exists once an object is written under it.

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fs": None}


_NO_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS)


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def open_binary(location: str, storage_options: dict[str, Any] | None = None) -> Any:
    if is_url(location) and protocol(location) != "file":
        fs = filesystem(location, storage_options)
        return fs.open(fs_path(location), "rb", block_size=8 << 20)
    return open(local_path(location), "rb")
