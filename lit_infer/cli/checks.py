"""Checks of settings that would fail deep inside ``Trainer()`` or jsonargparse's build with a long traceback."""

from __future__ import annotations

import dataclasses
from typing import Any

from lightning.pytorch.accelerators import AcceleratorRegistry
from lightning.pytorch.strategies import StrategyRegistry

from lit_infer.cli.messages import suggest
from lit_infer.data.options import GROUPS
from lit_infer.errors import ConfigError

OURS = ("dp", "cpu_multiprocess", "pipeline")
"""lit_infer's strategies (registered with Lightning's StrategyRegistry when lit_infer.strategies is imported)."""


def trainer_names(trainer: Any) -> None:
    """Refuse an unknown strategy or accelerator name, or no devices, naming the key and the valid values."""
    strategy = trainer.get("strategy")
    if isinstance(strategy, str) and strategy.lower() != "auto" and strategy.lower() not in StrategyRegistry:
        names = StrategyRegistry.available_strategies()
        theirs = [n for n in names if n not in OURS and "find_unused" not in n]
        fix = suggest(strategy, ["auto", *names])
        raise ConfigError(
            "trainer.strategy",
            strategy,
            "is not a strategy",
            f"{fix + ' ' if fix else ''}lit_infer's: {', '.join(OURS)}; Lightning's: auto, {', '.join(theirs)}",
        )
    devices = trainer.get("devices")
    if devices in (0, "0", []) and not isinstance(devices, bool):
        raise ConfigError(
            "trainer.devices",
            devices,
            "asks for no device",
            "Give how many to use (1, 2...), -1 or auto for all of them, or a list of indices ([0] for the first GPU)",
        )
    accelerator = trainer.get("accelerator")
    if not isinstance(accelerator, str) or accelerator.lower() == "auto":
        return
    name = accelerator.lower()
    known = sorted(AcceleratorRegistry.available_accelerators())
    if name != "gpu" and name not in known:
        fix = suggest(name, ["auto", "gpu", *known])
        raise ConfigError(
            "trainer.accelerator", accelerator, "is not an accelerator", fix or f"Choose auto, gpu, {', '.join(known)}"
        )


def accelerator_available(trainer: Any) -> None:
    """Refuse an accelerator this machine does not have (checked when the Trainer is built, not when parsing)."""
    accelerator = trainer.get("accelerator")
    if not isinstance(accelerator, str):
        return
    name = accelerator.lower()
    known = sorted(AcceleratorRegistry.available_accelerators())
    if name == "auto" or (name != "gpu" and name not in known):
        return
    wanted = ["cuda", "mps"] if name == "gpu" else [name]
    if not any(AcceleratorRegistry[n]["accelerator"].is_available() for n in wanted):
        here = [n for n in known if AcceleratorRegistry[n]["accelerator"].is_available()]
        raise ConfigError(
            "trainer.accelerator",
            accelerator,
            "is not available on this machine",
            f"Use one it has ({', '.join(here)}), or auto to take the best one",
        )


def no_null_groups(config: Any) -> None:
    """``data.decoding: null`` passes jsonargparse's parsing and fails its build (``Decoding(**None)``) with a
    traceback: a group of options is left out for its defaults, never null."""
    for group, options in GROUPS.items():
        for key in (f"data.init_args.{group}", f"data.{group}"):
            if key in config and config[key] is None:
                first = dataclasses.fields(options)[0].name
                fix = f"Leave it out for its defaults, or set the keys you change (data.{group}.{first}: ...)"
                raise ConfigError(f"data.{group}", None, "is a group of options, not a value", fix)
