"""Device lists as users write them in YAML (``[cuda:0, cuda:1]``, ``[cpu, cpu]``, ``[0, 1]``)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.strategies import SingleDeviceStrategy
from typing_extensions import override

from lit_infer.errors import ConfigError


def parse_devices(devices: Sequence[str | int] | None, key: str) -> list[torch.device]:
    """``[cuda:0, 1, cpu]`` -> torch devices; integers mean CUDA devices. ``None`` or empty: ``[]``."""
    if not devices:
        return []
    if isinstance(devices, (str, int)):
        devices = [devices]
    parsed = []
    for device in devices:
        try:
            parsed.append(torch.device(f"cuda:{device}" if isinstance(device, int) else str(device)))
        except RuntimeError as exc:
            raise ConfigError(
                key, device, f"is not a device ({exc})", "Write devices as cpu, cuda:0, cuda:1..."
            ) from exc
    for device in parsed:
        if device.type == "cuda" and device.index is None:
            raise ConfigError(key, str(device), "has no index", "Write cuda:0, cuda:1...")
    return parsed


class DeviceListStrategy(SingleDeviceStrategy):
    """One process driving a list of devices (``dp``, ``pipeline``); the module itself lives on the first.

    Lightning fills ``parallel_devices`` from the Trainer's ``accelerator``/``devices`` when the list is empty, the
    same hand-off its multi-device strategies use.
    """

    strategy_name = ""

    def __init__(self, devices: list[str] | None = None, **kwargs: Any) -> None:
        parsed = parse_devices(devices, "trainer.strategy.init_args.devices")
        super().__init__(device=parsed[0] if parsed else "cpu", **kwargs)
        self.parallel_devices = parsed

    @property
    @override
    def root_device(self) -> torch.device:
        # Without a list of its own: the device Lightning gave the strategy (the Trainer's accelerator and devices).
        return self.parallel_devices[0] if self.parallel_devices else super().root_device

    @property
    def device_list(self) -> list[torch.device]:
        """Every device of the strategy, the root first; a device may repeat."""
        return list(self.parallel_devices) or [self.root_device]

    def thread_context(self) -> contextlib.AbstractContextManager:
        """What a worker thread enters around its forward: autocast, which is per thread.

        Not the whole precision context: ``bf16-true`` sets the process-wide default dtype, which the main thread
        holds for the whole step; threads entering and leaving it concurrently could leave the wrong one behind.
        """
        if isinstance(self.precision_plugin, MixedPrecision):
            return self.precision_plugin.autocast_context_manager()
        return contextlib.nullcontext()

    @classmethod
    @override
    def register_strategies(cls, strategy_registry: Any) -> None:
        if cls.strategy_name:
            strategy_registry.register(cls.strategy_name, cls, description=cls.__doc__.splitlines()[0])
