"""Which import paths a config may name: ``class_path`` values, callables and ``model.factory``.

A config is data, but ``class_path: os.system`` plus ``init_args`` would be a shell command, and naming a module
imports (runs) it. The CLI therefore denies every import path except the namespaces that build networks and the
Lightning pieces a trainer takes, through jsonargparse's own import-path policy (checked before anything is imported,
and again on where the object is really defined), and checks ``model.factory`` the same way. Process launchers, file
writers, loaders and hubs inside allowed packages stay denied (``DENIED``), and a value typed ``Any`` (such as
``model.factory_kwargs``) is never built from a nested ``class_path``.

Your own code is allowed without asking: the modules and packages of the working directory that the config names
(searched after the installed packages; nothing else there is importable, :mod:`lit_infer.own_code`), those in the
folders of ``PYTHONPATH``, and the package of the program that runs the CLI (``python -m mypkg.run``). Allow a
package installed elsewhere with the environment variable, comma-separated::

    LIT_INFER_ALLOW_IMPORTS=mypkg,other_pkg.models lit-infer predict --config my.yaml

or, from a Python entry point of your own, ``allow_imports(["mypkg"])`` before ``LitInferCLI()``. Neither can unlock
a denied entry (``os``, ``torch.hub``, ...).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from lit_infer import own_code
from lit_infer.errors import ConfigError

ENV_VAR = "LIT_INFER_ALLOW_IMPORTS"

_LIGHTNING = ("strategies", "callbacks", "accelerators", "plugins")
ALLOWED = (
    "lit_infer",
    "torch.nn",
    "torchvision.models",
    "timm.create_model",
    "timm.models",
    "timm.layers",
    *(f"{pkg}.{sub}" for pkg in ("lightning.pytorch", "pytorch_lightning") for sub in _LIGHTNING),
    "lightning.fabric.plugins.environments",  # DDPStrategy(cluster_environment=...)
    "lightning.fabric.plugins.precision",
    "datetime.timedelta",  # DDPStrategy(timeout=...)
)
"""Import paths a config may name by default (each with everything under it): what builds a network, and the
Lightning pieces a trainer takes (strategies, callbacks, accelerators, plugins)."""

DENIED = (
    # Inside allowed namespaces, but each runs, loads, downloads or writes what a value names.
    "torch.nn.parallel",  # process-group wrappers; a prediction config chooses a strategy instead
    "timm.models._builder",  # load_pretrained: downloads and loads a file named by a value
    "timm.models._helpers",  # load_checkpoint, resume_checkpoint
    "timm.models._hub",  # push_to_hf_hub, save_for_hf: uploads and writes
    "timm.models._registry",  # register_model: changes what a model name builds
    "timm.models.load_checkpoint",
    "timm.models.load_pretrained",
    "timm.models.load_state_dict",
    "timm.models.resume_checkpoint",
    "timm.models.push_to_hf_hub",
    "timm.models.save_for_hf",
    "timm.models.register_model",
    "lightning.pytorch.callbacks.LambdaCallback",  # exists to run callables named by the config
    "lightning.pytorch.callbacks.lambda_function",
    "pytorch_lightning.callbacks.LambdaCallback",
    "pytorch_lightning.callbacks.lambda_function",
    "lightning.pytorch.plugins.io",  # checkpoint writers
    "pytorch_lightning.plugins.io",
    "lit_infer.security",
    "lit_infer.cli",
    "lit_infer.__main__",
)
"""Denied even though a parent is allowed: the most specific entry decides."""

# Never unlocked by the user's environment either: jsonargparse's own denylist (os, subprocess, builtins.eval,
# pickle, importlib...) applies too; these are its core, for the check of ``model.factory`` (a plain string that
# jsonargparse does not see), plus the namespaces whose rest is not allowed.
_ALWAYS_DENIED = (
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
    "torch",
    "torchvision",
    "timm",
    "lightning",
    "pytorch_lightning",
    "lightning_fabric",
    "lightning_utilities",
    "torchmetrics",
    "safetensors",
)

_extra_allowed: list[str] = []
_enforced = False
_cwd = os.getcwd()  # the working directory when the policy was installed: jsonargparse enters a config's folder


def allow_imports(paths: Iterable[str]) -> None:
    """Allow more import paths (your own packages) for configs parsed from now on, in this process."""
    for path in paths:
        path = path.strip()
        if path and path not in _extra_allowed:
            _check_user_entry(path, "allow_imports")
            _extra_allowed.append(path)
            own_code.name(path)
    if _enforced:
        install()


def allowed_paths() -> list[str]:
    """The defaults, ``LIT_INFER_ALLOW_IMPORTS``, :func:`allow_imports`, and the user's own modules."""
    return [*ALLOWED, *users_entries()]


def users_entries() -> list[str]:
    """What the user's environment allows: ``LIT_INFER_ALLOW_IMPORTS``, :func:`allow_imports`, own modules."""
    from_env = [p.strip() for p in os.environ.get(ENV_VAR, "").split(",") if p.strip()]
    for path in from_env:
        _check_user_entry(path, ENV_VAR)
    blocked = set(_ALWAYS_DENIED) | {"lit_infer"}
    return [*from_env, *_extra_allowed, *(n for n in own_code.users_own_modules(_cwd) if n not in blocked)]


def is_users_own(module: str) -> bool:
    """Whether ``module`` is the user's own code (under an entry of :func:`users_entries`)."""
    return any(module == e or module.startswith(e + ".") for e in users_entries())


