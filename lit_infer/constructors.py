"""What ``model.factory`` may call, and what ``model.factory_kwargs`` may hold.

The import policy (:mod:`lit_infer.security`) decides which namespaces a config may name; a factory is *called* with
arguments from the config, so it is held to more: it must be a network class (an ``nn.Module`` subclass), a model
builder that torchvision or timm registers (``torchvision.models.resnet50``, a timm entrypoint), one of their generic
builders (``timm.create_model``, ``torchvision.models.get_model``), or your own code. Its arguments are plain data
(numbers, strings, booleans, lists and mappings of them): a nested ``class_path`` is refused, never built.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Mapping
from typing import Any

import torch.nn as nn

from lit_infer import security
from lit_infer.errors import ConfigError

GENERIC_BUILDERS = ("timm.models._factory.create_model", "torchvision.models._api.get_model")
"""Where the builders that take a model name are defined (they are checked by where they live, not by identity, so
that neither package is imported to check the other)."""


def check_factory(fn: Any, path: str, key: str = "model.factory") -> None:
    """Refuse ``fn`` (already imported under the policy) unless it builds networks; nothing is called."""
    if not security.is_enforced():
        return  # Python callers choose their own factories
    if inspect.isclass(fn) and issubclass(fn, nn.Module):
        return
    module = getattr(fn, "__module__", None) or ""
    canonical = f"{module}.{getattr(fn, '__qualname__', '')}"
    top = module.split(".")[0]
    if canonical in GENERIC_BUILDERS or _registered_builder(fn, top) or security.is_users_own(module):
        return
    raise ConfigError(
        key,
        path,
        f"is {canonical}, which is neither a network class nor a registered model builder",
        "Give an nn.Module class, a torchvision/timm model builder (torchvision.models.resnet50, timm.create_model) "
        "or a function of your own",
    )


def _registered_builder(fn: Any, top: str) -> bool:
    """Whether torchvision's or timm's model registry holds ``fn`` (asked only of the package ``fn`` comes from)."""
    name = getattr(fn, "__name__", "")
    if top == "torchvision" and "torchvision.models" in sys.modules:
        from torchvision.models import get_model_builder, list_models

        return any(get_model_builder(n) is fn for n in list_models() if n.endswith(name))
    if top == "timm" and "timm" in sys.modules:
        import timm

        return timm.is_model(name) and timm.models.model_entrypoint(name) is fn
    return False


def check_plain_data(value: Any, key: str) -> None:
    """Refuse anything but plain data in a free-form argument: a nested ``class_path`` (which jsonargparse keeps as
    a dict under the policy) would otherwise reach code that might build it, and objects have no place there.
    Python callers (no policy enforced) may pass objects, e.g. ``norm_layer=nn.BatchNorm2d``."""
    if security.is_enforced():
        _check_plain(value, key)


def _check_plain(value: Any, key: str) -> None:
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{key}[{i}]")
        return
    if isinstance(value, Mapping):
        if "class_path" in value:
            raise ConfigError(
                key,
                dict(value),
                "holds a class_path; free-form arguments carry plain data only (numbers, strings, lists, mappings)",
                "Give the value itself, or a network by model.net (class_path + init_args)",
            )
        for k, item in value.items():
            if not isinstance(k, str):
                raise ConfigError(key, k, "has a key that is not a string", "Use string keys")
            _check_plain(item, f"{key}.{k}")
        return
    raise ConfigError(
        key,
        f"<{type(value).__name__}>",
        "is an object; free-form arguments carry plain data only (numbers, strings, lists, mappings)",
        "Give the value itself",
    )
