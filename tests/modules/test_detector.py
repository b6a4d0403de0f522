"""ObjectDetector: whole images at their own sizes (EXIF-rotated upright), boxes in their pixels, equal to torchvision's
detector called directly; thresholds, class names, COCO RLE, and mAP through torchmetrics."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch

from lit_infer import Decoding, ImageDataModule, ObjectDetector, PredictionWriter
from lit_infer.errors import ConfigError
from lit_infer.modules import coco
from modules.detection_helpers import DETECTOR, DETECTOR_KWARGS, photos, reference_net, seeded, upright
from modules.ragged_nets import BoxesFromPixels


def _predict(module: ObjectDetector, source: Path, out: Path, batch_size: int = 3) -> dict[str, Any]:
    writer = PredictionWriter(out, format="jsonl", fsync=False)
    data = ImageDataModule(source, batch_size=batch_size, num_workers=0, preprocessing=module.preprocessing)
    L.Trainer(accelerator="cpu", logger=False, callbacks=[writer], enable_progress_bar=False).predict(
        module, datamodule=data, return_predictions=False
    )
    return json.loads((out / "summary.json").read_text())


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def _assert_same(row: dict[str, Any], ref: dict[str, torch.Tensor], atol: float = 1e-4) -> None:
    assert len(row["boxes"]) == len(ref["boxes"])
    np.testing.assert_allclose(np.asarray(row["boxes"]).reshape(-1, 4), ref["boxes"].numpy(), atol=atol)
    np.testing.assert_allclose(row["scores"], ref["scores"].numpy(), atol=atol)
    assert row["labels"] == ref["labels"].tolist()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_boxes_equal_torchvisions_detector_on_the_upright_photos(tmp_path: Path) -> None:
    """Per image against the detector on ``to_tensor(exif_transpose(img).convert("RGB"))`` (batch 1, and batch 2
    with ``images_per_call: auto`` on the CPU), and in batches of different-sized images passed whole
    (``images_per_call: null``) against the detector called on the same list."""
    paths = photos(tmp_path / "photos", 4)
    weights = seeded(DETECTOR, DETECTOR_KWARGS, tmp_path / "w.pt")
    net = reference_net(DETECTOR, DETECTOR_KWARGS, weights)
    with torch.no_grad():
        alone = [net([upright(p)])[0] for p in paths]
        pairs = [d for i in (0, 2) for d in net([upright(p) for p in paths[i : i + 2]])]
    for batch_size, per_call, expected in ((1, "auto", alone), (2, None, pairs), (2, "auto", alone)):
        module = ObjectDetector(
            factory=DETECTOR, factory_kwargs=DETECTOR_KWARGS, weights=weights, images_per_call=per_call
        )
        out = tmp_path / f"out{batch_size}-{per_call}"
        _predict(module, tmp_path / "photos", out, batch_size)
        rows = _rows(out)
        assert [(r["height"], r["width"]) for r in rows] == [tuple(upright(p).shape[1:]) for p in paths]
        assert len({r["height"] for r in rows}) > 1  # sizes differ, rotated photos among them
        for row, ref in zip(rows, expected, strict=True):
            assert len(ref["boxes"]) > 0
            _assert_same(row, ref)


def test_thresholds_names_and_the_image_sizes(tmp_path: Path) -> None:
    paths = photos(tmp_path / "photos", 4)
    net = BoxesFromPixels()
    with torch.no_grad():
        reference = [net([upright(p)])[0] for p in paths]
    module = ObjectDetector(net=net, score_threshold=0.02, max_detections=2, class_names=["bg", "a", "b"])
    _predict(module, tmp_path / "photos", tmp_path / "out")
    for row, ref in zip(_rows(tmp_path / "out"), reference, strict=True):
        keep = ref["scores"] >= 0.02
        keep_idx = torch.nonzero(keep).flatten()[:2]  # already best first
        _assert_same(row, {k: v[keep_idx] for k, v in ref.items()}, atol=1e-6)
        assert row["names"] == [["bg", "a", "b"][i] for i in row["labels"]]
    with pytest.raises(ConfigError, match=r"model\.max_detections=0"):
        ObjectDetector(net=net, max_detections=0)


def test_a_network_without_the_detection_contract_is_refused_in_one_line(tmp_path: Path) -> None:
    photos(tmp_path / "photos", 2)

    class NotADetector(torch.nn.Module):
        def forward(self, images: list[torch.Tensor]) -> torch.Tensor:
            return torch.zeros(len(images), 3)

    with pytest.raises(ConfigError) as info:
        _predict(ObjectDetector(net=NotADetector()), tmp_path / "photos", tmp_path / "out")
    assert "\n" not in str(info.value) and "one dict with boxes, scores and labels per image" in str(info.value)


def test_rle_round_trips_and_matches_pycocotools() -> None:
    rng = np.random.default_rng(0)
    masks = [rng.random((37, 23)) > 0.6, np.ones((5, 4), bool), np.zeros((6, 9), bool), np.eye(40, 31, dtype=bool)]
    big = np.zeros((300, 200), bool)
    big[50:250, 20:180] = True  # long runs: counts past 5 bits, and negative deltas
    masks.append(big)
    for mask in masks:
        rle = coco.encode_mask(mask)
        assert np.array_equal(coco.decode_mask(rle), mask)
        assert coco.string_to_counts(rle["counts"]) == coco.rle_counts(mask).tolist()
    mask_api = pytest.importorskip("pycocotools.mask")
    for mask in masks:
        theirs = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert coco.encode_mask(mask) == {"size": theirs["size"], "counts": theirs["counts"].decode()}


def _annotations(paths: list[Path], path: Path) -> Path:
    """Ground truth: one box that the net finds exactly and one it misses, per image; one image left out."""
    images, anns = [], []
    for i, p in enumerate(paths[:-1]):
        h, w = upright(p).shape[1:]
        images.append({"id": 100 + i, "file_name": p.name, "height": h, "width": w})
        anns.append({"id": 2 * i, "image_id": 100 + i, "category_id": 1, "bbox": [0, 0, w / 2, h / 2], "iscrowd": 0})
        anns.append({"id": 2 * i + 1, "image_id": 100 + i, "category_id": 2, "bbox": [5, 5, 20, 30], "iscrowd": 0})
        anns[-1]["area"] = anns[-2]["area"] = 600.0
    categories = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return path


def test_map_equals_torchmetrics_on_the_same_detections(tmp_path: Path) -> None:
    pytest.importorskip("pycocotools")
    from torchmetrics.detection import MeanAveragePrecision

    paths = photos(tmp_path / "photos", 5)
    annotations = _annotations(paths, tmp_path / "instances.json")
    net = BoxesFromPixels()
    summary = _predict(ObjectDetector(net=net, annotations=str(annotations)), tmp_path / "photos", tmp_path / "out")
    gt = coco.read_annotations(str(annotations))
    metric = MeanAveragePrecision(iou_type="bbox")
    with torch.no_grad():
        for p in paths[:-1]:
            image_id = gt.image_id(str(p))
            target = {"boxes": torch.as_tensor(gt.boxes[image_id]), "labels": torch.as_tensor(gt.labels[image_id])}
            metric.update([net([upright(p)])[0]], [target])
    expected = metric.compute()
    got = summary["metrics"]
    assert got["num_annotated"] == 4
    assert got["map"] == pytest.approx(float(expected["map"]), abs=1e-6) and 0 < got["map"] < 1
    assert got["map_50"] == pytest.approx(float(expected["map_50"]), abs=1e-6)
    assert _rows(tmp_path / "out")[0]["names"][:2] == ["a", "b"]  # class names from the annotations' categories


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_ddp_ranks_write_the_same_files_and_metrics_as_one_process(tmp_path: Path) -> None:
    pytest.importorskip("pycocotools")
    from strategies.strategy_helpers import run

    paths = photos(tmp_path / "photos", 5)
    annotations = _annotations(paths, tmp_path / "instances.json")
    single = _predict(
        ObjectDetector(net=BoxesFromPixels(), annotations=str(annotations)), tmp_path / "photos", tmp_path / "one", 2
    )
    config = {
        "model": {
            "class_path": "lit_infer.ObjectDetector",
            "init_args": {
                "net": {"class_path": "modules.ragged_nets.BoxesFromPixels"},
                "annotations": str(annotations),
            },
        },
        "data": {"init_args": {"source": str(tmp_path / "photos"), "batch_size": 2, "num_workers": 0}},
        "writer": {"output_dir": str(tmp_path / "ddp"), "format": "jsonl", "fsync": False},
        "trainer": {"accelerator": "cpu", "strategy": "ddp", "devices": 2},
    }
    (tmp_path / "ddp.yaml").write_text(json.dumps(config))
    run([sys.executable, "-m", "lit_infer", "predict", "--config", str(tmp_path / "ddp.yaml")], timeout=240)
    ddp = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert (tmp_path / "ddp" / "predictions.jsonl").read_bytes() == (
        tmp_path / "one" / "predictions.jsonl"
    ).read_bytes()
    assert ddp["world_size"] == 2 and ddp["metrics"] == single["metrics"]


def test_whole_images_are_decoded_upright_at_their_own_sizes_and_batched_as_a_list(tmp_path: Path) -> None:
    from PIL import Image, ImageOps

    from lit_infer.data.dataset import collate
    from lit_infer.data.decode import Decoder
    from lit_infer.modules.detector import WHOLE_IMAGES
    from lit_infer.records import Sample

    paths = photos(tmp_path / "photos", 4)
    decoded = [Decoder(WHOLE_IMAGES)(str(p)) for p in paths]
    for p, image in zip(paths, decoded, strict=True):
        with Image.open(p) as img:
            assert np.array_equal(image.numpy(), np.asarray(ImageOps.exif_transpose(img).convert("RGB")))
    batch = collate([Sample(i, str(p), image=im) for i, (p, im) in enumerate(zip(paths, decoded, strict=True))])
    assert isinstance(batch.images, list) and [tuple(i.shape) for i in batch.images] == [
        tuple(im.permute(2, 0, 1).shape) for im in decoded
    ]
    with pytest.raises(ConfigError, match=r"data\.decoding\.cache_dir=.*crop_mode none"):
        ImageDataModule(
            tmp_path / "photos", preprocessing=WHOLE_IMAGES, decoding=Decoding(cache_dir=str(tmp_path / "cache"))
        )


def test_coco_results_file_loads_in_pycocotools_with_masks_as_rle(tmp_path: Path) -> None:
    paths = photos(tmp_path / "photos", 3)
    annotations = _annotations(paths + paths[-1:], tmp_path / "instances.json")  # every photo annotated
    module = ObjectDetector(net=BoxesFromPixels(masks=True), coco_results=True, annotations=None)
    summary = _predict(module, tmp_path / "photos", tmp_path / "out")
    assert summary["files"]["coco_results"] == "coco_results.json"
    entries = json.loads((tmp_path / "out" / "coco_results.json").read_text())
    rows = _rows(tmp_path / "out")
    assert len(entries) == sum(len(r["boxes"]) for r in rows)
    first = entries[0]
    x0, y0, x1, y1 = rows[0]["boxes"][0]
    assert first["image_id"] == 0 and first["category_id"] == rows[0]["labels"][0]
    assert first["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0]) and first["score"] == rows[0]["scores"][0]
    mask = coco.decode_mask(first["segmentation"])
    assert mask.shape == (rows[0]["height"], rows[0]["width"]) and mask[: int(y1), : int(x1)].all()
    assert mask.sum() == int(x1) * int(y1)
    pycocotools = pytest.importorskip("pycocotools.coco")
    # With the annotations' ids: COCO's own loader takes the file as it is.
    module = ObjectDetector(net=BoxesFromPixels(masks=True), coco_results=True, annotations=str(annotations))
    _predict(module, tmp_path / "photos", tmp_path / "out2")
    gt = pycocotools.COCO(str(annotations))
    res = gt.loadRes(str(tmp_path / "out2" / "coco_results.json"))
    assert sorted(res.getImgIds()) == [100, 101, 102] and len(res.anns) == len(entries)


def test_a_rerun_with_overwrite_replaces_the_coco_results_it_wrote(tmp_path: Path) -> None:
    photos(tmp_path / "photos", 3)
    module = ObjectDetector(net=BoxesFromPixels(), coco_results=True)
    first = (_predict(module, tmp_path / "photos", tmp_path / "out"), (tmp_path / "out" / "coco_results.json").stat())
    writer = PredictionWriter(tmp_path / "out", format="jsonl", fsync=False, overwrite=True)
    data = ImageDataModule(tmp_path / "photos", batch_size=2, num_workers=0, preprocessing=module.preprocessing)
    L.Trainer(accelerator="cpu", logger=False, callbacks=[writer], enable_progress_bar=False).predict(
        module, datamodule=data, return_predictions=False
    )
    again = (tmp_path / "out" / "coco_results.json").stat()
    # A new file, not the old one kept: the inode alone may be reused once the old one is removed.
    rewritten = (again.st_ino, again.st_mtime_ns) != (first[1].st_ino, first[1].st_mtime_ns)
    assert first[0]["files"]["coco_results"] == "coco_results.json" and rewritten


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_box_rows_give_one_row_per_box_beside_the_row_per_image(tmp_path: Path, fmt: str) -> None:
    photos(tmp_path / "photos", 3)
    module = ObjectDetector(net=BoxesFromPixels(), box_rows=True, class_names=["bg", "a", "b"])
    writer = PredictionWriter(tmp_path / "out", format=fmt, fsync=False)
    data = ImageDataModule(tmp_path / "photos", batch_size=2, num_workers=0, preprocessing=module.preprocessing)
    L.Trainer(accelerator="cpu", logger=False, callbacks=[writer], enable_progress_bar=False).predict(
        module, datamodule=data, return_predictions=False
    )
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["files"]["boxes"] == f"boxes.{fmt}"
    if fmt == "csv":
        import csv

        with (tmp_path / "out" / "predictions.csv").open(newline="") as f:
            images = [{k: json.loads(v) if v[:1] == "[" else v for k, v in r.items()} for r in csv.DictReader(f)]
        with (tmp_path / "out" / "boxes.csv").open(newline="") as f:
            boxes = list(csv.DictReader(f))
    else:
        import pyarrow.parquet as pq

        images = pq.read_table(tmp_path / "out" / "predictions.parquet").to_pylist()
        boxes = pq.read_table(tmp_path / "out" / "boxes.parquet").to_pylist()
    flat = [
        (int(r["index"]), b, s, lb, n)
        for r in images
        for b, s, lb, n in zip(*(r[k] for k in ("boxes", "scores", "labels", "names")), strict=True)
    ]
    assert len(boxes) == len(flat) == 8  # 3 + 2 + 3: the wide photos have a third box
    for got, (index, box, score, label, name) in zip(boxes, flat, strict=True):
        assert int(got["index"]) == index and int(got["label"]) == label and got["name"] == name
        assert [float(got[k]) for k in ("x1", "y1", "x2", "y2")] == pytest.approx(box)
        assert float(got["score"]) == pytest.approx(score)


def _resized_reference(net: torch.nn.Module, path: Path, resize: int, max_size: int) -> tuple[dict, float, float]:
    """The detector on the image resized by torchvision (shorter side to ``resize``, longer at most ``max_size``),
    its boxes scaled back to the image's pixels per axis; with the two scales (input over image)."""
    from torchvision.transforms.functional import resize as tv_resize

    image = upright(path)
    h, w = image.shape[1:]
    scale = min(resize / min(h, w), max_size / max(h, w))
    ih, iw = round(h * scale), round(w * scale)
    with torch.no_grad():
        ref = dict(net([tv_resize(image, [ih, iw], antialias=True)])[0])
    ref["boxes"] = ref["boxes"] * torch.tensor([w / iw, h / ih, w / iw, h / ih])
    return ref, iw / w, ih / h


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_resized_by_the_config_equals_torchvision_on_the_resized_photo_with_boxes_scaled_back(tmp_path: Path) -> None:
    paths = photos(tmp_path / "photos", 4)
    weights = seeded(DETECTOR, DETECTOR_KWARGS, tmp_path / "w.pt")
    net = reference_net(DETECTOR, DETECTOR_KWARGS, weights)
    expected = [_resized_reference(net, p, 100, 130) for p in paths]
    module = ObjectDetector(factory=DETECTOR, factory_kwargs=DETECTOR_KWARGS, weights=weights, resize=100, max_size=130)
    _predict(module, tmp_path / "photos", tmp_path / "out", batch_size=1)
    rows = _rows(tmp_path / "out")
    for row, p, (ref, sx, sy) in zip(rows, paths, expected, strict=True):
        assert (row["height"], row["width"]) == tuple(upright(p).shape[1:])  # the original image's
        assert row["scale_x"] == pytest.approx(sx) and row["scale_y"] == pytest.approx(sy) and sx != 1
        assert len(ref["boxes"]) > 0
        _assert_same(row, ref)


