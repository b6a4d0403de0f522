"""Which import paths a config may name: ``class_path`` values, callables and ``model.factory``.

A config is data, but ``class_path: os.system`` plus ``init_args`` would be a shell command, and naming a module
imports (runs) it. The CLI therefore denies every import path except the packages a prediction config needs, through
jsonargparse's own import-path policy (checked before anything is imported), and checks ``model.factory`` the same
way. Dangerous corners of the allowed packages (``torch.hub``, ``torch.load``...) stay denied.

Your own code is allowed without asking when your environment, not the config, makes it importable: modules in the
folders of ``PYTHONPATH`` and the package of the program that runs the CLI (``python -m mypkg.run``). Allow any
other package with the environment variable, comma-separated::

    LIT_INFER_ALLOW_IMPORTS=mypkg,other_pkg.models lit-infer predict --config my.yaml

or, from a Python entry point of your own, ``allow_imports(["mypkg"])`` before ``LitInferCLI()``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from lit_infer.errors import ConfigError

ENV_VAR = "LIT_INFER_ALLOW_IMPORTS"

ALLOWED = (
    "lit_infer",
    "torch",
    "torchvision",
    "timm",
    "lightning",
    "pytorch_lightning",
    "torchmetrics",
    "datetime.timedelta",  # DDPStrategy(timeout=...)
)
"""Import paths a config may name by default (each with everything under it)."""

DENIED = (
    # Inside allowed packages, but each loads or runs code named by a value: pickles, TorchScript, packages, hubs.
    "torch.hub",
    "torch.load",
    "torch.serialization",
    "torch.jit",
    "torch.package",
    "torch.utils.cpp_extension",
    "torch.utils.data.datapipes",
    "torch.distributed.rpc",
    "torch.multiprocessing",
    "torch.compiler",
    "torch._dynamo",
    "torch.backends",
    "torch.ops",
    "torch.classes",
    "torchvision.io.read_file",
    "torchvision.datasets",
    "torchvision.models.get_weight",  # downloads and unpickles
    "timm.models.load_checkpoint",
    "lightning.pytorch.cli",
    "lightning.fabric.utilities.cloud_io",
    "lit_infer.security",
    "lit_infer.cli",
)
"""Denied even though a parent is allowed: the most specific entry decides."""

# jsonargparse's own denylist (os, subprocess, builtins.eval, pickle, importlib...) applies too; these are its
# core for the check of ``model.factory``, which jsonargparse does not see (it is a plain string).
_BASE_DENIED = (
    "builtins",
    "os",
    "posix",
    "nt",
    "subprocess",
    "sys",
    "shutil",
    "importlib",
    "pickle",
    "marshal",
    "ctypes",
    "multiprocessing",
    "socket",
    "runpy",
    "code",
    "pty",
    "jsonargparse",
)

_extra_allowed: list[str] = []
_enforced = False


def allow_imports(paths: Iterable[str]) -> None:
    """Allow more import paths (your own packages) for configs parsed from now on, in this process."""
    for path in paths:
        path = path.strip()
        if path and path not in _extra_allowed:
            _check_path_syntax(path, ENV_VAR)
            _extra_allowed.append(path)
    if _enforced:
        install()


def allowed_paths() -> list[str]:
    """The defaults, ``LIT_INFER_ALLOW_IMPORTS``, :func:`allow_imports`, and what the user's environment names."""
    from_env = [p.strip() for p in os.environ.get(ENV_VAR, "").split(",") if p.strip()]
    for path in from_env:
        _check_path_syntax(path, ENV_VAR)
    return [*ALLOWED, *from_env, *_extra_allowed, *_users_own_modules()]


