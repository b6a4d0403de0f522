"""Your own code: the modules a config names, found in the working directory, and the folders of ``PYTHONPATH``.

The working directory is *not* put on the import path: a stray ``mpi4py.py``, ``torch_xla.py`` or ``tabulate.py``
there would run the moment a library tries an optional import. Only a top-level module that the config names
(``class_path: mymodels.Net``, ``model.factory: mymodels.build``) or that ``LIT_INFER_ALLOW_IMPORTS`` lists is looked
up there, after the installed packages, and the modules that such a module itself imports from that folder (its
helpers). The import policy (:mod:`lit_infer.security`) allows what this module finds without asking, since the
user's folder, not the config, holds it."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import sys
from collections.abc import Iterable
from typing import Any

_DOTTED = re.compile(r"^([A-Za-z_]\w*)(\.[A-Za-z_]\w*)+$")


def _search_folders(cwd: str) -> list[str]:
    """Where the user's own modules come from: the working directory and the folders of ``PYTHONPATH``."""
    folders = [cwd, *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    out = []
    for folder in folders:
        if folder and "site-packages" not in folder and "dist-packages" not in folder and os.path.isdir(folder):
            out.append(os.path.realpath(folder))
    return list(dict.fromkeys(out))


class WorkingDirectoryFinder(importlib.abc.MetaPathFinder):
    """Finds, last of all finders, a top-level module in one folder: only one named (:meth:`name`), or one that a
    module this finder found imports (a helper beside the user's module)."""

    def __init__(self, folder: str) -> None:
        self.folder = os.path.realpath(folder)
        self.named: set[str] = set()
        self.found: set[str] = set()

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if path is not None or "." in name or name in sys.stdlib_module_names:
            return None
        if name not in self.named and not self._imported_by_found():
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, [self.folder])
        if spec is not None:
            self.found.add(name)
        return spec

    def _imported_by_found(self) -> bool:
        """Whether the ``import`` being run is in a module this finder found (the importer is the first frame outside
        the import machinery)."""
        frame = sys._getframe(1)
        while frame is not None and (
            frame.f_code.co_filename.startswith("<frozen")
            or frame.f_code.co_filename == __file__
            or frame.f_globals.get("__name__") == "importlib"
        ):
            frame = frame.f_back
        if frame is None:
            return False
        module = str(frame.f_globals.get("__name__", ""))
        return module.split(".")[0] in self.found


_finder: WorkingDirectoryFinder | None = None


def look_in_working_directory(names: Iterable[str] = ()) -> WorkingDirectoryFinder:
    """Install (once) the finder for the working directory, and let it find the top-level modules of ``names``
    (import paths such as ``mymodels.Net``, or module names)."""
    global _finder
    cwd = os.path.realpath(os.getcwd())
    if _finder is None or _finder.folder != cwd:
        if _finder is not None and _finder in sys.meta_path:
            sys.meta_path.remove(_finder)
        _finder = WorkingDirectoryFinder(cwd)
        sys.meta_path.append(_finder)
    name(*names)
    return _finder


def name(*paths: str) -> None:
    """Let the working directory's finder find the top-level module of each import path (the config names it)."""
    if _finder is not None:
        _finder.named |= {p.split(".")[0] for p in paths if p and p.split(".")[0].isidentifier()}


def named_modules(args: Any, path_keys: Iterable[str] = ()) -> list[str]:
    """The import paths a command line names, in its values and in its ``--config`` files: any dotted string (a
    ``class_path``, a ``factory``, a short class name) but the values of the options ``path_keys`` (``weights:
    model.pt`` names a file, not a module)."""
    import yaml

    skip = frozenset(path_keys)
    texts: list[str] = []
    items = [a for a in args if isinstance(a, str)] if isinstance(args, list) else []
    for i, arg in enumerate(items):
        key = items[i - 1] if i and items[i - 1].startswith("-") and "=" not in items[i - 1] else ""
        if key in ("--config", "-c"):
            texts.append(_read(arg))
        elif arg.startswith("--config="):
            texts.append(_read(arg.split("=", 1)[1]))
        elif arg.startswith("--") and "=" in arg:
            key, arg = arg.split("=", 1)
            if key.rsplit(".", 1)[-1] not in skip:
                texts.append(arg)
        elif not arg.startswith("--") and key.rsplit(".", 1)[-1] not in skip:
            # A section given as a file of its own (``--model model.yaml``) names its classes inside.
            texts.append(_read(arg) if arg.endswith((".yaml", ".yml", ".json")) else arg)
    values: list[Any] = []
    for text in texts:
        try:
            values.append(yaml.safe_load(text))
        except yaml.YAMLError:
            values.append(text)
    if not isinstance(args, list):
        values.append(args)
    found = [s.strip() for s in _strings(values, skip) if _DOTTED.match(s.strip())]
    return list(dict.fromkeys(found))


def _read(path: str) -> str:
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as f:
            return f.read(1 << 20)
    except (OSError, UnicodeDecodeError):
        return path  # a YAML string given in place of a file


def _strings(value: Any, skip: frozenset[str]) -> list[str]:
    """Every string in a parsed YAML value (or a jsonargparse Namespace), but under the keys ``skip``."""
    if hasattr(value, "__dict__") and not isinstance(value, type):
        value = vars(value)
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() if str(k) not in skip for s in _strings(v, skip)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v, skip)]
    return []


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
