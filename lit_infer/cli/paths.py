"""What a config may take from the user's environment: paths as a shell user means them, and never a secret.

A config file may come from someone else; the command line and the environment are the user's. So:

- ``~`` expands in every local path option, from a config file as on the command line (a shell never expands it
  inside a YAML file, where ``output_dir: ~/out`` would otherwise create a folder named ``~``);
- ``$VAR`` / ``${VAR}`` expand in a local path typed on the command line (any variable), and in a local path from a
  config file only for the variables that name places and jobs (:data:`PLACE_VARIABLES`) or that the user lists in
  ``LIT_INFER_PATH_VARS``; any other variable that is set is refused there in one line (``${AWS_SECRET_ACCESS_KEY}``
  would end in a folder name, a list's path in ``summary.json`` or an error line);
- nothing expands in a URL (``s3://``, ``https://``...): its path goes to a server. One from a config file that
  holds a set ``$VAR`` is refused; on the command line, the shell has already expanded what the user meant.

Expanded by key name, in the parsed config, before any class is built.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

from lit_infer.cli.messages import typed_key
from lit_infer.errors import ConfigError

PATH_KEYS = frozenset(
    {"source", "weights", "class_names", "output_dir", "work_dir", "cache_dir", "path_root", "torchscript"}
)
"""Option names that hold a file or folder, in any section (``data.source``, ``model.weights``...)."""

PLACE_VARIABLES = frozenset(
    {
        "HOME",
        "USER",
        "LOGNAME",
        "PWD",
        "TMPDIR",
        "SCRATCH",
        "WORK",
        "SLURM_TMPDIR",
        "SLURM_SUBMIT_DIR",
        "SLURM_JOB_ID",
        "SLURM_ARRAY_JOB_ID",
        "SLURM_ARRAY_TASK_ID",
    }
)
"""Variables a config file's local paths may use: they name places and jobs, never secrets."""

ENV_VAR = "LIT_INFER_PATH_VARS"
"""Comma-separated names of more variables a config file's local paths may use (``DATA_ROOT,PROJECT``)."""

_VAR = re.compile(r"\$(\w+|\{([^}]*)\})")


def variables(value: str) -> list[str]:
    """The names of the environment variables ``value`` refers to that are set (``$X``, ``${X}``)."""
    names = [m.group(2) if m.group(2) is not None else m.group(1) for m in _VAR.finditer(value)]
    return [n for n in names if n in os.environ]


def config_variables() -> frozenset[str]:
    listed = {v.strip() for v in os.environ.get(ENV_VAR, "").split(",") if v.strip()}
    return PLACE_VARIABLES | listed


def expand(value: str, from_command_line: bool = True, key: str = "") -> str:
    """``value`` as the user means it: see the module's docstring for what expands where."""
    if "://" in value:  # a URL, chained ones (simplecache::s3://) included
        if not from_command_line and variables(value):
            raise ConfigError(
                key,
                value,
                f"environment variables (${variables(value)[0]}) do not expand in a URL from a config file: its path "
                "goes to a server",
                "Write the URL out in the config, or give it on the command line",
            )
        return value
    if not from_command_line:
        refused = [n for n in variables(value) if n not in config_variables()]
        if refused:
            raise ConfigError(
                key,
                value,
                f"${refused[0]} does not expand in a config file (only {', '.join(sorted(PLACE_VARIABLES))} and the "
                f"names in {ENV_VAR})",
                f"Give the path on the command line, write it out, or allow the variable: {ENV_VAR}={refused[0]}",
            )
    return os.path.expanduser(os.path.expandvars(value))


def command_line_values(args: Iterable[Any]) -> dict[str, str]:
    """``--section.key value`` and ``--section.key=value`` pairs of a command line (``--config`` files left out),
    keyed as :func:`typed_key` writes them: what the user, not a config file, gave."""
    args = [a for a in args if isinstance(a, str)]
    values: dict[str, str] = {}
    for i, arg in enumerate(args):
        if not arg.startswith("--") or arg.split("=", 1)[0] in ("--config", "-c"):
            continue
        if "=" in arg:
            name, value = arg[2:].split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            name, value = arg[2:], args[i + 1]
        else:
            continue
        values[typed_key(name)] = value
    return values


def expand_paths(config: Any, given: dict[str, str] | None = None) -> list[str]:
    """Expand every path option of a parsed config (a jsonargparse Namespace) in place; the keys changed.

    ``given``: the command line's values (:func:`command_line_values`); ``None``: every value is the user's own (a
    Python caller's)."""
    changed = []
    for key in list(config.keys()):
        value = config[key]
        if key.rsplit(".", 1)[-1] not in PATH_KEYS or not isinstance(value, str):
            continue
        typed = typed_key(key)
        from_command_line = given is None or given.get(typed) == value
        expanded = expand(value, from_command_line, typed)
        if expanded != value:
            config[key] = expanded
            changed.append(key)
    return changed
