"""Preprocessing settings, declared once by the model and shared with the data module.

The data module uses the geometry (resize, crop, interpolation) in its workers; the prediction module uses the
colour statistics (mean, std) on the device. Neither repeats the other's settings.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch.nn as nn

from lit_infer.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Interpolation = Literal["bilinear", "bicubic", "nearest"]


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the network's input, with torchvision's evaluation semantics.

    Args:
        crop_size: Side of the square centre crop the network sees.
        resize_size: Shorter side after resizing, before the crop. ``None``: ``floor(crop_size / crop_pct)``.
        crop_pct: Used only when ``resize_size`` is ``None`` (timm's convention; 0.875 gives 256 -> 224).
        interpolation: Resampling filter; bilinear and bicubic are antialiased when shrinking, as torchvision does.
        mean: Per-channel mean in [0, 1], subtracted on the device.
        std: Per-channel standard deviation in [0, 1], divided on the device.
    """

    crop_size: int = 224
    resize_size: int | None = None
    crop_pct: float = 0.875
    interpolation: Interpolation = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        key = "model.preprocessing"
        if self.crop_size <= 0:
            raise ConfigError(f"{key}.crop_size", self.crop_size, "must be positive", "Set the network's input side")
        if self.resize_size is not None and self.resize_size < self.crop_size:
            raise ConfigError(
                f"{key}.resize_size",
                self.resize_size,
                f"is smaller than crop_size={self.crop_size!r}: the centre crop would not fit",
                "Set resize_size >= crop_size, or leave it out",
            )
        if not 0 < self.crop_pct <= 1:
            raise ConfigError(f"{key}.crop_pct", self.crop_pct, "must be in (0, 1]", "Use e.g. 0.875 (256 -> 224)")
        if len(self.mean) != 3:
            raise ConfigError(f"{key}.mean", self.mean, "needs 3 values (R, G, B)", "Give e.g. [0.485, 0.456, 0.406]")
        if len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(
                f"{key}.std", self.std, "needs 3 values above 0 (it divides)", "Give e.g. [0.229, 0.224, 0.225]"
            )

    @property
    def resize(self) -> int:
        return self.resize_size if self.resize_size is not None else math.floor(self.crop_size / self.crop_pct)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "resize": self.resize}


def from_model(net: nn.Module) -> Preprocessing | None:
    """The preprocessing a model declares about itself (timm's ``pretrained_cfg``), or ``None``."""
    cfg = getattr(net, "pretrained_cfg", None) or getattr(net, "default_cfg", None)
    if not isinstance(cfg, dict) or "input_size" not in cfg:
        return None
    interpolation = cfg.get("interpolation", "bilinear")
    return Preprocessing(
        crop_size=int(cfg["input_size"][-1]),
        crop_pct=float(cfg.get("crop_pct", 0.875)),
        interpolation=interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bilinear",
        mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(cfg.get("std", IMAGENET_STD)),
    )