def is_enforced() -> bool:
    """Whether the policy guards the config being parsed now (inside the CLI), not a Python caller's own code."""
    return _enforced


def _base_table() -> dict[str, bool]:
    table: dict[str, bool] = {"*": False}
    table.update(dict.fromkeys(_ALWAYS_DENIED, False))
    table.update(dict.fromkeys(ALLOWED, True))
    table.update(dict.fromkeys(DENIED, False))
    return table


def _check_user_entry(path: str, key: str) -> None:
    if not all(part.isidentifier() for part in path.split(".")):
        raise ConfigError(key, path, "is not a dotted import path", "List packages such as 'mypkg' or 'mypkg.models'")
    entry = denied_by(path, _base_table())
    top = path.split(".")[0]
    if (entry not in (None, "*")) or top in sys.stdlib_module_names:
        raise ConfigError(
            key,
            path,
            f"is always denied (the {entry or top!r} entry of the import policy: it could run code named by a config)",
            "Remove it; a config may name only code that builds networks (see docs/robustness.md)",
        )


def verdicts() -> dict[str, bool]:
    """Entry -> allowed, the most specific entry deciding; ``*`` (everything else) is denied."""
    table = _base_table()
    table.update(dict.fromkeys(allowed_paths(), True))
    table.update(dict.fromkeys(DENIED, False))  # the user's entries never reopen a denied corner
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
    """Make jsonargparse refuse every import path a value names unless :func:`verdicts` allows it, and keep a nested
    ``class_path`` inside a value typed ``Any`` (``model.factory_kwargs``) as plain data instead of building it."""
    global _enforced, _cwd
    from jsonargparse import set_parsing_settings

    _cwd = os.getcwd()
    table = verdicts()
    denied = [e for e, ok in table.items() if not ok]
    allowed = [e for e, ok in table.items() if ok and e.split(".")[0] != "jsonargparse"]
    set_parsing_settings(
        import_path_denylist=denied, import_path_allowlist=allowed, instantiate_subclass_spec_in_any=False
    )
    _enforced = True


@contextlib.contextmanager
def enforced(named: Iterable[str] = ()) -> Iterator[None]:
    """The policy installed for the duration of a block (a CLI run), and the process's settings restored after.
    ``named``: the import paths the config names, the only ones looked up in the working directory (own_code)."""
    global _enforced
    settings = _jsonargparse_settings()
    saved = {k: settings[k] for k in _SETTINGS}
    was = _enforced
    from_env = [p.strip() for p in os.environ.get(ENV_VAR, "").split(",") if p.strip()]
    own_code.look_in_working_directory([*named, *from_env, *_extra_allowed])
    install()
    try:
        yield
    finally:
        _enforced = was
        settings.update(saved)


_SETTINGS = ("import_path_verdicts", "import_paths_enforced", "instantiate_subclass_spec_in_any")


def _jsonargparse_settings() -> dict[str, Any]:
    """jsonargparse's process-wide settings. It has a public setter (``set_parsing_settings``, which only adds import
    path entries) but no getter, so restoring them after a CLI run reads this private dict: the one place that does,
    and tests/robustness/test_import_policy.py fails loudly when an upgrade moves it."""
    from jsonargparse._common import parsing_settings

    missing = [k for k in _SETTINGS if k not in parsing_settings]
    assert not missing, f"jsonargparse moved its parsing settings {missing}; update lit_infer.security"
    return parsing_settings


def check_import(path: str, key: str) -> None:
    """Refuse ``path`` (before importing anything) when the policy is installed and does not allow it."""
    if not _enforced:
        return  # Python callers choose their own imports; the policy guards configs parsed by the CLI
    own_code.name(path)  # the config names it (model.factory): the working directory may hold it
    entry = denied_by(path)
    if entry is not None:
        raise refusal(key, path, entry)


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
            raise refusal(key, path, entry, canonical)


def refusal(key: str, path: str, entry: str, canonical: str | None = None) -> ConfigError:
    """The one-line refusal, with the fix that works for this path (or none, for code a config may never name)."""
    where = f"is {canonical}, which " if canonical else ""
    top = (canonical or path).split(".")[0]
    if entry != "*" or top in sys.stdlib_module_names:
        return ConfigError(
            key,
            path,
            f"{where}is denied: a config may name only code that builds networks (torch.nn, torchvision.models, "
            "timm models, lit_infer, your own modules), not code that runs commands, loads or writes files",
            "Choose a network class or factory; see docs/robustness.md",
        )
    problem = f"{where}is not in the packages a config may import"
    try:
        found = importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        found = False
    if found:
        fix = f"If it is your own code, allow it: {ENV_VAR}={top} lit-infer predict ..."
    else:
        fix = (
            f"No module {top!r} is found from {_cwd!r}: run lit-infer in the folder that holds {top}.py "
            f"(or the {top}/ package), or give that folder in PYTHONPATH"
        )
    return ConfigError(key, path, problem, fix)


_DENIED_RE = re.compile(r"Importing '([\w.]+)' is not allowed, denied by the '([\w.*]+)' entry")
_KEY_RE = re.compile(r'Parser key "([^"]+)"')


def explain_denied(message: str) -> ConfigError | None:
    """jsonargparse's many-line refusal of an import path, as our one line naming the key (``model.net``)."""
    match = _DENIED_RE.search(message)
    if match is None:
        return None
    keys = [k for k in _KEY_RE.findall(message[: match.start()]) if k != "init_args"]
    return refusal(".".join(keys) or "class_path", match.group(1), match.group(2))
