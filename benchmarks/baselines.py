"""The loops users write by hand, as the seed documents write them: the baselines lit_infer must beat."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import lightning as L
import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import DataLoader, Dataset

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


class SeedDataset(Dataset):
    """Pillow open/convert, ``Resize(256)`` + ``CenterCrop(224)``, to a float tensor, normalised on the CPU."""

    def __init__(self, paths: list[str], resize: int = 256, crop: int = 224) -> None:
        self.paths = paths
        self.resize = resize
        self.crop = crop

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = Image.open(self.paths[i]).convert("RGB")
        w, h = img.size
        scale = self.resize / min(w, h)
        img = img.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
        w, h = img.size
        left, top = (w - self.crop) // 2, (h - self.crop) // 2
        img = img.crop((left, top, left + self.crop, top + self.crop))
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255)
        return (x - MEAN) / STD, i


def seed_loader(paths: list[str], batch_size: int, workers: int) -> DataLoader:
    return DataLoader(SeedDataset(paths), batch_size=batch_size, num_workers=workers, pin_memory=True)


class Clock:
    """Marks the end of the first batch, so that start-up can be told apart from steady throughput."""

    def __init__(self) -> None:
        self.first: tuple[float, int] | None = None
        self.images = 0
        self.last = 0.0

    def batch(self, n: int) -> None:
        self.images += n
        self.last = time.perf_counter()
        if self.first is None:
            self.first = (self.last, self.images)

    def steady(self) -> float | None:
        """Images/s after the first batch (``None`` with fewer than two batches)."""
        if self.first is None or self.images == self.first[1] or self.last <= self.first[0]:
            return None
        return (self.images - self.first[1]) / (self.last - self.first[0])


CLOCK = Clock()


class ClockCallback(L.Callback):
    """Timestamps each batch as the loop hands it over. No device sync here: one would stop the GPU from running
    ahead of the writer (lit_infer keeps one batch in flight); the queue bounds how far the timestamps run ahead,
    and the variant's total waits for the device before the clock stops."""

    def on_predict_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, *args) -> None:
        CLOCK.batch(len(batch[0]) if isinstance(batch, (list, tuple)) else len(batch))


def seed_loop(
    paths: list[str], net: nn.Module, batch_size: int, workers: int, device: str, precision: str = "32-true"
) -> int:
    """The plain PyTorch loop: returns the number of predictions made."""
    net = net.to(device)
    outputs = []
    # The same precision as the others, the way such loops write it: autocast around the forward.
    dtype = torch.bfloat16 if "bf16" in precision else torch.float16
    with torch.no_grad(), torch.autocast(device, dtype=dtype, enabled=device == "cuda" and precision != "32-true"):
        for x, _ in seed_loader(paths, batch_size, workers):
            outputs.append(net(x.to(device)).cpu())
            CLOCK.batch(len(x))
    return sum(len(o) for o in outputs)


class NaiveModule(L.LightningModule):
    """The minimal LightningModule a user writes for ``Trainer.predict``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def predict_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.net(batch[0])


def naive_lightning(
    paths: list[str], net: nn.Module, batch_size: int, workers: int, device: str, precision: str = "32-true"
) -> int:
    """``Trainer.predict`` with its defaults (``return_predictions=True``)."""
    accelerator = "gpu" if device == "cuda" else "cpu"
    precision = precision if device == "cuda" else "32-true"
    trainer = L.Trainer(
        accelerator=accelerator, devices=1, logger=False, precision=precision, callbacks=[ClockCallback()]
    )
    outputs = trainer.predict(NaiveModule(net), seed_loader(paths, batch_size, workers))
    assert outputs is not None
    return sum(len(o) for o in outputs)


BASELINES: dict[str, Callable[..., int]] = {"seed_loop": seed_loop, "naive_lightning": naive_lightning}


def list_images(folder: str) -> list[str]:
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".jpg"))
