"""Preprocessing settings, declared once by the model and shared with the data module, and their geometry.

The data module uses the geometry (resize, crop, interpolation) in its workers; the prediction module uses the
colour statistics (mean, std) on the device. Neither repeats the other's settings.

The geometry is the reference's, to the pixel: torchvision's ``Resize(resize)`` + ``CenterCrop(crop)`` (sizes from
``torchvision.transforms.functional._compute_resized_output_size``, offsets ``int(round((size - crop) / 2))``), and
for timm models timm's ``transforms_imagenet_eval`` (``crop_mode`` center / squash / border). :func:`geometry` is
the one place that computes it; the Pillow path (``data/decode.py``) and the GPU path (``data/gpu_decode.py``) both
follow it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import torch.nn as nn

from lit_infer.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Interpolation = Literal["bilinear", "bicubic", "nearest", "box", "hamming", "lanczos"]
CropMode = Literal["center", "squash", "border", "none"]

FROM_CONFIG = "config (model.preprocessing)"
FROM_PRETRAINED_CFG = "the model's pretrained_cfg, resolved as timm's resolve_data_config does"
FROM_DEFAULT = "the ImageNet default, because the network declares no pretrained_cfg (set model.preprocessing)"


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the network's input, with torchvision's (and timm's) evaluation semantics.

    Args:
        crop_size: Side of the square crop the network sees.
        resize_size: Shorter side after resizing, before the crop. ``None``: ``floor(crop_size / crop_pct)``.
        crop_pct: Used only when ``resize_size`` is ``None`` (timm's convention; 0.875 gives 256 -> 224).
        interpolation: Pillow's resampling filter; all but ``nearest`` are antialiased when shrinking, as
            torchvision's and timm's transforms on PIL images are.
        crop_mode: timm's ``crop_mode``. ``center``: shorter side to ``resize``, centre crop (torchvision's
            ``Resize`` + ``CenterCrop``). ``squash``: both sides to ``resize`` (aspect ratio not kept), centre crop.
            ``border``: longer side to ``resize``, padded with the mean colour, centre crop. ``none``: the image
            whole at its own size, no resize and no crop (detectors and segmenters resize it themselves; a batch of
            images of different sizes is a list).
        mean: Per-channel mean in [0, 1], subtracted on the device.
        std: Per-channel standard deviation in [0, 1], divided on the device.
    """

    crop_size: int = 224
    resize_size: int | None = None
    crop_pct: float = 0.875
    interpolation: Interpolation = "bilinear"
    crop_mode: CropMode = "center"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        key = "model.preprocessing"
        if self.crop_size <= 0:
            raise ConfigError(f"{key}.crop_size", self.crop_size, "must be positive", "Set the network's input side")
        if self.resize_size is not None and self.resize_size < self.crop_size and self.crop_mode == "center":
            raise ConfigError(
                f"{key}.resize_size",
                self.resize_size,
                f"is smaller than crop_size={self.crop_size!r}: the centre crop would not fit",
                "Set resize_size >= crop_size, or leave it out",
            )
        if not 0 < self.crop_pct <= 1:
            raise ConfigError(f"{key}.crop_pct", self.crop_pct, "must be in (0, 1]", "Use e.g. 0.875 (256 -> 224)")
        if self.interpolation not in get_args(Interpolation):
            raise ConfigError(
                f"{key}.interpolation", self.interpolation, "is not a filter", f"Use one of {get_args(Interpolation)}"
            )
        if self.crop_mode not in get_args(CropMode):
            raise ConfigError(
                f"{key}.crop_mode", self.crop_mode, "is not a crop mode", f"Use one of {get_args(CropMode)}"
            )
        if len(self.mean) != 3:
            raise ConfigError(f"{key}.mean", self.mean, "needs 3 values (R, G, B)", "Give e.g. [0.485, 0.456, 0.406]")
        if len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(
                f"{key}.std", self.std, "needs 3 values above 0 (it divides)", "Give e.g. [0.229, 0.224, 0.225]"
            )

    @property
    def resize(self) -> int:
        return self.resize_size if self.resize_size is not None else math.floor(self.crop_size / self.crop_pct)

    @property
    def fill(self) -> tuple[int, int, int]:
        """The colour of padding: timm's ``border`` mode pads with the mean colour; torchvision pads with black."""
        if self.crop_mode == "border":
            return tuple(round(255 * v) for v in self.mean)  # type: ignore[return-value]
        return (0, 0, 0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "resize": self.resize}


@dataclass(frozen=True)
class Geometry:
    """Where one image's pixels go: resize to ``size`` (``None``: keep the image as it is), pad by ``pad``
    (left, top, right, bottom) with the preprocessing's ``fill``, then crop ``box`` (left, top, right, bottom)."""

    size: tuple[int, int] | None
    pad: tuple[int, int, int, int]
    box: tuple[int, int, int, int]


