"""What lit_infer opens because a config says so: which fsspec protocols and storage options, which endpoints, and
which local files to read.

A config file, and every file it points at, may come from someone else (docs/robustness.md). So only the protocols
and options below pass (``PROTOCOLS``, ``OPTIONS``): no chained or caching protocol (``zip::``, ``simplecache::``),
no option that opens a local file (``fo``, ``mode``), no client or session objects. An endpoint in the options
(``client_kwargs.endpoint_url``) would receive requests signed with the user's credentials: the CLI lets one through
only when the environment or the command line names the same endpoint (:func:`check_endpoints`). A file to read
(class names, weights, a list) is a regular file, never a FIFO, a device or ``/proc/self/environ``.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from typing import Any

from lit_infer.errors import ConfigError

SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def is_url(path: str | os.PathLike) -> bool:
    """``s3://bucket/x`` and ``file:///x`` are URLs; ``/x``, ``x`` and a Windows ``C:\\x`` are not."""
    return bool(SCHEME.match(os.fspath(path)))


def protocol(path: str) -> str:
    m = SCHEME.match(path)
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

    ``key`` names the URL (``data.source``), ``options_key`` the options (``data.reading.storage_options``) as typed."""
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
    allowed = {_normal(e) for e in trusted}
    variables = [v for family in ENDPOINT_VARIABLES.values() for v in family]
    allowed |= {_normal(os.environ[v]) for v in variables if os.environ.get(v)}
    for where, endpoint in endpoints(options):
        if _normal(endpoint) not in allowed:
            family = PROTOCOLS.get(protocol(url), "s3")
            named = " or ".join(ENDPOINT_VARIABLES.get(family, ENDPOINT_VARIABLES["s3"]))
            raise ConfigError(
                f"{options_key}.{where}",
                endpoint,
                "an endpoint named only by a config file would receive requests signed with your credentials",
                f"Name it in your environment ({named}) or on the command line, or use anon: true",
            )


def _normal(endpoint: str) -> str:
    return endpoint.strip().rstrip("/").lower()


SPECIAL_FOLDERS = ("/proc", "/sys", "/dev")
"""Folders of the kernel's special files: ``/proc/self/environ`` reads as a regular file, and holds secrets."""

FILE_KINDS = {
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
        kind = FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise ConfigError(key, typed, f"is {kind}, not {what}: not opened", f"Give {what}")
