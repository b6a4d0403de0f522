"""Segmenter: per-pixel class scores in, one PNG class mask per image (at the image's own size) and a table row out."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchmetrics.classification import MulticlassJaccardIndex
from typing_extensions import override

from lit_infer.atomic import atomic_open
from lit_infer.errors import ConfigError
from lit_infer.modules.base import PredictionModule
from lit_infer.modules.classifier import _read_class_names
from lit_infer.modules.outputs import describe_output, select_output
from lit_infer.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from lit_infer.records import Batch, Predictions

WHOLE_IMAGES = Preprocessing(crop_mode="none", mean=IMAGENET_MEAN, std=IMAGENET_STD)
"""Whole images at their own sizes, normalised as torchvision's segmentation weights expect."""

MASKS_DIR = "masks"
PROBABILITIES_DIR = "probabilities"
IGNORE = 255
"""A label mask's value for pixels that count for no class (VOC's object boundaries)."""


class Segmenter(PredictionModule):
    """Segment images: the class of every pixel, as a PNG mask at the original image's size (after EXIF rotation).

    The network returns N x C x H x W class scores, or torchvision's ``{"out": ...}``. The argmax over C is resized
    back to each image's size (nearest) and written as ``masks/<index>.png`` (palette PNG, pixel value = class) in
    the output folder as soon as the batch is done; the table row holds the mask's path (``mask``), the image's
    ``height`` and ``width``, and ``pixels``, the pixel count of each class. The images of a batch that share a
    size run as one tensor (a camera's photos usually do); an image of a size of its own runs alone.

    Example::

        module = Segmenter(
            factory="torchvision.models.segmentation.lraspp_mobilenet_v3_large",
            factory_kwargs={"weights": None, "weights_backbone": None, "num_classes": 21},
        )

    Args:
        class_names: Names by class index (a list, or a text file with one name per line): per-class IoU keys.
        label_masks: A folder of PNG label masks (pixel value = class, 255 = ignored), matched to the images by
            file name without extension: mean IoU (``miou``) and per-class IoU (``iou_<class>``) through
            torchmetrics' ``MulticlassJaccardIndex``, synced across ranks, in ``summary.json``.
        probability_maps: Named classes (from ``class_names``) whose probability (softmax over the classes) is
            also written per image, as a grey PNG at the image's own size (resized back bilinearly when the network's
            output is smaller): ``probabilities/<class index>/<index>.png``, its path in column
            ``probability_<name>``. Pixel value = round(probability x 255), or x 65535 with 16 bits.
        probability_bits: 8 or 16 bits per pixel in the probability maps.
        **kwargs: Everything :class:`PredictionModule` takes (``net``/``factory``, ``weights``, ``output``...).
            ``preprocessing`` defaults to whole images normalised with ImageNet's mean and std.
    """

    def __init__(
        self,
        class_names: list[str] | str | None = None,
        label_masks: str | os.PathLike | None = None,
        probability_maps: list[str] | None = None,
        probability_bits: Literal[8, 16] = 8,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("preprocessing") is None:
            kwargs["preprocessing"] = WHOLE_IMAGES
        kwargs.setdefault("channels_last", False)
        super().__init__(**kwargs)
        if self.preprocessing.crop_mode != "none":
            raise ConfigError(
                "model.preprocessing.crop_mode",
                self.preprocessing.crop_mode,
                "would crop the image, and a mask covers the whole image",
                "Use crop_mode none (or leave model.preprocessing out)",
            )
        self.class_names = _read_class_names(class_names)
        self.label_masks = os.fspath(label_masks) if label_masks is not None else None
        if self.label_masks is not None and not os.path.isdir(self.label_masks):
            raise ConfigError("model.label_masks", self.label_masks, "is not a folder", "Give a folder of PNG masks")
        self._labels: dict[str, str] = {}
        if self.label_masks is not None:
            self._labels = {
                Path(n).stem: os.path.join(self.label_masks, n) for n in sorted(os.listdir(self.label_masks))
            }
        self.iou: MulticlassJaccardIndex | None = None
        self.iou_per_class: MulticlassJaccardIndex | None = None
        self.probability_maps = _named_classes(list(probability_maps or []), self.class_names)
        if probability_bits not in (8, 16):
            raise ConfigError("model.probability_bits", probability_bits, "is not 8 or 16", "Use 8 or 16")
        self.probability_bits = probability_bits

    @override
    def output_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"class_names": self.class_names, "masks": MASKS_DIR}
        if self.probability_maps:
            options["probability_maps"] = dict(self.probability_maps)
            options["probability_bits"] = self.probability_bits
        return options

    @override
    def setup(self, stage: str) -> None:
        if self.label_masks is not None:  # made here: a rank that gets no batch still joins the sync at the end
            n = self._num_classes()
            self.iou = MulticlassJaccardIndex(n, average="macro", ignore_index=IGNORE).to(self.device)
            self.iou_per_class = MulticlassJaccardIndex(n, average="none", ignore_index=IGNORE).to(self.device)
        if self.plan is not None and "://" in self.plan.output_dir:
            raise ConfigError(
                "writer.output_dir", self.plan.output_dir, "masks are written to a local folder", "Use a local path"
            )

    @override
    def preprocess(self, batch: Batch) -> list[torch.Tensor]:  # type: ignore[override]
        """Each image as ``normalize(to_tensor(img), mean, std)`` computes it, on the device, at its own size."""
        images = batch.image_list()
        mean = torch.tensor(self.preprocessing.mean, device=self.device).view(3, 1, 1)
        std = torch.tensor(self.preprocessing.std, device=self.device).view(3, 1, 1)
        dtype = self.input_dtype
        # contiguous: C x H x W as to_tensor lays it out (a stacked batch's images are channels_last views)
        return [img.to(self.device).contiguous().float().div(255).sub(mean).div(std).to(dtype) for img in images]

    @override
    def forward(self, images: list[torch.Tensor]) -> list[torch.Tensor]:  # type: ignore[override]
        """Class scores per image (C x H x W), in the batch's order: the images of each size run as one tensor."""
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            by_size.setdefault(tuple(image.shape), []).append(i)
        out: list[torch.Tensor] = [images[0]] * len(images)
        for positions in by_size.values():
            scores = self._scores(torch.stack([images[i] for i in positions]))
            for i, score in zip(positions, scores.unbind(0), strict=True):
                out[i] = score
        return out

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        out = self.run_net(x)
        if isinstance(out, dict) and self.output is None and "out" in out:
            out = out["out"]  # torchvision's segmentation models (``aux`` is for training)
        else:
            out = select_output(out, self.output)
        if not isinstance(out, torch.Tensor) or out.ndim != 4:
            raise ConfigError(
                "model.output",
                self.output,
                f"Segmenter needs N x classes x H x W scores; the network returned {describe_output(out)}",
                "Set model.output to the element that holds them",
            )
        return out

    @override
    def postprocess(self, outputs: list[torch.Tensor], batch: Batch) -> Predictions:  # type: ignore[override]
        assert self.plan is not None, "Segmenter writes its masks into the run's output folder: run it with a writer"
        folder = os.path.join(self.plan.output_dir, MASKS_DIR)
        os.makedirs(folder, exist_ok=True)
        images = batch.image_list()
        num_classes = outputs[0].shape[0]
        names, heights, widths, pixels = [], [], [], []
        maps: dict[str, list[str]] = {name: [] for name in self.probability_maps}
        for index, path, scores, image in zip(batch.indices.tolist(), batch.paths, outputs, images, strict=True):
            h, w = image.shape[-2:]
            for name, file in self._write_probabilities(scores, index, (h, w)).items():
                maps[name].append(file)
            mask = scores.argmax(0)
            if mask.shape != (h, w):  # a network whose output is smaller than its input: back to the image's size
                mask = F.interpolate(mask[None, None].float(), size=(h, w), mode="nearest")[0, 0].long()
            if self.iou is not None:
                self._update_iou(mask, path)
            host = mask.to(torch.uint8).cpu().numpy()
            name = f"{MASKS_DIR}/{index}.png"
            _write_png(host, os.path.join(self.plan.output_dir, name), num_classes)
            names.append(name)
            heights.append(h)
            widths.append(w)
            pixels.append(np.bincount(host.reshape(-1), minlength=num_classes)[:num_classes])
        columns = {
            "mask": np.asarray(names),
            "height": np.asarray(heights, dtype=np.int64),
            "width": np.asarray(widths, dtype=np.int64),
            "pixels": np.stack(pixels).astype(np.int64),
            **{f"probability_{name}": np.asarray(files) for name, files in maps.items()},
        }
        return Predictions(batch.indices.numpy(), batch.paths, columns, batch.failures)

    def _write_probabilities(self, scores: torch.Tensor, index: int, size: tuple[int, int]) -> dict[str, str]:
        """The softmax of the named classes, at the image's size, one grey PNG each; their paths by class name."""
        if not self.probability_maps:
            return {}
        if max(self.probability_maps.values()) >= scores.shape[0]:
            raise ConfigError(
                "model.probability_maps",
                list(self.probability_maps),
                f"names class {max(self.probability_maps.values())}, and the network gives {scores.shape[0]} classes",
                "Name classes the network has (model.class_names in the network's order)",
            )
        chosen = scores.float().softmax(0)[list(self.probability_maps.values())]
        if chosen.shape[-2:] != size:  # a network whose output is smaller than its input: back to the image's size
            chosen = F.interpolate(chosen[None], size=size, mode="bilinear", align_corners=False)[0]
        top = 2**self.probability_bits - 1
        dtype = torch.uint8 if self.probability_bits == 8 else torch.int32  # no uint16 arithmetic on every device
        levels = chosen.mul(top).round_().clamp_(0, top).to(dtype).cpu().numpy()
        out = {}
        assert self.plan is not None
        for (name, k), plane in zip(self.probability_maps.items(), levels, strict=True):
            file = f"{PROBABILITIES_DIR}/{k}/{index}.png"
            os.makedirs(os.path.join(self.plan.output_dir, PROBABILITIES_DIR, str(k)), exist_ok=True)
            img = Image.fromarray(plane if self.probability_bits == 8 else plane.astype(np.uint16))
            with atomic_open(os.path.join(self.plan.output_dir, file), "wb", durable=False) as f:
                img.save(f, format="PNG")
            out[name] = file
        return out

    def _num_classes(self) -> int:
        if self.class_names is not None:
            return len(self.class_names)
        raise ConfigError(
            "model.class_names", None, "mean IoU needs the number of classes", "Give model.class_names with label_masks"
        )

    def _update_iou(self, mask: torch.Tensor, path: str) -> None:
        label_path = self._labels.get(Path(path).stem)
        if label_path is None:
            return
        with Image.open(label_path) as img:
            target = torch.from_numpy(np.array(img, dtype=np.int64)).to(mask.device)
        if target.shape != mask.shape:
            raise ConfigError(
                "model.label_masks",
                label_path,
                f"is {tuple(target.shape)} for an image of {tuple(mask.shape)}",
                "Give masks of the images' own sizes",
            )
        assert self.iou is not None and self.iou_per_class is not None
        self.iou.update(mask.reshape(1, -1), target.reshape(1, -1))
        self.iou_per_class.update(mask.reshape(1, -1), target.reshape(1, -1))

    @override
    def compute_metrics(self) -> dict[str, float]:
        if self.iou is None:
            return {}
        assert self.iou is not None and self.iou_per_class is not None
        self.metrics_to_device(self.iou, self.iou_per_class)
        miou = float(self.iou.compute())
        per_class = self.iou_per_class.compute().tolist()
        with self.iou_per_class.sync_context():  # every rank's pixels (compute() gave the local state back)
            present = (self.iou_per_class.confmat.sum(0) + self.iou_per_class.confmat.sum(1)).tolist()
        names = self.class_names or [str(i) for i in range(len(per_class))]
        return {"miou": miou, **{f"iou_{n}": float(v) for n, v, p in zip(names, per_class, present, strict=True) if p}}