def geometry(width: int, height: int, p: Preprocessing) -> Geometry:
    """The reference's resize and crop for a ``width`` x ``height`` image: a pure function of sizes, to the pixel."""
    if p.crop_mode == "none":  # the whole image, as decoded (after EXIF rotation)
        return Geometry(None, (0, 0, 0, 0), (0, 0, width, height))
    s = p.resize
    if p.crop_mode == "squash":  # timm: Resize((s, s)) then CenterCrop
        new_w, new_h = s, s
    elif p.crop_mode == "border":  # timm: ResizeKeepRatio(s, longest=1.0) then CenterCropOrPad(fill=mean)
        ratio = max(height / s, width / s)
        new_h, new_w = round(height / ratio), round(width / ratio)
    else:  # torchvision's Resize(s): shorter side to s, the longer one truncated (int), as it computes it
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = s, int(s * long / short)
        new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    size = None if (new_w, new_h) == (width, height) else (new_w, new_h)
    crop = p.crop_size
    # CenterCrop / center_crop_or_pad: pad what is smaller than the crop (left/top get the smaller half) ...
    pad_w, pad_h = max(crop - new_w, 0), max(crop - new_h, 0)
    pad = (pad_w // 2, pad_h // 2, (pad_w + 1) // 2, (pad_h + 1) // 2)
    padded_w, padded_h = new_w + pad_w, new_h + pad_h
    # ... then crop at int(round(...)) offsets: Python's round, halves to even.
    top, left = round((padded_h - crop) / 2.0), round((padded_w - crop) / 2.0)
    return Geometry(size, pad, (left, top, left + crop, top + crop))


def from_model(net: nn.Module, use_test_size: bool = False) -> Preprocessing | None:
    """What a timm model declares about itself (``pretrained_cfg``), resolved as timm's ``resolve_data_config``
    does: bicubic, crop_pct 0.875, crop_mode center and ImageNet's mean/std where the model says nothing.
    ``use_test_size``: the model's ``test_input_size`` / ``test_crop_pct``, where it declares them. ``None`` for a
    network without a ``pretrained_cfg``."""
    cfg = getattr(net, "pretrained_cfg", None)
    if not isinstance(cfg, Mapping):
        cfg = getattr(net, "default_cfg", None)  # timm before 0.9
    if not isinstance(cfg, Mapping):
        return None
    input_size = cfg.get("input_size") or (3, 224, 224)
    crop_pct = cfg.get("crop_pct") or 0.875
    if use_test_size:
        input_size = cfg.get("test_input_size") or input_size
        crop_pct = cfg.get("test_crop_pct") or crop_pct
    height, width = int(input_size[-2]), int(input_size[-1])
    if height != width:
        raise ConfigError(
            "model.preprocessing",
            None,
            f"the model declares a non-square input_size {tuple(input_size)}, and crops here are square",
            "Set model.preprocessing.crop_size (and resize_size) yourself",
        )
    try:
        return Preprocessing(
            crop_size=width,
            crop_pct=float(crop_pct),
            interpolation=cfg.get("interpolation") or "bicubic",
            crop_mode=cfg.get("crop_mode") or "center",
            mean=tuple(cfg.get("mean") or IMAGENET_MEAN),
            std=tuple(cfg.get("std") or IMAGENET_STD),
        )
    except ValueError as exc:
        raise ConfigError(
            "model.preprocessing", None, f"the model's pretrained_cfg is not usable: {exc}", "Set it yourself"
        ) from None


def resolve(given: Preprocessing | None, net: nn.Module, use_test_size: bool = False) -> tuple[Preprocessing, str]:
    """The preprocessing a run uses and where it came from (one of ``FROM_*``): the config's, else the model's
    ``pretrained_cfg``, else torchvision's ImageNet default (256 -> 224, bilinear)."""
    if given is not None:
        return given, FROM_CONFIG
    declared = from_model(net, use_test_size)
    if declared is not None:
        return declared, FROM_PRETRAINED_CFG
    return Preprocessing(), FROM_DEFAULT


def describe(p: Preprocessing, origin: str, exact: bool | str = True) -> str:
    """One line saying what was assumed: sizes, filter, crop, colour statistics, exact or fast, and from where.

    ``exact``: ``True`` (the reference's pixels), ``False`` (the fast CPU path), or a string naming another
    approximation (``decode: gpu``)."""
    if p.crop_mode == "center":
        geometry_text = f"resize shorter side to {p.resize}, centre crop {p.crop_size}"
    elif p.crop_mode == "squash":
        geometry_text = f"resize to {p.resize}x{p.resize} (squash), centre crop {p.crop_size}"
    elif p.crop_mode == "none":
        geometry_text = "whole images at their own sizes (no resize, no crop)"
    else:
        geometry_text = f"resize longer side to {p.resize}, pad with {p.fill}, centre crop {p.crop_size}"
    mean = ", ".join(f"{v:g}" for v in p.mean)
    std = ", ".join(f"{v:g}" for v in p.std)
    if exact is True:
        pixels = "exact pixels"
    elif exact is False:
        pixels = "fast pixels (data.decoding.exact=false: crop-box resize, JPEG draft)"
    else:
        pixels = f"approximate pixels ({exact})"
    return f"lit-infer: preprocessing: {geometry_text}, {p.interpolation}, mean ({mean}), std ({std}); {pixels}; from {origin}"
