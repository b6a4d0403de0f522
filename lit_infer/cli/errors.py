"""Any exception of a run, as the at most three lines a user reads, or None for a bug (a traceback is right)."""

from __future__ import annotations

import json
import os
import re
import traceback
from collections import Counter
from typing import Any

import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException

from lit_infer.callbacks.stop import StopRequested
from lit_infer.cli.app import UsageError
from lit_infer.errors import ConfigError, RankZeroRefused, RunError

PREFIX = "lit-infer: error: "


def explain(exc: BaseException, args: list[str]) -> tuple[list[str], int] | None:
    """``(lines, exit status)`` for a user's mistake or a requested stop; ``None`` for anything else."""
    if isinstance(exc, StopRequested):
        return [(PREFIX if exc.before_first_batch else "lit-infer: ") + str(exc)], exc.exit_code
    if isinstance(exc, UsageError):
        command_line = command_line_problem(str(exc), args)
        if command_line is not None:
            return [PREFIX + command_line], 2
        problem = exc.problem
        if problem.key == "--config" and problem.value is None:
            located = yaml_error(config_files(args))
            if located is not None:
                return [PREFIX + located], 2
        return [PREFIX + line for line in problem.lines()][:1] + problem.lines()[1:], 2
    user = _user_error(exc)
    if isinstance(user, RankZeroRefused):
        return [], 2  # rank 0 prints it: one line, not one per rank
    if user is not None:
        if isinstance(user, ConfigError) and (written := path_problem(user)) is not None:
            return [PREFIX + written], 2
        hint = relative_path_hint(user, config_files(args)) if isinstance(user, ConfigError) else None
        text = str(user).strip()
        if text.startswith("Caught ") and "Original Traceback" in text:  # raised in a DataLoader worker: torch's
            text = text.splitlines()[-1].split(": ", 1)[-1]  # wrapper; its last line is our message
        return [PREFIX + text.splitlines()[0], *([hint] if hint else [])], 2
    died = _worker_died(exc)
    if died is not None:
        return [PREFIX + died], 2
    remote = _object_store_error(exc)
    if remote is not None:
        return [PREFIX + remote], 2
    if isinstance(exc, MisconfigurationException):
        # Lightning's own refusal of a trainer setting (its message names the Trainer argument).
        return [PREFIX + "trainer: " + " ".join(str(exc).split())], 2
    return None


def nothing_predicted(summary: dict[str, Any] | None, output_dir: str | None) -> str | None:
    """The one line for a run with no prediction and at least one failure, the errors counted by type; else None."""
    if not summary or summary.get("num_predicted") or not summary.get("num_failed"):
        return None
    types: Counter[str] = Counter()
    files = [v for k, v in summary.get("files", {}).items() if "error" in k]
    for name in files:
        path = os.path.join(output_dir or "", name)
        if "://" in path or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    types[str(json.loads(line).get("error_type", "?"))] += 1
                except (ValueError, AttributeError):
                    types["?"] += 1
    by_type = ", ".join(f"{name}: {count}" for name, count in types.most_common(5))
    more = f", {len(types) - 5} more types" if len(types) > 5 else ""
    where = f"; each one is in {os.path.join(output_dir or '', files[0])}" if files else ""
    return (
        f"{PREFIX}no input was predicted: {summary['num_failed']} failed"
        + (f" ({by_type}{more})" if by_type else "")
        + where
    )


def _worker_died(exc: BaseException) -> str | None:
    """torch's "DataLoader worker (pid 42) is killed by signal: Killed." as one line that says what is kept. A worker
    killed while handing over a batch can surface, before torch notices the death, as the hand-over's own error
    (ConnectionRefusedError in multiprocessing's resource sharer, or EOFError when torch rebuilds the batch's shared
    storage from a socket the dead worker closed): that is the same event."""
    if not isinstance(exc, (RuntimeError, OSError, EOFError)):
        return None
    text = str(exc)
    frames = traceback.extract_tb(exc.__traceback__) if isinstance(exc, (OSError, EOFError)) else []
    handing_over = any(f.filename.endswith(("resource_sharer.py", "reductions.py")) for f in frames)
    if "DataLoader worker" not in text and not handing_over:
        return None
    first = (text.strip().splitlines() or [type(exc).__name__])[0][:200]
    return (
        f"a data loading worker died ({first}); often the out-of-memory killer. Every batch committed so far is kept: "
        "rerun the same command to resume, with fewer --data.num_workers or a smaller --data.batch_size"
    )


_STORE_LIBRARIES = ("/fsspec/", "/s3fs/", "/gcsfs/", "/adlfs/", "/botocore/", "/aiobotocore/")