def _named_classes(names: list[str], class_names: list[str] | None) -> dict[str, int]:
    """``probability_maps``' names with their class indices; an unknown name is refused in one line."""
    if names and class_names is None:
        raise ConfigError(
            "model.probability_maps", names, "names classes, and model.class_names is not set", "Give model.class_names"
        )
    out = {}
    for name in names:
        if class_names is None or name not in class_names:
            raise ConfigError(
                "model.probability_maps", name, "is not in model.class_names", f"Use some of {class_names}"
            )
        out[name] = class_names.index(name)
    return out


def palette(num_classes: int) -> list[int]:
    """PASCAL VOC's colour map (the usual one for class masks), for ``num_classes`` entries."""
    return _VOC_COLOURS[: 3 * max(num_classes, 1)]


def _voc_colours() -> list[int]:
    colours = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colours += [r, g, b]
    return colours


_VOC_COLOURS = _voc_colours()  # once: made per mask, the 2,048-step loop cost more than writing a small PNG


def _write_png(mask: np.ndarray, path: str, num_classes: int) -> None:
    """The class mask as a palette PNG, atomically: a killed run leaves no half-written mask under its name."""
    img = Image.fromarray(mask, mode="P")
    img.putpalette(palette(num_classes))
    with atomic_open(path, "wb", durable=False) as f:
        img.save(f, format="PNG")