def test_resized_boxes_and_masks_come_back_in_the_images_pixels(tmp_path: Path) -> None:
    """A net that places boxes and masks from its input's size: resized to 60 on the shorter side (max 70), they
    come back scaled per axis, masks resized bilinearly to the image's size before the threshold."""
    import torch.nn.functional as F

    paths = photos(tmp_path / "photos", 4)
    net = BoxesFromPixels(masks=True)
    module = ObjectDetector(net=net, resize=60, max_size=70, coco_results=True)
    _predict(module, tmp_path / "photos", tmp_path / "out", batch_size=2)
    for row, p in zip(_rows(tmp_path / "out"), paths, strict=True):
        ref, sx, sy = _resized_reference(net, p, 60, 70)
        h, w = upright(p).shape[1:]
        assert row["scale_x"] == pytest.approx(sx) and row["scale_y"] == pytest.approx(sy)
        _assert_same(row, ref, atol=1e-4)
        masks = F.interpolate(ref["masks"], size=(h, w), mode="bilinear", align_corners=False)[:, 0] >= 0.5
        for rle, mask in zip(row["masks"], masks, strict=True):
            assert np.array_equal(coco.decode_mask(json.loads(rle)), mask.numpy())  # at the image's own size
    with pytest.raises(ConfigError, match=r"^model\.resize=0: must be at least 1 pixel"):
        ObjectDetector(net=net, resize=0)


