"""What a config file may not decide, checked on the parsed config before any class is built.

A config file may come from someone else (docs/robustness.md): it may not send requests signed with the user's
credentials to an endpoint of its choosing, pick a function to run on every batch, or make the root or the home
folder the output folder (where ``writer.overwrite`` would delete).
"""

from __future__ import annotations

import functools
import inspect
import os
from typing import Any

from jsonargparse import Namespace

from lit_infer.cli.messages import typed_key
from lit_infer.data.access import check_endpoints, check_options, check_regular_file, endpoints
from lit_infer.errors import ConfigError

_URL_OF = {"data": ("source", "reading.storage_options"), "writer": ("output_dir", "storage_options")}
"""Per section: the option holding a URL, and the ``storage_options`` that serve it."""


def check_config(config: Namespace, given: dict[str, str] | None) -> None:
    """Every check of this module; ``given``: the command line's values (``None``: all are the user's own)."""
    storage(config, given)
    callables(config)
    output_folder(config)
    source_file(config)


def storage(config: Namespace, given: dict[str, str] | None) -> None:
    """Allowed protocols and options for ``data.source`` and ``writer.output_dir``, and endpoints that the
    environment or the command line names (never a config file alone)."""
    trusted = set()
    for key, value in (given or {}).items():
        if key.rsplit(".", 1)[-1] == "storage_options":
            trusted |= {e for _, e in endpoints(_yaml(value))}
    for section, (url_name, options_name) in _URL_OF.items():
        prefix = f"{section}.init_args." if f"{section}.init_args.{url_name}" in config else f"{section}."
        url, options = config.get(prefix + url_name), config.get(prefix + options_name)
        if not isinstance(url, str):
            continue
        options_key = f"{section}.{options_name}"
        check_options(url, options, f"{section}.{url_name}", options_key)
        if given is not None:
            check_endpoints(url, options, options_key, trusted)


def _yaml(text: str) -> Any:
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    return value if isinstance(value, dict) else {}


def callables(config: Any, key: str = "") -> None:
    """Refuse a function given where a callable is expected (``ThroughputMonitor(batch_size_fn: ...)``): it would run
    on every batch with arguments the config does not choose. Classes go through the import policy instead."""
    if isinstance(config, Namespace):
        for name, value in vars(config).items():
            callables(value, f"{key}.{name}" if key else name)
        return
    if isinstance(config, dict):
        for name, value in config.items():
            callables(value, f"{key}.{name}")
        return
    if isinstance(config, (list, tuple)):
        for value in config:
            callables(value, key)
        return
    if _is_function(config):
        path = f"{getattr(config, '__module__', '?')}.{getattr(config, '__qualname__', repr(config))}"
        raise ConfigError(
            typed_key(key),
            path,
            "a config may not choose a function to run (where a callable is expected)",
            "Leave the option out (its default), or set it from Python",
        )


def _is_function(value: Any) -> bool:
    return (
        inspect.isfunction(value)
        or inspect.isbuiltin(value)
        or inspect.ismethod(value)
        or isinstance(value, functools.partial)
    )


def output_folder(config: Namespace) -> None:
    """Refuse the root folder and the home folder itself as ``writer.output_dir`` (or ``writer.work_dir``)."""
    for name in ("output_dir", "work_dir"):
        value = config.get(f"writer.{name}")
        if not isinstance(value, str) or not value or "://" in value:
            continue
        real = os.path.realpath(value)
        home = os.path.realpath(os.path.expanduser("~"))
        if real in (os.path.realpath(os.sep), home):
            what = "the root folder" if real == os.path.realpath(os.sep) else "your home folder itself"
            raise ConfigError(
                f"writer.{name}",
                value,
                f"is {what}: lit_infer writes, and with writer.overwrite removes, its files there",
                f"Give a folder of its own, e.g. {os.path.join(value, 'predictions')!r}",
            )


def source_file(config: Namespace) -> None:
    """A ``data.source`` that names one local file (a list, a table, a shard) must be a regular file: a FIFO would
    hang the run, ``/proc/self/environ`` would be read as a list of paths (``model.weights`` and
    ``model.class_names`` are checked where they are read)."""
    for key in ("data.init_args.source", "data.source"):
        value = config.get(key) if key in config else None
        if isinstance(value, str) and "://" not in value and os.path.lexists(value) and not os.path.isdir(value):
            check_regular_file(value, "data.source", "a list, table or shard of images")
