"""Device lists as users write them in YAML (``[cuda:0, cuda:1]``, ``[cpu, cpu]``, ``[0, 1]``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

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