def _users_own_modules() -> list[str]:
    """Top-level modules the user, not the config, made importable: those in the folders of ``PYTHONPATH`` (as in
    ``PYTHONPATH=examples lit-infer ...``) and the package of the program running the CLI (``python -m mypkg.run``).
    Standard-library names are never taken from there (a stray ``os.py`` must not unlock ``os``)."""
    names: list[str] = []
    for folder in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        if not folder or "site-packages" in folder or "dist-packages" in folder or not os.path.isdir(folder):
            continue
        for entry in sorted(os.listdir(folder)):
            stem = entry[:-3] if entry.endswith(".py") else entry
            is_package = os.path.isfile(os.path.join(folder, entry, "__init__.py"))
            if (entry.endswith(".py") or is_package) and stem.isidentifier():
                names.append(stem)
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and getattr(spec, "name", None):
        names.append(spec.name.split(".")[0])
    blocked = set(_BASE_DENIED) | set(sys.stdlib_module_names) | {"lit_infer"}
    return [n for n in dict.fromkeys(names) if n not in blocked]


def _check_path_syntax(path: str, key: str) -> None:
    if not all(part.isidentifier() for part in path.split(".")):
        raise ConfigError(key, path, "is not a dotted import path", "List packages such as 'mypkg' or 'mypkg.models'")


def verdicts() -> dict[str, bool]:
    """Entry -> allowed, the most specific entry deciding; ``*`` (everything else) is denied."""
    table: dict[str, bool] = {"*": False}
    table.update(dict.fromkeys(_BASE_DENIED, False))
    table.update(dict.fromkeys(DENIED, False))
    table.update(dict.fromkeys(allowed_paths(), True))
    return table


def denied_by(path: str, table: dict[str, bool] | None = None) -> str | None:
    """The entry that denies ``path`` (``*`` when none allows it), or ``None`` when it is allowed."""
    table = verdicts() if table is None else table
    parts = path.split(".")
    for n in range(len(parts), 0, -1):
        entry = ".".join(parts[:n])
        if entry in table:
            return None if table[entry] else entry
    return "*"


def install() -> None:
    """Make jsonargparse refuse every import path a value names unless :func:`verdicts` allows it."""
    global _enforced
    from jsonargparse import set_parsing_settings

    allowed = [p for p in allowed_paths() if p != "jsonargparse" and not p.startswith("jsonargparse.")]
    set_parsing_settings(import_path_denylist=["*", *_BASE_DENIED, *DENIED], import_path_allowlist=allowed)
    _enforced = True


@contextlib.contextmanager
def enforced() -> Iterator[None]:
    """The policy installed for the duration of a block (a CLI run), and the process's settings restored after."""
    global _enforced
    saved = _settings_snapshot()
    was = _enforced
    install()
    try:
        yield
    finally:
        _enforced = was
        _settings_restore(saved)


def _settings_snapshot() -> dict[str, Any]:
    try:  # jsonargparse has no public getter for these; without one the policy simply stays installed
        from jsonargparse._common import parsing_settings
    except ImportError:
        return {}
    return {k: parsing_settings[k] for k in ("import_path_verdicts", "import_paths_enforced") if k in parsing_settings}


def _settings_restore(saved: dict[str, Any]) -> None:
    if saved:
        from jsonargparse._common import parsing_settings

        parsing_settings.update(saved)


def check_import(path: str, key: str) -> None:
    """Refuse ``path`` (before importing anything) when the policy is installed and does not allow it."""
    if not _enforced:
        return  # Python callers choose their own imports; the policy guards configs parsed by the CLI
    entry = denied_by(path)
    if entry is not None:
        raise ConfigError(key, path, _why(entry), _fix(path))


def check_imported(obj: Any, path: str, key: str) -> None:
    """Refuse an object reached through an allowed path but defined in a denied one (``mypkg.os.system``)."""
    if not _enforced:
        return
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if isinstance(module, str) and isinstance(name, str):
        canonical = f"{module}.{name}"
        entry = denied_by(canonical)
        if entry is not None and canonical != path:
            raise ConfigError(key, path, f"is {canonical}, which {_why(entry)}", _fix(canonical))


def _why(entry: str) -> str:
    if entry == "*":
        return "is not in the packages a config may import"
    return f"is denied (the {entry!r} entry of the import policy: it could run code named by the config)"


def _fix(path: str) -> str:
    top = path.split(".")[0]
    return f"If you trust it, allow it: {ENV_VAR}={top} (comma-separated; see docs/robustness.md)"
