"""The default pixels are the reference's: torchvision's and timm's own transforms, run on the same files.

torchvision and timm are in the tested stack (constraints.txt), so the references run here, in this process.
Photo-like images of every Pillow mode, both orientations, odd sizes, EXIF-rotated, 16-bit; the uint8 crop must be
equal bit for bit, the normalised tensor within 1e-6.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from lit_infer.data.decode import Decoder
from lit_infer.modules.base import PredictionModule
from lit_infer.nets import TinyCNN
from lit_infer.preprocessing import FROM_CONFIG, FROM_PRETRAINED_CFG, Preprocessing
from lit_infer.records import Batch

timm = pytest.importorskip("timm", reason="timm is in the tested stack: `make setup` installs it")
torchvision = pytest.importorskip("torchvision", reason="torchvision is in the tested stack: `make setup`")
from timm.data import create_transform, resolve_data_config  # noqa: E402
from torchvision import transforms as T  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

TV = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
PIPELINES: list[dict[str, Any]] = [
    {"kind": "torchvision", "resize": 256, "crop": 224, "interpolation": "bilinear", **TV},
    {"kind": "torchvision", "resize": 232, "crop": 224, "interpolation": "bicubic", **TV},
    {"kind": "torchvision", "resize": 73, "crop": 64, "interpolation": "nearest", **TV},
    {"kind": "torchvision", "resize": 80, "crop": 71, "interpolation": "lanczos", "mean": [0.5] * 3, "std": [0.25] * 3},
    {"kind": "timm_model", "model": "resnet18"},  # bicubic, crop_pct 0.95
    {"kind": "timm_model", "model": "resnet18", "use_test_size": True},  # 288, crop_pct 1.0
    {"kind": "timm_cfg", "model": "convnext_tiny.fb_in22k_ft_in1k_384"},  # crop_mode squash
    {"kind": "timm_cfg", "model": "vit_base_patch16_224.augreg2_in21k_ft_in1k"},  # mean/std 0.5, crop_pct 0.9
    {"kind": "timm_args", "args": {}},  # a model that says nothing but its input size: timm's defaults, bicubic
    {
        "kind": "timm_args",
        "args": {"input_size": (3, 96, 96), "crop_pct": 0.9, "crop_mode": "border", "mean": (0.5, 0.4, 0.3)},
    },
]


def _photo_like(w: int, h: int, seed: int) -> np.ndarray:
    """Smooth gradients, sharp edges and noise: resampling and rounding differences all show."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], axis=-1)
    base[(x // 7 + y // 5) % 3 == 0] *= 0.4
    return np.clip(base + rng.normal(0, 14, (h, w, 3)), 0, 255).astype(np.uint8)


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def _make_images(root: Path) -> tuple[list[Path], dict[str, Path]]:
    """Every mode a photo folder holds; returns the files and, for a 16-bit file, the 8-bit file it should equal."""
    rgb = lambda w, h, s: Image.fromarray(_photo_like(w, h, s))  # noqa: E731
    files: dict[str, tuple[Image.Image, dict[str, Any]]] = {
        "landscape.jpg": (rgb(517, 389, 1), {"quality": 90}),
        "portrait.png": (rgb(301, 433, 2), {}),
        "exif6.jpg": (rgb(389, 301, 3), {"quality": 92, "exif": _exif(6)}),  # displayed as a portrait
        "exif8.png": (rgb(255, 199, 4), {"exif": _exif(8)}),
        "exif3.jpg": (rgb(333, 500, 5), {"quality": 88, "exif": _exif(3)}),
        "gray.png": (rgb(203, 157, 6).convert("L"), {}),
        "gray_alpha.png": (rgb(157, 203, 7).convert("LA"), {}),
        "palette.png": (rgb(301, 233, 8).quantize(200), {}),
        "rgba.png": (Image.fromarray(np.dstack([_photo_like(233, 301, 10), _photo_like(233, 301, 11)[..., :1]])), {}),
        "cmyk.jpg": (rgb(277, 211, 12).convert("CMYK"), {"quality": 90}),
        "small_odd.png": (rgb(61, 47, 13), {}),
        "tall_thin.jpg": (rgb(97, 640, 14), {"quality": 85}),
    }
    paths = []
    for name, (img, kwargs) in files.items():
        img.save(root / name, **kwargs)
        paths.append(root / name)
    transparent = rgb(211, 173, 9).quantize(64)
    transparent.save(root / "palette_transparent.png", transparency=3)
    paths.append(root / "palette_transparent.png")
    assert Image.open(root / "palette_transparent.png").info.get("transparency") == 3
    # 16 bits: lit_infer scales to 8 bits (>> 8) where Pillow's convert("RGB") would clip at 255 (a white image); the
    # reference's geometry is then checked on the 8-bit equivalent.
    deep = (_photo_like(190, 251, 15)[..., 0].astype(np.uint16) << 8) | 0x5A
    Image.fromarray(deep).save(root / "deep16.png")
    Image.fromarray((deep >> 8).astype(np.uint8)).save(root / "deep16_as_8bit.png")
    paths += [root / "deep16.png", root / "deep16_as_8bit.png"]
    assert Image.open(root / "deep16.png").mode == "I;16"
    return paths, {"deep16.png": root / "deep16_as_8bit.png"}


def _pipeline(spec: dict[str, Any]) -> tuple[T.Compose, dict[str, Any]]:
    """The reference pipeline and, for timm, the pretrained_cfg it was resolved from (handed to lit_infer)."""
    kind = spec["kind"]
    if kind == "torchvision":
        mode = T.InterpolationMode(spec["interpolation"])
        resize = T.Resize(spec["resize"], interpolation=mode, antialias=True)
        return T.Compose([resize, T.CenterCrop(spec["crop"]), T.ToTensor(), T.Normalize(spec["mean"], spec["std"])]), {}
    if kind == "timm_model":
        model = timm.create_model(spec["model"], pretrained=False)
        config = resolve_data_config({}, model=model, use_test_size=spec.get("use_test_size", False))
        return create_transform(**config), dict(model.pretrained_cfg)
    if kind == "timm_cfg":
        cfg = timm.models.get_pretrained_cfg(spec["model"]).to_dict()
        return create_transform(**resolve_data_config({}, pretrained_cfg=cfg)), cfg
    assert kind == "timm_args", kind
    args = {"input_size": (3, 224, 224), **spec["args"]}
    return create_transform(**resolve_data_config(spec["args"], pretrained_cfg={"input_size": (3, 224, 224)})), args


def _split(compose: T.Compose) -> list[Any]:
    """The geometric transforms (PIL in, PIL out): what comes before ToTensor and Normalize."""
    names = [type(t).__name__ for t in compose.transforms]
    cut = next(i for i, n in enumerate(names) if n in ("ToTensor", "MaybeToTensor"))
    assert set(names[cut:]) <= {"ToTensor", "MaybeToTensor", "Normalize"}, names
    return compose.transforms[:cut]


def _run_reference(compose: T.Compose, path: Path) -> tuple[np.ndarray, torch.Tensor]:
    """The uint8 crop (H x W x 3, the PIL image before ToTensor) and the whole pipeline's tensor."""
    with Image.open(path) as opened:
        img = ImageOps.exif_transpose(opened).convert("RGB")
    crop = img
    for t in _split(compose):
        crop = t(crop)
    return np.asarray(crop, dtype=np.uint8), compose(img)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], dict[str, Path]]:
    return _make_images(tmp_path_factory.mktemp("reference"))


