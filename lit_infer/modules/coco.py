"""COCO's formats, in numpy: run-length encoded masks, results files, and ground truth read from ``instances.json``.

Pure functions, so that they are tested on their own against pycocotools where it is installed; nothing here needs
it. RLE is COCO's: the mask read column by column (Fortran order), alternating run lengths starting with a run of
zeros, compressed to a string as pycocotools' ``rleToString`` does (5 bits per character, each count but the first
two stored as the difference from the count two before).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lit_infer.atomic import atomic_open
from lit_infer.errors import ConfigError


def rle_counts(mask: np.ndarray) -> np.ndarray:
    """Run lengths of a binary H x W mask in COCO's order: column by column, starting with a run of zeros."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return np.zeros(0, dtype=np.int64)
    bounds = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [flat.size]])
    counts = np.diff(bounds)
    return np.concatenate([[0], counts]) if flat[0] else counts


def counts_to_string(counts: Iterable[int]) -> str:
    """pycocotools' ``rleToString``: LEB128-like, 5 bits a character from ``'0'`` (48) on, deltas after the second."""
    counts = [int(c) for c in counts]
    out = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift, as C's on a signed long
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr((c | 0x20 if more else c) + 48))
    return "".join(out)


def string_to_counts(s: str) -> list[int]:
    """pycocotools' ``rleFrString``: the inverse of :func:`counts_to_string`."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        counts.append(x + counts[-2] if len(counts) > 2 else x)
    return counts


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """A binary H x W mask as COCO RLE: ``{"size": [h, w], "counts": "<compressed string>"}``."""
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts_to_string(rle_counts(mask))}


def decode_mask(rle: Mapping[str, Any]) -> np.ndarray:
    """A COCO RLE (compressed string or list of counts) back to a uint8 H x W mask."""
    h, w = rle["size"]
    counts = rle["counts"]
    counts = string_to_counts(counts) if isinstance(counts, str) else list(counts)
    values = np.zeros(len(counts), dtype=np.uint8)
    values[1::2] = 1
    return np.repeat(values, counts).reshape((h, w), order="F")


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def results(image_id: int, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, masks: Any = None) -> list:
    """One image's detections as COCO results entries (``bbox`` as x, y, w, h; ``segmentation`` as RLE)."""
    out = []
    for i, (box, score, label) in enumerate(zip(xyxy_to_xywh(boxes), scores, labels, strict=True)):
        entry = {"image_id": int(image_id), "category_id": int(label), "bbox": [float(v) for v in box]}
        entry["score"] = float(score)
        if masks is not None:
            entry["segmentation"] = masks[i] if isinstance(masks[i], Mapping) else json.loads(masks[i])
        out.append(entry)
    return out


@dataclass
class Annotations:
    """Ground truth from a COCO ``instances.json``: per image (matched by file name) its boxes (x1, y1, x2, y2),
    category ids and crowd flags, and the category names by id."""

    path: str
    ids: dict[str, int] = field(default_factory=dict)
    """File name (as in the file, and its base name) -> image id."""
    boxes: dict[int, np.ndarray] = field(default_factory=dict)
    labels: dict[int, np.ndarray] = field(default_factory=dict)
    crowd: dict[int, np.ndarray] = field(default_factory=dict)
    categories: dict[int, str] = field(default_factory=dict)

    def image_id(self, path: str) -> int | None:
        """The id of the image at ``path``: its file name in the annotations, whole or as a trailing part."""
        norm = path.replace(os.sep, "/")
        if norm in self.ids:
            return self.ids[norm]
        parts = norm.split("/")
        for k in range(2, len(parts) + 1):
            found = self.ids.get("/".join(parts[-k:]))
            if found is not None:
                return found
        return self.ids.get(parts[-1])

    def class_names(self) -> list[str]:
        """Names indexed by category id (torchvision's COCO label space), ``N/A`` where no category has the id."""
        top = max(self.categories, default=-1)
        return [self.categories.get(i, "N/A") for i in range(top + 1)]


def read_annotations(path: str, key: str = "model.annotations") -> Annotations:
    """Read a COCO ``instances.json``: images, annotations (``bbox`` x, y, w, h) and categories."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            key, path, f"cannot be read as COCO JSON ({type(exc).__name__})", "Give instances.json"
        ) from None
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise ConfigError(key, path, "has no 'images' and 'annotations'", "Give a COCO-format instances.json")
    out = Annotations(path)
    for image in data["images"]:
        name = str(image["file_name"]).replace("\\", "/")
        out.ids[name] = int(image["id"])
        out.ids.setdefault(name.rsplit("/", 1)[-1], int(image["id"]))
    per_image: dict[int, list[dict[str, Any]]] = {i: [] for i in out.ids.values()}
    for ann in data["annotations"]:
        per_image.setdefault(int(ann["image_id"]), []).append(ann)
    for image_id, anns in per_image.items():
        xywh = np.asarray([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        out.boxes[image_id] = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        out.labels[image_id] = np.asarray([a["category_id"] for a in anns], dtype=np.int64)
        out.crowd[image_id] = np.asarray([a.get("iscrowd", 0) for a in anns], dtype=np.int64)
    out.categories = {int(c["id"]): str(c["name"]) for c in data.get("categories", [])}
    return out


def table_rows(path: str) -> Iterator[dict[str, Any]]:
    """The rows of a predictions table (jsonl, parquet or csv with JSON cells), one at a time: memory stays flat."""
    if path.endswith(".jsonl"):
        with open(path, encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)
    elif path.endswith(".parquet"):
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            yield from batch.to_pylist()
    else:
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                yield {k: json.loads(v) if v[:1] == "[" else v for k, v in row.items()}


def write_results(table: str, out: str, image_id: Callable[[dict[str, Any]], int]) -> str:
    """COCO's results file from a detector's predictions table: a JSON list, written entry by entry, atomically."""
    with atomic_open(out, "w", encoding="utf-8") as f:
        f.write("[")
        first = True
        for row in table_rows(table):
            for entry in results(image_id(row), row["boxes"], row["scores"], row["labels"], row.get("masks")):
                f.write(("" if first else ",\n") + json.dumps(entry))
                first = False
        f.write("]\n")
    return out