def _object_store_error(exc: BaseException) -> str | None:
    """An object store's refusal (no such object, access denied, no credentials) as one line naming the option whose
    URL it was: ``data.source`` or ``writer.output_dir``, from where in lit_infer it was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not any(lib in f.filename for f in frames for lib in _STORE_LIBRARIES):
        return None
    ours = [f.filename for f in frames if "/lit_infer/" in f.filename]
    key = "data.source" if any("/lit_infer/data/" in f for f in ours) else "writer.output_dir"
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return (
        f"{key}: the object store answered {type(exc).__name__}: {first}. Check the URL, the bucket and your "
        "credentials (AWS_* in the environment)"
    )


def _user_error(exc: BaseException) -> ConfigError | RunError | None:
    """The ConfigError or RunError behind ``exc``: jsonargparse folds an error raised while building a class
    (``data.source`` missing, ``model.weights`` unreadable) into its own ValueError; ours is its cause."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, (ConfigError, RunError)):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def config_files(args: list[str]) -> list[str]:
    """The ``--config`` files of a command line, in order."""
    files = []
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            files.append(args[i + 1])
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
    return files


def yaml_error(files: list[str]) -> str | None:
    """``--config='my.yaml': line 3, column 13: <what YAML says>`` for the first config file that does not parse."""
    for path in files:
        try:
            with open(os.path.expanduser(path), encoding="utf-8") as f:
                yaml.safe_load(f)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "YAML"
            what = " ".join(str(exc.problem or exc).split())
            return f"--config={path!r}: {where}: {what}. Fix the YAML there (indentation is two spaces per level)"
        except (OSError, yaml.YAMLError):
            continue
    return None


def command_line_problem(message: str, args: list[str]) -> str | None:
    """The mistakes jsonargparse reports without the key: no config at all, or values left over after an option (an
    unquoted glob that the shell expanded into many paths)."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    if first.startswith("the following arguments are required:"):
        missing = first.split(":", 1)[1].strip()
        if not config_files(args):
            return f"no config given. Give one with --config my.yaml (it needs the sections {missing})"
        return f"--config: no {missing} section in {', '.join(map(repr, config_files(args)))}. Add it (see configs/)"
    if not first.startswith("unrecognized arguments:"):
        return None
    stray = first.split(":", 1)[1].split()
    if not stray or stray[0].startswith("-") or stray[0] not in args:
        return None
    at = args.index(stray[0])
    option = next((a for a in reversed(args[:at]) if a.startswith("--")), None)
    if option is None:
        return f"{stray[0]!r} is not an option. Options start with --; see lit-infer predict --help"
    key = option.split("=", 1)[0]
    values = args[args.index(option) + 1 : at + len(stray)] if "=" not in option else stray
    if any("/" in v or os.path.exists(v) for v in values):
        return (
            f"{key}: {len(values)} values ({', '.join(map(repr, values[:2]))}, ...): the shell expanded an unquoted "
            f"glob into many paths. Quote it: {key} {_pattern(values)!r}"
        )
    return f"{key}: takes one value, got {' '.join(values)!r}. Quote a value with spaces; write a list as '[a, b]'"


def _pattern(paths: list[str]) -> str:
    """A glob the shell may have expanded into ``paths``: their folder and, when they share one, their extension."""
    folder = os.path.commonpath(paths) if len({os.path.isabs(p) for p in paths}) == 1 else ""
    folder = os.path.dirname(folder) if folder in paths else folder
    extensions = {os.path.splitext(p)[1] for p in paths}
    return os.path.join(folder, "*" + (extensions.pop() if len(extensions) == 1 else ""))


_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def path_problem(error: ConfigError) -> str | None:
    """A path not found because of how it was written: an unset ``$VAR`` (left as is), or Windows backslashes."""
    value: Any = error.value
    if "no such file" not in str(error) or not isinstance(value, str) or os.path.exists(value):
        return None
    head = f"{error.key}={value!r}"
    unset = [a or b for a, b in _VARIABLE.findall(value) if (a or b) not in os.environ]
    if unset:
        names = ", ".join(f"${name}" for name in unset)
        return f"{head}: {names} is not set in the environment. Set it (export {unset[0]}=...) or write the path out"
    if re.match(r"^[A-Za-z]:[\\/]", value):
        return (
            f"{head}: a Windows path; paths here are this machine's POSIX paths. Give it with '/' as the machine sees "
            "it (under WSL, C:\\data is /mnt/c/data)"
        )
    if "\\" in value:
        fixed = value.rstrip("\\").replace("\\", "/")
        return f"{head}: a backslash is part of a file name here, not a separator. Use '/': {fixed!r}"
    return None


def relative_path_hint(error: ConfigError, files: list[str]) -> str | None:
    """For a relative path not found: where it was looked for, and whether it exists next to a config file."""
    value: Any = error.value
    if (
        "no such file" not in str(error)
        or not isinstance(value, str)
        or not value
        or os.path.isabs(value)
        or "://" in value
        or os.path.exists(value)
    ):
        return None
    hint = f"  (relative to the working directory {os.getcwd()}"
    for config in files:
        folder = os.path.dirname(os.path.abspath(os.path.expanduser(config)))
        candidate = os.path.join(folder, value)
        if folder != os.getcwd() and os.path.exists(candidate):
            return f"{hint}; it exists next to {config}: give {os.path.relpath(candidate)!r} or an absolute path)"
    return hint + ")"
