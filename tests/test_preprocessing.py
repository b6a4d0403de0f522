"""Preprocessing settings: torchvision/timm conventions, validation, and what a model declares about itself."""

from __future__ import annotations

import pytest
import torch.nn as nn

from lit_infer.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, from_model


def test_defaults_are_imagenet_256_224() -> None:
    p = Preprocessing()
    assert (p.crop_size, p.resize, p.interpolation) == (224, 256, "bilinear")
    assert p.mean == IMAGENET_MEAN and p.std == IMAGENET_STD


@pytest.mark.parametrize(
    ("crop", "pct", "resize"), [(224, 0.875, 256), (224, 0.95, 235), (288, 1.0, 288), (64, 0.9, 71), (299, 0.875, 341)]
)
def test_resize_from_crop_pct_is_floored(crop: int, pct: float, resize: int) -> None:
    assert Preprocessing(crop_size=crop, crop_pct=pct).resize == resize


def test_explicit_resize_wins_and_to_dict_holds_it() -> None:
    p = Preprocessing(crop_size=224, resize_size=232, crop_pct=0.5)
    assert p.resize == 232
    assert p.to_dict()["resize"] == 232 and p.to_dict()["crop_size"] == 224


@pytest.mark.parametrize(
    "kwargs",
    [
        {"crop_size": 0},
        {"crop_size": 224, "resize_size": 200},
        {"crop_pct": 0.0},
        {"crop_pct": 1.5},
        {"mean": (0.5, 0.5)},
        {"std": (0.2, 0.0, 0.2)},
    ],
)
def test_invalid_settings_are_refused_with_the_key(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="preprocessing"):
        Preprocessing(**kwargs)


def test_from_model_reads_timm_pretrained_cfg() -> None:
    net = nn.Linear(2, 2)
    assert from_model(net) is None
    net.pretrained_cfg = {
        "input_size": (3, 288, 288),
        "crop_pct": 0.95,
        "interpolation": "bicubic",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
    }
    p = from_model(net)
    assert p is not None
    assert (p.crop_size, p.resize, p.interpolation, p.mean, p.std) == (288, 303, "bicubic", (0.5,) * 3, (0.5,) * 3)
    net.pretrained_cfg = {"input_size": (3, 224, 224), "interpolation": "lanczos"}  # unknown filter -> bilinear
    p = from_model(net)
    assert p is not None and p.interpolation == "bilinear" and p.resize == 256
