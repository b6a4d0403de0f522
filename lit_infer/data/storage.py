"""Paths and URLs alike: local files through ``os``, anything with a scheme (``s3://``, ``gs://``, ``https://``,
``file://``) through fsspec, an optional extra (``pip install 'lit_infer[remote]'``).

Credentials and endpoints come from the standard environment of each filesystem (for S3: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``AWS_REGION``, read by botocore itself). ``storage_options`` may
come from a config file written by someone else, so only the protocols and options below pass (``PROTOCOLS``,
``OPTIONS``): no chained or caching protocol (``zip::``, ``simplecache::``), no option that opens a local file
(``fo``, ``mode``), no client or session objects. An endpoint in them (``client_kwargs.endpoint_url``) would receive
requests signed with the user's credentials: the CLI lets one through only when the environment or the command line
names the same endpoint (:func:`check_endpoints`).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from collections.abc import Mapping
from typing import Any

from lit_infer.atomic import atomic_open
from lit_infer.errors import ConfigError

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def is_url(path: str | os.PathLike) -> bool:
    """``s3://bucket/x`` and ``file:///x`` are URLs; ``/x``, ``x`` and a Windows ``C:\\x`` are not."""
    return bool(_SCHEME.match(os.fspath(path)))


def protocol(path: str) -> str:
    m = _SCHEME.match(path)
    return m.group(1).lower() if m else "file"


PROTOCOLS = {
    "file": "file",
    "s3": "s3",
    "s3a": "s3",
    "gs": "gs",
    "gcs": "gs",
    "az": "az",
    "abfs": "az",
    "abfss": "az",
    "http": "http",
    "https": "http",
}
"""The URL schemes lit_infer reads and writes, and the filesystem family each belongs to."""

_ENDPOINT = "endpoint"
_SCALAR = "scalar"
OPTIONS: dict[str, dict[str, Any]] = {
    "file": {},
    "s3": {
        "anon": _SCALAR,
        "key": _SCALAR,
        "secret": _SCALAR,
        "token": _SCALAR,
        "profile": _SCALAR,
        "requester_pays": _SCALAR,
        "version_aware": _SCALAR,
        "default_block_size": _SCALAR,
        "endpoint_url": _ENDPOINT,
        "client_kwargs": {"region_name": _SCALAR, "endpoint_url": _ENDPOINT},
        "config_kwargs": {
            "s3": {"addressing_style": _SCALAR},
            "retries": {"max_attempts": _SCALAR, "mode": _SCALAR},
            "connect_timeout": _SCALAR,
            "read_timeout": _SCALAR,
            "max_pool_connections": _SCALAR,
        },
    },
    "gs": {
        "project": _SCALAR,
        "token": ("anon", "google_default", "cloud"),
        "requester_pays": _SCALAR,
        "endpoint_url": _ENDPOINT,
    },
    "az": {
        "account_name": _SCALAR,
        "anon": _SCALAR,
        "sas_token": _SCALAR,
        "account_key": _SCALAR,
        "account_host": _ENDPOINT,
    },
    "http": {"block_size": _SCALAR, "simple_links": _SCALAR, "same_scheme": _SCALAR},
}
"""The storage options each filesystem family takes, nested as fsspec takes them: a value is a plain scalar, one of
a few strings (``gs`` ``token``: never a credentials file a config names), or an endpoint. Left out on purpose:
``use_ssl`` (plain HTTP to AWS), ``session``/``s3_additional_kwargs`` (objects, headers), ``connection_string`` (it
carries an endpoint: give it as ``AZURE_STORAGE_CONNECTION_STRING``), HTTP ``client_kwargs`` (``trust_env`` sends
``~/.netrc`` passwords) and every option of the chaining and caching filesystems."""

