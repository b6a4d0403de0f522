"""Your own code, found as ``python -m`` finds it: modules and packages in the working directory and in the folders
of ``PYTHONPATH``. The import policy (:mod:`lit_infer.security`) allows what this module finds without asking, since
the user's environment, not the config, put it there."""

from __future__ import annotations

import importlib.util
import os
import sys


def _search_folders(cwd: str) -> list[str]:
    """Where the user's own modules come from: the working directory and the folders of ``PYTHONPATH``."""
    folders = [cwd, *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    out = []
    for folder in folders:
        if folder and "site-packages" not in folder and "dist-packages" not in folder and os.path.isdir(folder):
            out.append(os.path.realpath(folder))
    return list(dict.fromkeys(out))


def add_working_directory() -> None:
    """Make the working directory importable as ``python -m`` does, but searched last: a stray ``torch.py`` there
    cannot replace an installed package, and modules found there are the user's own (:func:`users_own_modules`)."""
    cwd = os.getcwd()
    if not any(os.path.realpath(p or ".") == os.path.realpath(cwd) for p in sys.path):
        sys.path.append(cwd)


def users_own_modules(cwd: str | None = None) -> list[str]:
    """Top-level modules the user, not the config, made importable: ``*.py`` files and packages (folders, with
    ``__init__.py`` or without) in the working directory and the ``PYTHONPATH`` folders, that Python really imports from there
    (an installed package of the same name wins, as it does on import), and the package of the program running the
    CLI. Standard-library names are never unlocked this way. ``cwd``: the working directory the run started in
    (jsonargparse enters a config file's folder while it parses it; that folder is not the user's choice of code)."""
    names: list[str] = []
    for folder in _search_folders(cwd or os.getcwd()):
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.name.endswith(".py"):
                stem = entry.name[:-3]
            elif entry.is_dir():
                stem = entry.name
            else:
                continue
            if stem.isidentifier() and _imported_from(stem, entry.path):
                names.append(stem)
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and getattr(spec, "name", None):
        names.append(spec.name.split(".")[0])
    # A stray os.py never unlocks os; the policy's own namespaces are filtered by lit_infer.security.
    return [n for n in dict.fromkeys(names) if n not in sys.stdlib_module_names]


def _imported_from(name: str, path: str) -> bool:
    """Whether ``import name`` would load the file or folder ``path`` (finding a top-level module runs none of its
    code). A folder without ``__init__.py`` is a namespace package, as for ``python -m``: naming it imports only the
    ``.py`` files the user put there."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    real = os.path.realpath(path)
    if spec.origin and os.path.realpath(spec.origin) in (real, os.path.join(real, "__init__.py")):
        return True
    locations = spec.submodule_search_locations or []
    return spec.origin in (None, "namespace") and any(os.path.realpath(p) == real for p in locations)
