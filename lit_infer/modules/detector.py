"""ObjectDetector: any network with torchvision's detection contract, whole images in, boxes in their pixels out."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import SumMetric
from typing_extensions import override

import lit_infer.modules.coco as coco
from lit_infer.errors import ConfigError
from lit_infer.modules.base import PredictionModule
from lit_infer.modules.box_rows import box_chunks
from lit_infer.modules.classifier import _names, _read_class_names
from lit_infer.modules.outputs import describe_output
from lit_infer.preprocessing import Preprocessing
from lit_infer.records import Batch, Predictions

WHOLE_IMAGES = Preprocessing(crop_mode="none", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
"""Whole images at their own sizes, as ``to_tensor`` gives them (values in [0, 1]): the detector resizes and
normalises them itself, as it was trained to (torchvision's ``GeneralizedRCNNTransform``)."""


class ObjectDetector(PredictionModule):
    """Detect objects: per image its boxes (x1, y1, x2, y2 in the original image's pixels, after EXIF rotation),
    scores and labels, one row per image with list columns.

    The network takes a list of C x H x W float images in [0, 1] (each at its own size) and returns one dict per
    image with ``boxes``, ``scores``, ``labels`` and optionally ``masks`` (N x 1 x H x W probabilities) and
    ``keypoints`` (N x K x 3), as torchvision's detectors do. Columns written: ``height``, ``width``, ``boxes``,
    ``scores``, ``labels``, ``names`` (with class names), ``masks`` (COCO RLE, one JSON string per box) and
    ``keypoints``, when the network gives them.

    Example::

        module = ObjectDetector(
            factory="torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn",
            factory_kwargs={"weights": None, "weights_backbone": None, "num_classes": 91},
            score_threshold=0.5,
        )

    Args:
        score_threshold: Keep boxes scoring at least this (on top of the network's own threshold).
        max_detections: Keep at most this many boxes per image, the highest scoring. ``None``: all.
        class_names: Names by label (a list, or a text file with one name per line). ``None``: the categories of
            ``annotations``, when given.
        mask_threshold: Mask probabilities at or above this are the object (torchvision's Mask R-CNN uses 0.5).
        box_rows: Also write ``boxes.<format>`` beside the predictions: one row per box (``index``, ``path``, ``x1``,
            ``y1``, ``x2``, ``y2``, ``score``, ``label``, and ``name`` with class names), made from the merged table.
        coco_results: Also write ``coco_results.json`` beside the predictions: COCO's results format (``image_id``,
            ``category_id``, ``bbox`` as x, y, w, h, ``score``, ``segmentation`` as RLE), loadable by
            ``COCO.loadRes``. ``image_id`` is the image's id in ``annotations``, else its index.
        resize: Resize each image before the network so that its shorter side is this many pixels (bilinear,
            antialiased, on the device), keeping its aspect ratio; the scale is written per image (``scale_x``,
            ``scale_y``: the network's input over the image, per axis) and boxes, masks and keypoints are mapped back
            to the original image's pixels. ``None``: the image as it is (a torchvision detector resizes it itself).
        max_size: With ``resize``: the longer side at most this (the smaller scale wins, as in torchvision's
            ``GeneralizedRCNNTransform``). Alone: images with a longer side above it are shrunk to it, others kept.
        images_per_call: Images of a batch per call of the network. ``None``: the whole batch (padded to its largest
            image by a torchvision detector: the fast way on a GPU). ``auto``: one on a CPU, where a list of 8 photos
            ran at 0.6-0.8x the images/s of one at a time (BENCHMARKS.md), the whole batch elsewhere.
        annotations: A COCO ``instances.json`` for the same images (matched by file name): mAP and mAP@50 through
            torchmetrics' ``MeanAveragePrecision`` in ``summary.json``. Needs pycocotools (``pip install
            'lit_infer[detection]'``) or ``faster-coco-eval``.
        **kwargs: Everything :class:`PredictionModule` takes (``net``/``factory``, ``weights``, ...).
            ``preprocessing`` defaults to whole images at their own sizes in [0, 1].
    """

    def __init__(
        self,
        score_threshold: float = 0.0,
        max_detections: int | None = None,
        class_names: list[str] | str | None = None,
        mask_threshold: float = 0.5,
        box_rows: bool = False,
        coco_results: bool = False,
        annotations: str | None = None,
        resize: int | None = None,
        max_size: int | None = None,
        images_per_call: int | Literal["auto"] | None = "auto",
        **kwargs: Any,
    ) -> None:
        if kwargs.get("preprocessing") is None:
            kwargs["preprocessing"] = WHOLE_IMAGES
        # The detector batches the images itself: its convolutions see its own padded NCHW batch.
        kwargs.setdefault("channels_last", False)
        super().__init__(**kwargs)
        if max_detections is not None and max_detections < 1:
            raise ConfigError("model.max_detections", max_detections, "must be at least 1", "Use null for all boxes")
        for key, value in (("model.resize", resize), ("model.max_size", max_size)):
            if value is not None and value < 1:
                raise ConfigError(key, value, "must be at least 1 pixel", "Use null to keep the image's size")
        if isinstance(images_per_call, int) and images_per_call < 1:
            raise ConfigError(
                "model.images_per_call", images_per_call, "must be at least 1", "Use a count, auto or null"
            )
        self.images_per_call = images_per_call
        self.resize = resize
        self.max_size = max_size
        self.score_threshold = float(score_threshold)
        self.max_detections = max_detections
        self.mask_threshold = float(mask_threshold)
        self.class_names = _read_class_names(class_names)
        self.coco_results = coco_results
        self.box_rows = box_rows
        self.annotations_path = annotations
        self.annotations = coco.read_annotations(annotations) if annotations is not None else None
        if self.class_names is None and self.annotations is not None and self.annotations.categories:
            self.class_names = self.annotations.class_names()
        self.metric: Any = None
        if self.annotations is not None:  # made here, so that a rank with no batch still joins the sync at the end
            self.metric = _mean_average_precision()
            self.num_annotated = SumMetric(nan_strategy="disable")

    @override
    def output_options(self) -> dict[str, Any]:
        return {
            "score_threshold": self.score_threshold,
            "max_detections": self.max_detections,
            "class_names": self.class_names,
            "mask_threshold": self.mask_threshold,
            "resize": self.resize,
            "max_size": self.max_size,
            "images_per_call": self.images_per_call,  # a list is padded to its largest image: boxes move a little
        }

    @override
    def setup(self, stage: str) -> None:
        layout = self.plan.fingerprint.get("output", {}).get("layout") if self.plan is not None else None
        asked = "model.coco_results" if self.coco_results else "model.box_rows" if self.box_rows else None
        if asked is not None and layout == "parts":
            raise ConfigError(
                asked,
                True,
                "is made from the single merged file, and writer.layout=parts keeps parts",
                f"Use writer.layout=single, or set {asked}=false",
            )

    def derived_outputs(
        self, output_dir: str, files: dict[str, str], write_table: Callable[..., str]
    ) -> dict[str, str]:
        """Called by finalize on rank 0 with the merged files: ``coco_results.json`` and ``boxes.<format>``, when
        asked for (``write_table(filename, schema, chunks)`` writes a table in the run's format)."""
        out = {}
        if self.coco_results:
            path = os.path.join(output_dir, "coco_results.json")
            out["coco_results"] = coco.write_results(files["table"], path, self._image_id)
        if self.box_rows:
            schema = {k: (np.dtype(np.float32), ()) for k in ("x1", "y1", "x2", "y2", "score")}
            schema["label"] = (np.dtype(np.int64), ())
            if self.class_names is not None:
                schema["name"] = (np.dtype("<U1"), ())
            out["boxes"] = write_table("boxes", schema, box_chunks(files["table"], self.class_names is not None))
        return out

    def _image_id(self, row: Mapping[str, Any]) -> int:
        found = self.annotations.image_id(row["path"]) if self.annotations is not None else None
        return int(row["index"]) if found is None else found

    @override
    def preprocess(self, batch: Batch) -> list[torch.Tensor]:  # type: ignore[override]
        """Each whole image on the device as ``to_tensor`` makes it: float, divided by 255, at its own size, or
        resized as torchvision's ``resize(img, size, antialias=True)`` does when ``resize``/``max_size`` ask."""
        out = []
        for img in batch.image_list():
            # contiguous: C x H x W as to_tensor lays it out (a stacked batch's images are channels_last views)
            x = img.to(self.device, non_blocking=True).contiguous().float().div(255)
            size = self._input_size(tuple(x.shape[-2:]))
            if size != tuple(x.shape[-2:]):  # on the device: a large photo crosses to it once, as uint8
                x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
            out.append(x.to(self.input_dtype))
        return out

    @override
    def forward(self, images: list[torch.Tensor]) -> Any:  # type: ignore[override]
        """The network on the batch's images, ``images_per_call`` at a time; the detections in the batch's order."""
        n = self.images_per_call
        if n == "auto":
            n = 1 if self.device.type == "cpu" else None
        if n is None or n >= len(images):
            return super().forward(images)
        out: list[Any] = []
        for start in range(0, len(images), n):
            part = super().forward(images[start : start + n])
            if not isinstance(part, (list, tuple)):
                return part  # not the detection contract: postprocess refuses it in one line
            out.extend(part)
        return out

    def _input_size(self, size: tuple[int, ...]) -> tuple[int, int]:
        """The network's input size for an image of ``size`` (height, width): ``resize`` on the shorter side,
        ``max_size`` on the longer, the smaller scale winning; rounded to whole pixels."""
        h, w = int(size[0]), int(size[1])
        if self.resize is None and self.max_size is None:
            return h, w
        scale = self.resize / min(h, w) if self.resize is not None else 1.0
        if self.max_size is not None:
            scale = min(scale, self.max_size / max(h, w))
        return max(1, round(h * scale)), max(1, round(w * scale))

    @override
    def postprocess(self, outputs: Any, batch: Batch) -> Predictions:
        detections = self._check(outputs, len(batch))
        sizes = [tuple(img.shape[-2:]) for img in batch.image_list()]
        inputs = [self._input_size(size) for size in sizes]
        kept = [self._to_image(self._keep(d), size, i) for d, size, i in zip(detections, sizes, inputs, strict=True)]
        columns: dict[str, Any] = {
            "height": torch.tensor([h for h, _ in sizes], dtype=torch.int64),
            "width": torch.tensor([w for _, w in sizes], dtype=torch.int64),
            "boxes": [d["boxes"].float() for d in kept],
            "scores": [d["scores"].float() for d in kept],
            "labels": [d["labels"].long() for d in kept],
        }
        if self.resize is not None or self.max_size is not None:
            ratios = [(i[1] / s[1], i[0] / s[0]) for s, i in zip(sizes, inputs, strict=True)]
            columns["scale_x"] = torch.tensor([x for x, _ in ratios], dtype=torch.float64)  # exact: the input's size
            columns["scale_y"] = torch.tensor([y for _, y in ratios], dtype=torch.float64)  # is round(side x scale)
        if "masks" in detections[0]:
            columns["masks"] = [self._rle(d["masks"]) for d in kept]
        if "keypoints" in detections[0]:
            columns["keypoints"] = [d["keypoints"].float() for d in kept]
        if self.metric is not None:
            self._update_metric(kept, batch)
        finish = self._add_names if self.class_names else None
        return Predictions(batch.indices.numpy(), batch.paths, columns, batch.failures, finish=finish)

    def _check(self, outputs: Any, n: int) -> list[Mapping[str, torch.Tensor]]:
        ok = isinstance(outputs, (list, tuple)) and len(outputs) == n
        ok = ok and all(isinstance(d, Mapping) and {"boxes", "scores", "labels"} <= set(d) for d in outputs)
        if not ok:
            raise ConfigError(
                "model.net",
                type(self.net).__name__,
                f"ObjectDetector needs one dict with boxes, scores and labels per image; the network returned "
                f"{describe_output(outputs)} for {n} images",
                "Use a torchvision-style detector, or PredictionModule for other outputs",
            )
        return list(outputs)

    def _keep(self, d: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Boxes at or above ``score_threshold``, the ``max_detections`` best, in the network's own order
        (torchvision's is by decreasing score)."""
        scores = d["scores"]
        keep = torch.nonzero(scores >= self.score_threshold).flatten()
        if self.max_detections is not None and len(keep) > self.max_detections:
            best = scores[keep].argsort(descending=True, stable=True)[: self.max_detections]
            keep = keep[best.sort().values]
        return {k: v[keep] for k, v in d.items() if isinstance(v, torch.Tensor)}

    @staticmethod
    def _to_image(d: dict[str, torch.Tensor], size: tuple, input_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Boxes, keypoints and masks from the network's input (``input_size``) back to the image's pixels, per axis
        as torchvision's ``resize_boxes`` maps them (masks resized bilinearly, before their threshold)."""
        (h, w), (ih, iw) = size, input_size
        if (h, w) == (ih, iw):
            return d
        d = dict(d)
        ratios = torch.tensor([w / iw, h / ih], device=d["boxes"].device)
        d["boxes"] = d["boxes"] * ratios.repeat(2).to(d["boxes"].dtype)
        if "keypoints" in d:
            d["keypoints"] = torch.cat([d["keypoints"][..., :2] * ratios, d["keypoints"][..., 2:]], dim=-1)
        if "masks" in d and len(d["masks"]):
            d["masks"] = F.interpolate(d["masks"].float(), size=(h, w), mode="bilinear", align_corners=False)
        elif "masks" in d:
            d["masks"] = d["masks"].new_zeros((0, 1, h, w))
        return d

    def _rle(self, masks: torch.Tensor) -> np.ndarray:
        binary = (masks[:, 0] >= self.mask_threshold).cpu().numpy()
        return np.asarray([json.dumps(coco.encode_mask(m)) for m in binary], dtype=str)

    def _add_names(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """On the host: ``names`` after ``labels``, the class name of each box."""
        assert self.class_names is not None
        names = np.asarray(self.class_names, dtype=str)
        out = {}
        for key, column in columns.items():
            out[key] = column
            if key == "labels":
                out["names"] = np.empty(len(column), dtype=object)
                for i, labels in enumerate(column):
                    out["names"][i] = _names(names, labels)
        return out

    def _update_metric(self, kept: list[dict[str, torch.Tensor]], batch: Batch) -> None:
        assert self.annotations is not None
        preds, targets = [], []
        for d, path in zip(kept, batch.paths, strict=True):
            image_id = self.annotations.image_id(path)
            if image_id is None:  # not annotated: not evaluated (counted in num_annotated)
                continue
            preds.append({"boxes": d["boxes"].float(), "scores": d["scores"].float(), "labels": d["labels"].long()})
            targets.append(
                {
                    "boxes": torch.as_tensor(self.annotations.boxes[image_id], device=self.device),
                    "labels": torch.as_tensor(self.annotations.labels[image_id], device=self.device),
                    "iscrowd": torch.as_tensor(self.annotations.crowd[image_id], device=self.device),
                }
            )
        if preds:
            self.metric.update(preds, targets)
            self.num_annotated.update(torch.tensor(float(len(preds)), device=self.device))

    @override
    def compute_metrics(self) -> dict[str, float]:
        if self.metric is None:
            return {}
        self.metrics_to_device(self.metric, self.num_annotated)
        num = int(self.num_annotated.compute().item())  # collective: every rank calls it
        if not num:
            return {"num_annotated": 0}
        values = _map_over_ranks(self.metric)
        return {"map": float(values["map"]), "map_50": float(values["map_50"]), "num_annotated": num}


def _mean_average_precision() -> Any:
    from torchmetrics.detection import MeanAveragePrecision

    for backend, module in (("pycocotools", "pycocotools"), ("faster_coco_eval", "faster_coco_eval")):
        if importlib.util.find_spec(module) is not None:
            # Synced by _map_over_ranks: torchmetrics' own sync hangs when a rank has no detections at all (an
            # empty state is gathered as a 1-d tensor beside the others' N x 4 boxes).
            return MeanAveragePrecision(iou_type="bbox", backend=backend, sync_on_compute=False)
    raise ConfigError(
        "model.annotations",
        "instances.json",
        "mAP needs pycocotools or faster-coco-eval, and neither is installed",
        "pip install 'lit_infer[detection]' (or pycocotools)",
    )


def _map_over_ranks(metric: Any) -> dict[str, Any]:
    """COCO's evaluation once over every rank's images. A collective: each rank's states (lists of per-image
    tensors, empty on a rank that read no annotated image) are gathered as objects, in rank order, into one metric."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return metric.compute()
    local = {name: [t.cpu() for t in state] for name, state in metric.metric_state.items()}
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    merged = _mean_average_precision()
    merged.update([], [])  # counted as updated: its compute() then warns of nothing
    for name in local:
        setattr(merged, name, [t for states in gathered for t in states[name]])
    return merged.compute()
