"""Preprocessing settings: torchvision/timm conventions, validation, and what a model declares about itself."""

from __future__ import annotations

import pytest
import torch.nn as nn

from lit_infer.errors import ConfigError
from lit_infer.preprocessing import (
    FROM_CONFIG,
    FROM_DEFAULT,
    FROM_PRETRAINED_CFG,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Geometry,
    Preprocessing,
    describe,
    from_model,
    geometry,
    resolve,
)


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
    net.pretrained_cfg = {"input_size": (3, 224, 224)}  # says nothing else: timm's defaults, bicubic
    p = from_model(net)
    assert p is not None and (p.interpolation, p.resize, p.crop_mode) == ("bicubic", 256, "center")


@pytest.mark.parametrize(
    ("size", "p", "expected"),
    [
        # torchvision: shorter side to 256, longer int(256 * 500 / 333) = 384, crop offsets int(round(...))
        ((333, 500), Preprocessing(), Geometry((256, 384), (0, 0, 0, 0), (16, 80, 240, 304))),
        ((500, 333), Preprocessing(), Geometry((384, 256), (0, 0, 0, 0), (80, 16, 304, 240))),
        ((256, 300), Preprocessing(), Geometry(None, (0, 0, 0, 0), (16, 38, 240, 262))),  # no resize; 38 = round(38)
        ((100, 101), Preprocessing(crop_size=8, resize_size=9), Geometry((9, 9), (0, 0, 0, 0), (0, 0, 8, 8))),
        (
            (300, 100),
            Preprocessing(crop_size=64, crop_pct=1.0, crop_mode="squash"),
            Geometry((64, 64), (0,) * 4, (0, 0, 64, 64)),
        ),
        # border: longer side to 71, shorter round(100 / (300 / 71)) = 24, padded 20 + 20 to 64, then cropped
        (
            (300, 100),
            Preprocessing(crop_size=64, crop_pct=0.9, crop_mode="border"),
            Geometry((71, 24), (0, 20, 0, 20), (4, 0, 68, 64)),
        ),
    ],
)
def test_geometry_is_the_references(size: tuple[int, int], p: Preprocessing, expected: Geometry) -> None:
    assert geometry(*size, p) == expected


def test_border_pads_with_the_mean_colour() -> None:
    assert Preprocessing(crop_mode="border", mean=(0.5, 0.4, 0.3)).fill == (128, 102, 76)
    assert Preprocessing().fill == (0, 0, 0)


def test_resolve_says_where_the_preprocessing_came_from() -> None:
    net = nn.Linear(2, 2)
    assert resolve(None, net) == (Preprocessing(), FROM_DEFAULT)
    given = Preprocessing(crop_size=32)
    assert resolve(given, net) == (given, FROM_CONFIG)
    net.pretrained_cfg = {"input_size": (3, 224, 224), "test_input_size": (3, 288, 288), "test_crop_pct": 1.0}
    p, origin = resolve(None, net)
    assert origin == FROM_PRETRAINED_CFG and (p.crop_size, p.interpolation) == (224, "bicubic")
    p, _ = resolve(None, net, use_test_size=True)
    assert (p.crop_size, p.resize) == (288, 288)


def test_a_non_square_model_input_is_refused_naming_the_key() -> None:
    net = nn.Linear(2, 2)
    net.pretrained_cfg = {"input_size": (3, 224, 320)}
    with pytest.raises(ConfigError, match=r"model\.preprocessing.*non-square"):
        from_model(net)


def test_describe_is_one_line_with_sizes_filter_statistics_and_origin() -> None:
    line = describe(Preprocessing(), FROM_DEFAULT)
    assert "\n" not in line
    for part in ("256", "centre crop 224", "bilinear", "0.485", "0.229", "exact pixels", "no pretrained_cfg"):
        assert part in line, part
    assert "fast" in describe(Preprocessing(), FROM_CONFIG, exact=False)
    assert "decode: gpu" in describe(Preprocessing(), FROM_CONFIG, exact="decode: gpu")
