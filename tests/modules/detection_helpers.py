"""Photos for the detector and segmenter tests: JPEGs of several sizes, some rotated by their EXIF orientation, and
torchvision's own models with seeded random weights (pretrained weights cannot be downloaded here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

DETECTOR = "torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn"
# Random weights score every class near 1/91: the network's own threshold (0.05) would keep no box at all.
# Small inputs (min_size) keep it fast on a shared CPU.
DETECTOR_KWARGS = {
    "weights": None,
    "weights_backbone": None,
    "num_classes": 91,
    "box_score_thresh": 0.0,
    "min_size": 96,
    "max_size": 160,
    "box_detections_per_img": 30,
}
SEGMENTER = "torchvision.models.segmentation.lraspp_mobilenet_v3_large"
SEGMENTER_KWARGS = {"weights": None, "weights_backbone": None, "num_classes": 5}


def photos(root: Path, n: int = 5) -> list[Path]:
    """``n`` JPEG photos of shapes on gradients, of different sizes; every other one stored sideways with an EXIF
    orientation (6, 3, 8) that a viewer (and ``exif_transpose``) turns upright."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    sizes = [(160, 120), (120, 160), (200, 130), (144, 144), (170, 110), (130, 180)]
    paths = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255 // w, y * 255 // h, (x + y) * 127 // (w + h)], axis=-1).astype(np.uint8)
        img = Image.fromarray(base)
        draw = ImageDraw.Draw(img)
        for _ in range(3):
            x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
            colour = tuple(int(c) for c in rng.integers(0, 255, 3))
            draw.ellipse([x0, y0, x0 + 30 + i * 2, y0 + 25], fill=colour)
        path = root / f"photo_{i:02d}.jpg"
        orientation = (6, 3, 8)[i // 2 % 3] if i % 2 else 1
        if orientation != 1:
            img = img.transpose(
                {6: Image.Transpose.ROTATE_90, 3: Image.Transpose.ROTATE_180, 8: Image.Transpose.ROTATE_270}[
                    orientation
                ]
            )
            exif = Image.Exif()
            exif[0x0112] = orientation
            img.save(path, quality=92, exif=exif)
        else:
            img.save(path, quality=92)
        paths.append(path)
    return paths


def seeded(factory: str, kwargs: dict, path: Path, seed: int = 0) -> Path:
    """The factory's network with seeded random weights, saved as a state_dict file."""
    from lit_infer.models import build_net

    torch.manual_seed(seed)
    net = build_net(None, factory, kwargs)
    head = getattr(getattr(net, "roi_heads", None), "box_predictor", None)
    if head is not None:  # spread the class scores (a fresh head scores every class alike: ties everywhere)
        head.cls_score.weight.data.normal_(0, 0.2)
        head.cls_score.bias.data.normal_(0, 1.0)
    torch.save(net.state_dict(), path)
    return path


def reference_net(factory: str, kwargs: dict, weights: Path) -> torch.nn.Module:
    from lit_infer.models import build_net

    net = build_net(None, factory, kwargs)
    net.load_state_dict(torch.load(weights, weights_only=True))
    return net.eval()


def upright(path: Path) -> torch.Tensor:
    """The reference's input: ``to_tensor(exif_transpose(img).convert("RGB"))``."""
    from PIL import ImageOps
    from torchvision.transforms.functional import to_tensor

    with Image.open(path) as img:
        return to_tensor(ImageOps.exif_transpose(img).convert("RGB"))