class CallSizes(BoxesFromPixels):
    """Records how many images each call of the network gets."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        self.calls.append(len(images))
        return super().forward(images)


@pytest.mark.parametrize(("per_call", "calls"), [(None, [5, 2]), (2, [2, 2, 1, 2]), ("auto", [1] * 7)])
def test_images_per_call_splits_each_batch_and_keeps_its_order(tmp_path: Path, per_call: Any, calls: list) -> None:
    photos(tmp_path / "photos", 7)
    net = CallSizes()
    _predict(ObjectDetector(net=net, images_per_call=per_call), tmp_path / "photos", tmp_path / "out", batch_size=5)
    assert net.calls == calls  # auto: one image per call on the CPU
    reference = BoxesFromPixels()
    rows = _rows(tmp_path / "out")
    assert [r["index"] for r in rows] == list(range(7))
    with torch.no_grad():
        for row in rows:
            _assert_same(row, reference([upright(tmp_path / row["path"])])[0])
    with pytest.raises(ConfigError, match=r"^model\.images_per_call=0: must be at least 1"):
        ObjectDetector(net=net, images_per_call=0)


def test_max_size_alone_shrinks_only_the_large_images() -> None:
    module = ObjectDetector(net=BoxesFromPixels(), max_size=150)
    assert module._input_size((120, 160)) == (112, 150)
    assert module._input_size((100, 140)) == (100, 140)
    assert ObjectDetector(net=BoxesFromPixels(), resize=60)._input_size((120, 160)) == (60, 80)
