"""Paths in a config as a shell user means them: ``~`` and ``$VARS`` expand in every path option.

A shell expands them on the command line but never inside a YAML file, where ``output_dir: ~/out`` would otherwise
create a folder named ``~``. Expanded by key name, in the parsed config, before any class is built.
"""

from __future__ import annotations

import os
from typing import Any

PATH_KEYS = frozenset(
    {"source", "weights", "class_names", "output_dir", "work_dir", "cache_dir", "path_root", "torchscript"}
)
"""Option names that hold a file or folder, in any section (``data.source``, ``model.weights``...)."""


def expand(value: str) -> str:
    """``~`` and ``$VAR``/``${VAR}`` expanded; a URL (``s3://``...) only for its variables."""
    value = os.path.expandvars(value)
    return value if "://" in value else os.path.expanduser(value)


def expand_paths(config: Any) -> list[str]:
    """Expand every path option of a parsed config (a jsonargparse Namespace) in place; the keys changed."""
    changed = []
    for key in list(config.keys()):
        value = config[key]
        if key.rsplit(".", 1)[-1] in PATH_KEYS and isinstance(value, str) and value != expand(value):
            config[key] = expand(value)
            changed.append(key)
    return changed
