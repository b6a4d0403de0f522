"""Small reference networks: the quickstart's classifier, and tiny nets for tests and benchmarks."""

from __future__ import annotations

import torch
import torch.nn as nn


class TinyCNN(nn.Module):
    """A small VGG-style CNN: ``depth`` blocks of conv-BN-ReLU-pool, global pooling, one linear classifier.

    Args:
        num_classes: Outputs of the classifier.
        width: Channels of the first block; each further block doubles them.
        depth: Number of conv blocks.
    """

    def __init__(self, num_classes: int = 4, width: int = 16, depth: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for i in range(depth):
            out = width * 2**i
            layers += [
                nn.Conv2d(channels, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))