ENDPOINT_VARIABLES = {"s3": ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"), "gs": ("STORAGE_EMULATOR_HOST",)}
"""Where the user's environment names an endpoint, per family (read by botocore and gcsfs themselves)."""


def check_options(url: str, storage_options: Mapping[str, Any] | None, key: str, options_key: str) -> None:
    """Refuse, before anything is opened, a protocol or storage option outside :data:`PROTOCOLS` and :data:`OPTIONS`.

    ``key`` names the URL (``data.source``), ``options_key`` the options (``data.storage_options``) as typed."""
    if "::" in url.split("://", 1)[0]:
        raise ConfigError(
            key,
            url,
            "chained fsspec URLs (zip::, simplecache::, ...) are refused",
            "Give a plain s3://, gs://, az://, https:// URL or a local path",
        )
    if not is_url(url):
        return  # a local path: its options are checked where a URL it lists is opened
    family = PROTOCOLS.get(protocol(url))
    if family is None:
        raise ConfigError(
            key,
            url,
            f"the protocol {protocol(url)!r} is not one lit_infer reads",
            f"Use a local path or one of {', '.join(p + '://' for p in PROTOCOLS)}",
        )
    _check_level(dict(storage_options or {}), OPTIONS[family], options_key, family)


def _check_level(given: Mapping[str, Any], spec: Mapping[str, Any], key: str, family: str) -> None:
    if not isinstance(given, Mapping):
        raise ConfigError(key, given, "must be a mapping of options", "Give {name: value, ...}")
    for name, value in given.items():
        rule = spec.get(name)
        where = f"{key}.{name}"
        if rule is None:
            allowed = ", ".join(spec) or "none"
            raise ConfigError(
                where,
                value,
                f"is not an option lit_infer passes to the {family} filesystem (allowed: {allowed})",
                "Remove it; credentials and endpoints come from your environment (docs/robustness.md)",
            )
        if isinstance(rule, Mapping):
            _check_level(value, rule, where, family)
        elif isinstance(rule, tuple):
            if value not in rule:
                raise ConfigError(where, value, f"must be one of {list(rule)}", "Set it in your environment instead")
        elif value is not None and not isinstance(value, (str, int, float, bool)):
            raise ConfigError(where, value, "must be a plain value", "Give a string, number or boolean")


def endpoints(storage_options: Mapping[str, Any] | None, key: str = "") -> list[tuple[str, str]]:
    """``(key, endpoint)`` for every endpoint among already checked ``storage_options`` (any family)."""
    found: list[tuple[str, str]] = []
    for name, value in dict(storage_options or {}).items():
        where = f"{key}.{name}" if key else name
        if isinstance(value, Mapping):
            found += endpoints(value, where)
        elif name in ("endpoint_url", "account_host") and value:
            found.append((where, str(value)))
    return found


def check_endpoints(url: str, storage_options: Mapping[str, Any] | None, options_key: str, trusted: set[str]) -> None:
    """Refuse an endpoint named only by a config file: it would receive requests signed with the user's credentials.

    ``trusted``: endpoints the command line names; the environment's (``AWS_ENDPOINT_URL``...) are added here.
    Anonymous access (``anon: true``) sends no credentials, so any endpoint may serve it."""
    options = dict(storage_options or {})
    if options.get("anon") is True:
        return
    family = PROTOCOLS.get(protocol(url), "file")
    allowed = {_normal(e) for e in trusted}
    allowed |= {_normal(os.environ[v]) for v in ENDPOINT_VARIABLES.get(family, ()) if os.environ.get(v)}
    for where, endpoint in endpoints(options):
        if _normal(endpoint) not in allowed:
            variables = " or ".join(ENDPOINT_VARIABLES.get(family, ())) or "the command line"
            raise ConfigError(
                f"{options_key}.{where}",
                endpoint,
                "an endpoint named only by a config file would receive requests signed with your credentials",
                f"Name it in your environment ({variables}) or on the command line, or use anon: true",
            )


def _normal(endpoint: str) -> str:
    return endpoint.strip().rstrip("/").lower()


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
    except (ImportError, ValueError) as exc:
        # fsspec names the missing package itself ("Install s3fs to access S3").
        raise ConfigError(key, url, f"no filesystem for {proto!r} ({exc})", "Install the package it names") from None


SPECIAL_FOLDERS = ("/proc", "/sys", "/dev")
"""Folders of the kernel's special files: ``/proc/self/environ`` reads as a regular file, and holds secrets."""

_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a folder",
}


def check_regular_file(path: str | os.PathLike, key: str, what: str = "a file") -> None:
    """Refuse, from its ``stat`` alone (never opened), a local file to read that is not a regular file: a FIFO, a
    device, a socket, a folder, or anything under ``/proc``, ``/sys`` and ``/dev`` (after symlinks)."""
    typed = os.fspath(path)
    real = os.path.realpath(typed)
    special = next((f for f in SPECIAL_FOLDERS if real == f or real.startswith(f + os.sep)), None)
    if special is not None:
        raise ConfigError(key, typed, f"is under {special}, a special file, not {what}: not opened", f"Give {what}")
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        raise ConfigError(key, typed, "no such file", f"Check the path to {what}") from None
    except OSError as exc:
        raise ConfigError(key, typed, f"cannot be read ({exc.strerror})", f"Check the path to {what}") from None
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise ConfigError(key, typed, f"is {kind}, not {what}: not opened", f"Give {what}")


def strip_protocol(url: str) -> str:
    """``s3://bucket/key`` -> ``bucket/key``, the form fsspec's methods take."""
    m = _SCHEME.match(url)
    return url[m.end() :] if m else url


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

    def write_bytes(self, name: str, data: bytes, durable: bool = True) -> None:
        """All or nothing under ``name``: an object-store PUT is atomic; a local file is a temp file renamed."""
        if self.remote:
            self.fs.pipe_file(self.path(name), data)
            return
        final = self.path(name)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        with atomic_open(final, "wb", durable) as f:
            f.write(data)

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
