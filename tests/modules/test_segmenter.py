"""Segmenter: torchvision's segmentation model on whole upright photos, its argmax mask written as a palette PNG at
the image's own size, equal pixel for pixel to the model called directly; mean IoU through torchmetrics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torchmetrics.classification import MulticlassJaccardIndex
from torchvision.transforms.functional import normalize

from lit_infer import ImageDataModule, PredictionWriter, Segmenter
from lit_infer.errors import ConfigError
from lit_infer.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from modules.detection_helpers import SEGMENTER, SEGMENTER_KWARGS, photos, reference_net, seeded, upright

NAMES = ["bg", "a", "b", "c", "d"]


def _predict(module: Segmenter, source: Path, out: Path, batch_size: int = 2) -> dict:
    writer = PredictionWriter(out, format="csv", fsync=False)
    data = ImageDataModule(source, batch_size=batch_size, num_workers=0, preprocessing=module.preprocessing)
    L.Trainer(accelerator="cpu", logger=False, callbacks=[writer], enable_progress_bar=False).predict(
        module, datamodule=data, return_predictions=False
    )
    return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_masks_equal_torchvisions_argmax_and_miou_equals_torchmetrics(tmp_path: Path) -> None:
    paths = photos(tmp_path / "photos", 4)
    weights = seeded(SEGMENTER, SEGMENTER_KWARGS, tmp_path / "w.pt")
    net = reference_net(SEGMENTER, SEGMENTER_KWARGS, weights)
    with torch.no_grad():
        scores = [net(normalize(upright(p), IMAGENET_MEAN, IMAGENET_STD)[None])["out"] for p in paths]
    expected = [s.argmax(1)[0].numpy() for s in scores]
    labels = tmp_path / "labels"
    labels.mkdir()
    rng = np.random.default_rng(1)
    metric = MulticlassJaccardIndex(5, average="macro", ignore_index=255)
    for p, mask in zip(paths, expected, strict=True):
        target = np.where(rng.random(mask.shape) < 0.7, mask, rng.integers(0, 5, mask.shape)).astype(np.uint8)
        target[:2] = 255  # ignored pixels
        Image.fromarray(target).save(labels / f"{p.stem}.png")
        metric.update(torch.from_numpy(mask).reshape(1, -1), torch.from_numpy(target.astype(np.int64)).reshape(1, -1))
    module = Segmenter(
        factory=SEGMENTER,
        factory_kwargs=SEGMENTER_KWARGS,
        weights=weights,
        class_names=NAMES,
        label_masks=labels,
        probability_maps=["b"],
    )
    summary = _predict(module, tmp_path / "photos", tmp_path / "out")
    with (tmp_path / "out" / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row, mask in zip(rows, expected, strict=True):
        with Image.open(tmp_path / "out" / row["mask"]) as img:
            assert img.mode == "P"
            written = np.asarray(img)
        assert np.array_equal(written, mask)  # pixel for pixel, at the upright image's own size
        assert (int(row["height"]), int(row["width"])) == mask.shape
        counts = [int(row[f"pixels_{k + 1}"]) for k in range(5)]
        assert counts == np.bincount(mask.reshape(-1), minlength=5).tolist()
    for row, score in zip(rows, scores, strict=True):  # class "b" (2): torchvision's softmax, in 8 bits
        with Image.open(tmp_path / "out" / row["probability_b"]) as img:
            written = np.asarray(img).astype(np.int64)
        expected_levels = _levels(score.softmax(1)[0, 2], 8)
        assert written.shape == expected_levels.shape and np.abs(written - expected_levels).max() <= 1
    assert summary["metrics"]["miou"] == pytest.approx(float(metric.compute()), abs=1e-6)
    assert 0 < summary["metrics"]["miou"] < 1 and any(k.startswith("iou_") for k in summary["metrics"])


def test_a_cropping_preprocessing_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match=r"model\.preprocessing\.crop_mode='center': would crop"):
        Segmenter(net=torch.nn.Conv2d(3, 2, 1), preprocessing=Preprocessing(crop_size=8))


def test_a_plain_conv_net_gives_its_argmax_at_the_images_size(tmp_path: Path) -> None:
    """One batch of seven photos of six sizes: the two of one size run as one tensor, the others alone."""
    paths = photos(tmp_path / "photos", 7)
    assert upright(paths[0]).shape == upright(paths[6]).shape
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 3, 3, padding=1).eval()
    _predict(Segmenter(net=net), tmp_path / "photos", tmp_path / "out", batch_size=7)
    with torch.no_grad():
        for i, p in enumerate(paths):
            expected = net(normalize(upright(p), IMAGENET_MEAN, IMAGENET_STD)[None]).argmax(1)[0].numpy()
            with Image.open(tmp_path / "out" / "masks" / f"{i}.png") as img:
                assert np.array_equal(np.asarray(img), expected)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_ddp_ranks_write_the_same_masks_rows_and_miou_as_one_process(tmp_path: Path) -> None:
    import sys

    from strategies.strategy_helpers import run

    paths = photos(tmp_path / "photos", 5)
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 3, 3, padding=1)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    labels = tmp_path / "labels"
    labels.mkdir()
    for i, p in enumerate(paths):
        h, w = upright(p).shape[1:]
        Image.fromarray(np.full((h, w), i % 3, dtype=np.uint8)).save(labels / f"{p.stem}.png")
    init = {"weights": str(tmp_path / "w.pt"), "class_names": ["x", "y", "z"], "label_masks": str(labels)}
    single = _predict(Segmenter(net=torch.nn.Conv2d(3, 3, 3, padding=1), **init), tmp_path / "photos", tmp_path / "one")
    conv = {"class_path": "torch.nn.Conv2d", "init_args": {"in_channels": 3, "out_channels": 3, "kernel_size": 3}}
    conv["init_args"]["padding"] = 1
    config = {
        "model": {"class_path": "lit_infer.Segmenter", "init_args": {"net": conv, **init}},
        "data": {"init_args": {"source": str(tmp_path / "photos"), "batch_size": 2, "num_workers": 0}},
        "writer": {"output_dir": str(tmp_path / "ddp"), "format": "csv", "fsync": False},
        "trainer": {"accelerator": "cpu", "strategy": "ddp", "devices": 2},
    }
    (tmp_path / "ddp.yaml").write_text(json.dumps(config))
    run([sys.executable, "-m", "lit_infer", "predict", "--config", str(tmp_path / "ddp.yaml")], timeout=240)
    ddp = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert (tmp_path / "ddp" / "predictions.csv").read_bytes() == (tmp_path / "one" / "predictions.csv").read_bytes()
    for i in range(5):
        name = f"masks/{i}.png"
        assert (tmp_path / "ddp" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
    assert ddp["world_size"] == 2 and ddp["metrics"] == single["metrics"] and "miou" in ddp["metrics"]


def _levels(probability: torch.Tensor, bits: int) -> np.ndarray:
    """The reference's probability as the PNG should hold it: round(p x (2^bits - 1))."""
    return probability.mul(2**bits - 1).round().to(torch.int64).numpy()


