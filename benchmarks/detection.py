"""Detection throughput: lit_infer's ObjectDetector (whole images batched as lists, decoded in workers) against the
plain per-image loop users write with torchvision (open, exif_transpose, to_tensor, model([x]) one at a time).

    python -m benchmarks.detection --images 48 --batch-size 8 --workers 1 --repeats 2

Random weights (nothing is downloaded), ``box_score_thresh=0`` so that every image has its 100 boxes to write.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageOps

FACTORY = "torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn"
KWARGS = {"weights": None, "weights_backbone": None, "num_classes": 91, "box_score_thresh": 0.0}


def photos(root: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        w, h = (640, 480) if i % 3 else (480, 640)
        img = Image.fromarray(rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)).resize((w, h))
        paths.append(root / f"{i:05d}.jpg")
        img.save(paths[-1], quality=90)
    return paths


def plain_loop(net: torch.nn.Module, paths: list[Path]) -> float:
    from torchvision.transforms.functional import to_tensor

    start = time.perf_counter()
    with torch.inference_mode():
        for p in paths:
            with Image.open(p) as img:
                net([to_tensor(ImageOps.exif_transpose(img).convert("RGB"))])
    return len(paths) / (time.perf_counter() - start)


def lit_infer_run(weights: Path, source: Path, out: Path, batch_size: int, workers: int) -> float:
    from lit_infer import ImageDataModule, ObjectDetector, PredictionWriter

    module = ObjectDetector(factory=FACTORY, factory_kwargs=KWARGS, weights=weights)
    data = ImageDataModule(source, batch_size=batch_size, num_workers=workers, preprocessing=module.preprocessing)
    writer = PredictionWriter(out, format="parquet", overwrite=True, fsync=False)
    start = time.perf_counter()
    L.Trainer(accelerator="cpu", logger=False, callbacks=[writer], enable_progress_bar=False).predict(
        module, datamodule=data, return_predictions=False
    )
    wall = time.perf_counter() - start
    return writer.summary["num_predicted"] / wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from lit_infer.models import build_net

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "photos").mkdir()
        paths = photos(root / "photos", args.images)
        torch.manual_seed(0)
        net = build_net(None, FACTORY, KWARGS).eval()
        torch.save(net.state_dict(), root / "w.pt")
        plain_loop(net, paths[:2])  # warm-up
        # Alternated on a shared machine: what other processes take falls on both sides alike.
        runs: dict[str, list[float]] = {"plain_per_image_loop": [], "lit_infer": []}
        for _ in range(args.repeats):
            runs["plain_per_image_loop"].append(round(plain_loop(net, paths), 3))
            out = root / "out"
            runs["lit_infer"].append(
                round(lit_infer_run(root / "w.pt", root / "photos", out, args.batch_size, args.workers), 3)
            )
        results = {
            **runs,
            "images": args.images,
            "batch_size": args.batch_size,
            "workers": args.workers,
            "threads": torch.get_num_threads(),
        }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
