"""A detector-shaped network of our own: a list with one dict per image, a varying number of boxes in each.

Importable by class path from a child process (``modules.ragged_nets.TinyDetector``, with ``tests`` on the path).
"""

from __future__ import annotations

import torch
import torch.nn as nn


def boxes_per_image(features: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """torchvision's detection contract: a box for each channel whose mean is over 0.1, so the count varies."""
    out = []
    for f in features:
        score = f.mean(dim=(1, 2))
        keep = score > 0.1
        boxes = f[keep][:, :2, :2].reshape(-1, 4).abs() * 10
        out.append({"boxes": boxes, "scores": score[keep], "labels": keep.nonzero()[:, 0]})
    return out


torch.fx.wrap("boxes_per_image")  # one node for the pipeline's tracer: the loop over images is not traceable


class TinyDetector(nn.Module):
    def __init__(self, channels: int = 6) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Conv2d(3, channels, 3)
        self.act = nn.Tanh()

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        return boxes_per_image(self.act(self.features(x)))


class TinyRaggedList(TinyDetector):
    """A list with one tensor per image (the scores alone)."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        return [d["scores"] for d in super().forward(x)]


class BoxesFromPixels(nn.Module):
    """torchvision's detection contract on a list of whole images, cheap: two boxes per image placed from its size,
    scored by its colours (a third, low-scoring one on wide images)."""

    def __init__(self, masks: bool = False) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.masks = masks

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out = []
        for img in images:
            h, w = img.shape[-2:]
            boxes = torch.tensor([[0.0, 0.0, w / 2, h / 2], [w / 4, h / 4, w - 1.0, h - 1.0], [1.0, 2.0, 5.0, 9.0]])
            scores = torch.stack([img[0].mean(), img[1].mean(), img[2].mean() * 0.1]) * self.scale
            labels = torch.tensor([1, 2, 1])
            n = 3 if w > h else 2
            out.append({"boxes": boxes[:n], "scores": scores[:n], "labels": labels[:n]})
            if self.masks:  # Mask R-CNN's: N x 1 x H x W probabilities, here 0.9 inside each box, 0.2 outside
                masks = torch.full((n, 1, h, w), 0.2)
                for k, (x0, y0, x1, y1) in enumerate(boxes[:n].long().tolist()):
                    masks[k, 0, y0:y1, x0:x1] = 0.9
                out[-1]["masks"] = masks
        return out
