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