@pytest.mark.parametrize("bits", [8, 16])
def test_probability_maps_are_the_softmax_of_the_named_classes_at_the_images_size(tmp_path: Path, bits: int) -> None:
    """A network whose output is half the input's size: its softmax, resized back bilinearly to each image's size,
    written as a grey PNG per named class, equal (to one level of rounding) to the softmax computed directly."""
    import torch.nn.functional as F

    paths = photos(tmp_path / "photos", 3)
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1).eval()
    names = ["bg", "car", "cat", "person"]
    module = Segmenter(net=net, class_names=names, probability_maps=["person", "car"], probability_bits=bits)
    _predict(module, tmp_path / "photos", tmp_path / "out", batch_size=3)
    with (tmp_path / "out" / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    with torch.no_grad():
        for row, p in zip(rows, paths, strict=True):
            image = normalize(upright(p), IMAGENET_MEAN, IMAGENET_STD)
            probs = net(image[None]).softmax(1)
            probs = F.interpolate(probs, size=image.shape[1:], mode="bilinear", align_corners=False)[0]
            for name, k in (("person", 3), ("car", 1)):
                assert row[f"probability_{name}"] == f"probabilities/{k}/{row['index']}.png"
                with Image.open(tmp_path / "out" / row[f"probability_{name}"]) as img:
                    written = np.asarray(img).astype(np.int64)
                expected = _levels(probs[k], bits)
                assert written.shape == expected.shape == tuple(image.shape[1:])
                assert np.abs(written - expected).max() <= 1  # float rounding at a level's edge
                assert (written == expected).mean() > 0.999
                assert written.max() > (2**bits - 1) // 4  # not all dark: the maps hold the probabilities


def test_an_unknown_probability_map_class_is_refused_in_one_line_by_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from robustness.robust_helpers import refused_in_one_line

    photos(tmp_path / "photos", 1)
    conv = {"class_path": "torch.nn.Conv2d", "init_args": {"in_channels": 3, "out_channels": 2, "kernel_size": 1}}
    args = ["--model=lit_infer.Segmenter", f"--model.net={json.dumps(conv)}", "--model.class_names=[bg, cat]"]
    args += ["--model.probability_maps=[dog]", f"--data.source={tmp_path / 'photos'}"]
    err = refused_in_one_line([*args, f"--writer.output_dir={tmp_path / 'out'}"], capsys)
    assert "model.probability_maps='dog': is not in model.class_names" in err


def test_an_unknown_probability_map_class_is_refused_in_one_line() -> None:
    net = torch.nn.Conv2d(3, 2, 1)
    with pytest.raises(ConfigError, match=r"^model\.probability_maps='dog': is not in model\.class_names") as exc:
        Segmenter(net=net, class_names=["bg", "cat"], probability_maps=["cat", "dog"])
    assert len(str(exc.value).splitlines()) == 1
    with pytest.raises(ConfigError, match=r"^model\.probability_maps=\['cat'\]: names classes, and model\.class_names"):
        Segmenter(net=net, probability_maps=["cat"])
    with pytest.raises(ConfigError, match=r"^model\.probability_bits=12: is not 8 or 16"):
        Segmenter(net=net, class_names=["bg", "cat"], probability_maps=["cat"], probability_bits=12)  # type: ignore[arg-type]
