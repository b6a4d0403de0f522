"""Read, decode and geometrically transform one image with Pillow, as torchvision's evaluation transforms do.

``Resize(resize)`` (shorter side, antialiased), ``CenterCrop(crop)``, RGB uint8 out. Normalisation is not here: it
runs on the device, on the whole batch, where it costs nothing.
"""

from __future__ import annotations

import contextlib
import io
import math
import signal
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps

from lit_infer.data.reading import read_image_file
from lit_infer.preprocessing import Preprocessing

_FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own default guard: about 0.25 GB of RGB at 24 bits per pixel.


warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # over the limit is an error record instead


class ImageTooLarge(ValueError):
    """More pixels than the configured limit: a decompression bomb or a mistake, never decoded."""


@dataclass(frozen=True)
class Decoder:
    """Turns file bytes into an H x W x 3 uint8 tensor of ``crop_size`` squared (picklable, runs in workers)."""

    preprocessing: Preprocessing
    max_pixels: int = DEFAULT_MAX_PIXELS
    jpeg_draft: bool = False
    io_retries: int = 2
    io_backoff_s: float = 0.05
    read_timeout: float | None = None

    def read(self, path: str) -> bytes:
        """Read a regular file (a FIFO or device named like an image is refused unopened), retrying transient I/O
        errors, within ``read_timeout`` seconds; missing or forbidden files fail at once."""
        return read_image_file(path, self.io_retries, self.io_backoff_s, self.read_timeout)

    def decode(self, data: bytes) -> torch.Tensor:
        # Truncated files must fail, not be padded with grey (Pillow's LOAD_TRUNCATED_IMAGES).
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        # Pillow's own bomb guard follows ours, in every worker process (these are process-wide settings).
        Image.MAX_IMAGE_PIXELS = self.max_pixels
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > self.max_pixels:
                raise ImageTooLarge(f"{width}x{height} = {width * height} pixels exceeds max_pixels={self.max_pixels}")
            if self.jpeg_draft and img.format == "JPEG":
                # DCT-domain downscaling by 2/4/8, never below the size the resize needs: much less to decode.
                target = self.preprocessing.resize
                scale = target / min(width, height)
                if scale < 0.5:
                    img.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = to_rgb(img)
        return torch.from_numpy(resize_crop(rgb, self.preprocessing))

    def __call__(self, path: str) -> torch.Tensor:
        return self.decode(self.read(path))


_STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2")


def init_worker(worker_id: int) -> None:
    """A DataLoader worker's start (``worker_init_fn``): ignore the signals that ask the run to stop.

    The main process stops at a batch boundary and shuts its workers down itself; a worker that died of the SIGTERM
    a scheduler sends to every process (or of the terminal's Ctrl-C) would turn that graceful stop into a crash.
    """
    for name in _STOP_SIGNALS:
        signum = getattr(signal, name, None)
        if signum is not None:
            with contextlib.suppress(ValueError, OSError):
                signal.signal(signum, signal.SIG_IGN)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: grayscale, palette, alpha, CMYK, 16-bit and float images."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img)
        if img.mode == "F":
            arr8 = np.clip(arr * 255.0, 0, 255).astype(np.uint8)
        else:
            # 16-bit data scaled to 8 bits, as image viewers show it (Pillow's convert would clip at 255 instead).
            arr8 = (np.clip(arr.astype(np.int64), 0, 65535) >> 8).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


def resize_crop(img: Image.Image, p: Preprocessing) -> np.ndarray:
    """torchvision's ``Resize(p.resize)`` then ``CenterCrop(p.crop_size)`` on a PIL image, to an H x W x 3 array."""
    width, height = img.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = p.resize, int(p.resize * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    crop = p.crop_size
    top = round((new_h - crop) / 2.0)
    left = round((new_w - crop) / 2.0)
    if (new_w, new_h) == (width, height):
        img = img.crop((left, top, left + crop, top + crop))
    else:
        # Resample only the pixels the crop keeps: Pillow's ``box`` maps the crop back onto the source with the same
        # scale and filter support, so the result equals resize-then-crop (within 1 level of rounding) at about
        # half the cost of resizing the whole image (see BENCHMARKS.md).
        sx, sy = width / new_w, height / new_h
        box = (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)
        img = img.resize((crop, crop), _FILTERS[p.interpolation], box=box)
    return np.array(img, dtype=np.uint8)
