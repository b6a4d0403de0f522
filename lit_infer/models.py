"""Build the user's network and load its weights, safely.

Weights load with ``torch.load(weights_only=True)`` and nothing else: a file that needs full unpickling is refused,
never "retried unsafely". TorchScript archives run code from the file and load only when trusted explicitly.
"""

from __future__ import annotations

import importlib
import os
import zipfile
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from lit_infer.constructors import check_factory, check_plain_data
from lit_infer.data.access import check_regular_file
from lit_infer.errors import ConfigError
from lit_infer.security import check_import, check_imported

# Prefixes that wrappers add to parameter names: DDP/DataParallel, torch.compile, Lightning modules' attributes.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.", "net.", "network.", "backbone.", "encoder.")
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "module", "weights")


def import_object(path: str, key: str) -> Any:
    """Import ``package.module.name``; a failure names ``key`` and the path as the user typed it."""
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ConfigError(key, path, "not an import path", "Give a dotted path such as 'torchvision.models.resnet50'")
    check_import(path, key)  # before importing: importing a module runs it
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            key, path, f"cannot import {module_name!r} ({exc})", "Install the package or fix the path"
        ) from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise ConfigError(key, path, f"{module_name!r} has no attribute {attr!r}", "Check the spelling") from None
    check_imported(obj, path, key)
    return obj


def build_net(net: nn.Module | None, factory: str | None, factory_kwargs: Mapping[str, Any] | None) -> nn.Module:
    """The network, given as a module (``class_path``/``init_args``) or as a factory's import path plus kwargs."""
    check_plain_data(factory_kwargs, "model.factory_kwargs")
    if (net is None) == (factory is None):
        raise ConfigError(
            "model.net / model.factory",
            {"net": type(net).__name__ if net is not None else None, "factory": factory},
            "give exactly one",
            "Set model.net (class_path + init_args) or model.factory (e.g. 'timm.create_model') with model.factory_kwargs",
        )
    if net is not None:
        if not isinstance(net, nn.Module):
            raise ConfigError(
                "model.net", type(net).__name__, "is not a torch.nn.Module", "Give an nn.Module class_path"
            )
        return net
    assert factory is not None
    fn = import_object(factory, "model.factory")
    if not callable(fn):
        raise ConfigError(
            "model.factory", factory, "is not callable", "Give a function or class that returns an nn.Module"
        )
    check_factory(fn, factory)  # a factory is called with the config's arguments: it must build networks
    built = fn(**dict(factory_kwargs or {}))
    if not isinstance(built, nn.Module):
        raise ConfigError(
            "model.factory",
            factory,
            f"returned {type(built).__name__}, not an nn.Module",
            "Give a factory that builds the network",
        )
    return built


def load_torchscript(path: str, trust: bool) -> nn.Module:
    """A TorchScript archive as the whole network: only with ``trust``, since loading it runs code from the file."""
    if not trust:
        raise ConfigError(
            "model.torchscript",
            path,
            "a TorchScript archive carries code that runs when it loads",
            "Set model.trust_torchscript=true if you trust its source, or export a state_dict and use model.weights",
        )
    check_regular_file(path, "model.torchscript", "a TorchScript archive")
    if not is_torchscript(path):
        raise ConfigError(
            "model.torchscript",
            path,
            "is not a TorchScript archive",
            "Give a torch.jit.save file, or use model.weights",
        )
    return torch.jit.load(path, map_location="cpu")


def resolve_weights(path: str, allow_remote: bool = False) -> str:
    """A local path for ``path``: a URL is downloaded once into torch's hub cache, and only when allowed."""
    if "://" not in path:
        return path
    if not allow_remote:
        raise ConfigError(
            "model.weights",
            path,
            "remote weights are refused by default",
            "Download the file and give its local path, or set model.allow_remote_weights=true",
        )
    if not path.startswith(("https://", "http://")):
        raise ConfigError(
            "model.weights", path, "only http(s) URLs can be fetched", "Give a local path or an https URL"
        )
    # The same cache as torch.hub's pretrained weights; the file is still read with weights_only=True below.
    local = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(path.split("?")[0]) or "weights.pt")
    if not os.path.isfile(local):
        os.makedirs(os.path.dirname(local), exist_ok=True)
        try:
            torch.hub.download_url_to_file(path, local, progress=False)
        except Exception as exc:
            raise ConfigError(
                "model.weights", path, f"download failed ({type(exc).__name__}: {exc})", "Check the URL or download it"
            ) from None
    return local