def _module(spec: dict[str, Any], cfg: dict[str, Any]) -> PredictionModule:
    if spec["kind"] == "torchvision":
        p = Preprocessing(
            crop_size=spec["crop"],
            resize_size=spec["resize"],
            interpolation=spec["interpolation"],
            mean=tuple(spec["mean"]),
            std=tuple(spec["std"]),
        )
        module = PredictionModule(net=TinyCNN(), preprocessing=p)
        assert module.preprocessing_origin == FROM_CONFIG
        return module
    net = TinyCNN()
    net.pretrained_cfg = cfg  # what timm.create_model attaches to every model it builds
    module = PredictionModule(net=net, test_size=spec.get("use_test_size", False))
    assert module.preprocessing_origin == FROM_PRETRAINED_CFG
    return module


@pytest.mark.slow  # timm models and 14 photos per pipeline: 8-12 s a case on a shared 2-core machine
@pytest.mark.parametrize("i", range(len(PIPELINES)))
def test_default_pixels_equal_the_reference(i: int, images: tuple[list[Path], dict[str, Path]]) -> None:
    paths, equivalents = images
    compose, cfg = _pipeline(PIPELINES[i])
    module = _module(PIPELINES[i], cfg)
    decoder = Decoder(module.preprocessing)  # the data module's default: exact
    for path in paths:
        if path in equivalents.values():
            continue
        expected, expected_tensor = _run_reference(compose, equivalents.get(path.name, path))
        ours = decoder(str(path))
        assert ours.shape == expected.shape, (path.name, repr(compose))
        diff = np.abs(ours.numpy().astype(int) - expected.astype(int))
        assert diff.max() == 0, f"{path.name}: {int((diff > 0).sum())} values differ, up to {diff.max()} levels"
        batch = Batch(ours.permute(2, 0, 1).unsqueeze(0), torch.tensor([0]), [str(path)], torch.tensor([-1]))
        tensor = module.preprocess(batch)[0]
        torch.testing.assert_close(tensor, expected_tensor, atol=1e-6, rtol=0)


def test_the_references_are_what_they_claim() -> None:
    """Guards the comparison itself: the timm pipelines resolved to the filters and modes they are meant to test."""
    reprs = [repr(_pipeline(spec)[0]) for spec in PIPELINES]
    assert "bicubic" in reprs[4] and "CenterCrop(size=(224, 224))" in reprs[4]
    assert "CenterCrop(size=(288, 288))" in reprs[5]
    assert "Resize(size=(384, 384)" in reprs[6]  # squash: both sides
    assert "bicubic" in reprs[8]
    assert "ResizeKeepRatio" in reprs[9] and "CenterCropOrPad" in reprs[9]
    # Against the versions constraints.txt pins (what `make setup` installs), not whatever happens to be importable.
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line)
    assert torchvision.__version__.split("+")[0] == pins["torchvision"] and timm.__version__ == pins["timm"]
