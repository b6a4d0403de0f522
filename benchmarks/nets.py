"""Benchmark networks that need no torchvision: a small (data-bound) CNN and a ResNet-18-sized (compute-bound) one."""

from __future__ import annotations

import torch
import torch.nn as nn


class SmallCNN(nn.Module):
    """The data-bound case: a stride-4 stem and two strided blocks, about 5 MMACs per 224 image.

    Args:
        num_classes: Outputs of the classifier.
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 4, stride=4),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18Like(nn.Module):
    """torchvision's ResNet-18 layout (11.7 M parameters, 1.8 GFLOPs at 224), written out so it runs without it."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        )
        blocks: list[nn.Module] = []
        cin = 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


MODELS = ("small", "resnet18", "resnet50")


def build(name: str) -> nn.Module:
    """A benchmark network by name, in eval mode, random weights. torchvision's own ResNets when it is installed."""
    try:
        import torchvision  # noqa: F401

        has_tv = True
    except ImportError:
        has_tv = False
    if name == "small":
        net: nn.Module = SmallCNN()
    elif name == "resnet18":
        net = _torchvision("resnet18") if has_tv else ResNet18Like()
    elif name == "resnet50":
        if not has_tv:
            raise SystemExit("--model resnet50 needs torchvision (pip install torchvision)")
        net = _torchvision("resnet50")
    else:
        raise SystemExit(f"--model {name!r}: choose one of {', '.join(MODELS)}")
    return net.eval()


def _torchvision(name: str) -> nn.Module:
    import torchvision.models

    return getattr(torchvision.models, name)(weights=None)


def class_path(name: str) -> tuple[str | None, dict, str | None]:
    """How lit_infer's CLI builds the same network: (net class_path, init_args, factory)."""
    if name == "small":
        return "benchmarks.nets.SmallCNN", {}, None
    try:
        import torchvision  # noqa: F401

        return None, {"weights": None}, f"torchvision.models.{name}"
    except ImportError:
        return "benchmarks.nets.ResNet18Like", {}, None


class RankSleeper(nn.Module):
    """A network of known speed per rank and no CPU cost: it sleeps ``seconds_per_image`` per image, ``slow_factor``
    times longer on rank ``slow_rank`` (a machine that much slower), and outputs each image's channel means.

    Args:
        seconds_per_image: Sleep per image on every other rank.
        slow_rank: The global rank that is slow (``-1``: none).
        slow_factor: How many times slower it is.
    """

    def __init__(self, seconds_per_image: float = 0.01, slow_rank: int = -1, slow_factor: float = 3.0) -> None:
        super().__init__()
        self.seconds_per_image, self.slow_rank, self.slow_factor = seconds_per_image, slow_rank, slow_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import time

        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        time.sleep(self.seconds_per_image * len(x) * (self.slow_factor if rank == self.slow_rank else 1.0))
        return x.float().mean(dim=(2, 3))