def read_state_dict(path: str, allow_remote: bool = False) -> dict[str, torch.Tensor]:
    """A flat state_dict from a ``.pt``/``.pth``/``.bin`` file, a Lightning ``.ckpt`` or a ``.safetensors`` file."""
    path = resolve_weights(path, allow_remote)
    check_regular_file(path, "model.weights", "a weights file")
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ConfigError(
                "model.weights",
                path,
                "reading .safetensors needs the safetensors package",
                "pip install 'lit_infer[safetensors]'",
            ) from None
        try:
            return load_file(path)
        except Exception as exc:  # SafetensorError for a lying or truncated header, OSError for an unreadable file
            raise ConfigError(
                "model.weights",
                path,
                f"is not a readable .safetensors file ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]})",
                "Check the file (a complete download?), or re-save it with safetensors.torch.save_file",
            ) from None
    if is_torchscript(path):
        raise ConfigError(
            "model.weights",
            path,
            "is a TorchScript archive, which runs code from the file",
            "Give it as model.torchscript (not model.weights) with model.trust_torchscript=true if you trust its source",
        )
    with open(path, "rb") as f:
        head = f.read(8)
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save writes a zip, or (legacy) a pickle
        raise ConfigError(
            "model.weights",
            path,
            f"is not a PyTorch file (it starts with {head!r}; torch.save writes a zip archive)",
            "Give the .pt/.pth/.ckpt file that torch.save wrote, or a .safetensors file",
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError for payloads; anything else for damaged files
        raise ConfigError(
            "model.weights",
            path,
            f"cannot be loaded safely ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]})",
            "lit_infer loads tensors only (weights_only=True); re-save the weights with torch.save(model.state_dict(), path)",
        ) from None
    return _unnest(obj, path)


def _unnest(obj: Any, path: str) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in _NESTED_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is not None:
                obj = inner
                continue
        break
    raise ConfigError(
        "model.weights", path, "holds no state_dict of tensors", f"Found {type(obj).__name__}; save model.state_dict()"
    )


def load_weights(net: nn.Module, path: str, strict: bool = True, allow_remote: bool = False) -> None:
    """Load ``path`` into ``net``, stripping wrapper prefixes; with ``strict``, any mismatch is an error naming keys."""
    state = read_state_dict(path, allow_remote)
    state = match_prefixes(state, set(net.state_dict()))
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs net {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    if shapes or (strict and (missing or unexpected)):
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys: {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys: {_few(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches: {_few(shapes)}")
        fix = "Check that model.net / model.factory builds the network these weights were saved from"
        if not shapes:
            fix += ", or set model.strict=false to load what matches"
        raise ConfigError("model.weights", path, "does not fit the network: " + "; ".join(parts), fix)
    net.load_state_dict(state, strict=strict)


def match_prefixes(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Strip the wrapper prefixes (``module.``, ``model.``, ...) that make the file's keys differ from the net's."""
    original = state
    for _ in range(4):
        if set(state) & expected == set(state):
            return state
        best = state
        for prefix in _WRAPPER_PREFIXES:
            stripped = {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}
            if len(set(stripped) & expected) > len(set(best) & expected):
                best = stripped
        if best is state:
            # Two wrappers ("module.model.x"): stripping one alone matches nothing yet; strip one every key shares.
            shared = next((p for p in _WRAPPER_PREFIXES if all(k.startswith(p) for k in state)), None)
            if shared is None:
                break
            best = {k[len(shared) :]: v for k, v in state.items()}
        state = best
    # Stripping that matched nothing more would only rename the keys an error message shows.
    return state if len(set(state) & expected) > len(set(original) & expected) else original


def is_torchscript(path: str) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in zf.namelist())


def _few(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f", ... (+{len(items) - n})" if len(items) > n else "")
