"""Read, decode and geometrically transform one image with Pillow, as torchvision's evaluation transforms do.

By default the pixels are the reference's, bit for bit: ``ImageOps.exif_transpose(Image.open(p)).convert("RGB")``,
then Pillow's full ``Image.resize`` and a crop at torchvision's offsets (``preprocessing.geometry``); RGB uint8 out.
``exact=False`` trades that for speed (crop-box resampling, JPEG draft decoding; agreement in BENCHMARKS.md).
Normalisation is not here: it runs on the device, on the whole batch, where it costs nothing.
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

from lit_infer.data.options import DEFAULT_MAX_PIXELS, Reading
from lit_infer.data.reading import read_image_file
from lit_infer.preprocessing import Preprocessing, geometry

_FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}


warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # over the limit is an error record instead


class ImageTooLarge(ValueError):
    """More pixels than the configured limit: a decompression bomb or a mistake, never decoded."""


@dataclass(frozen=True)
class Decoder:
    """Reads a file and turns its bytes into an H x W x 3 uint8 tensor of ``crop_size`` squared (picklable, runs in
    workers).

    ``exact``: the reference's pixels (see the module docstring). ``False``: resample only the crop box and let
    libjpeg decode large JPEGs at 1/2, 1/4 or 1/8 scale; faster, a few levels off (BENCHMARKS.md). ``reading``: how
    files, shards and list ranges are read (``data.reading``: retries, time limit, object-store options), the one
    copy of them every reader of the data uses. ``io_backoff_s``: the first pause before a retry (then doubled).
    """

    preprocessing: Preprocessing
    max_pixels: int = DEFAULT_MAX_PIXELS
    exact: bool = True
    reading: Reading = Reading()  # noqa: RUF009 -- frozen: one shared default is safe
    io_backoff_s: float = 0.05

    @property
    def storage_options(self) -> dict | None:
        """fsspec options for inputs behind a URL."""
        return self.reading.storage_options or None

    def read(self, path: str) -> bytes:
        """Read a regular file (a FIFO or device named like an image is refused unopened) or an object behind a URL,
        retrying transient I/O errors, within ``read_timeout`` seconds; missing or forbidden files fail at once."""
        r = self.reading
        return read_image_file(path, r.io_retries, self.io_backoff_s, r.read_timeout, self.storage_options)

    def decode(self, data: bytes) -> torch.Tensor:
        # Truncated files must fail, not be padded with grey (Pillow's LOAD_TRUNCATED_IMAGES).
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        # Pillow's own bomb guard follows ours, in every worker process (these are process-wide settings).
        Image.MAX_IMAGE_PIXELS = self.max_pixels
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > self.max_pixels:
                raise ImageTooLarge(f"{width}x{height} = {width * height} pixels exceeds max_pixels={self.max_pixels}")
            if not self.exact and img.format == "JPEG":
                # DCT-domain downscaling by 2/4/8, never below the size the resize needs: much less to decode.
                target = self.preprocessing.resize
                scale = target / min(width, height)
                if scale < 0.5:
                    img.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = to_rgb(img)
        resized = resize_crop(rgb, self.preprocessing) if self.exact else resize_crop_fast(rgb, self.preprocessing)
        return torch.from_numpy(resized)

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
    """Any Pillow mode to 8-bit RGB: ``img.convert("RGB")`` as the reference does, except for 16-bit and float images.

    Pillow's ``convert`` clips 16-bit values at 255 (a 16-bit photo turns white); here they are scaled to 8 bits, as
    image viewers show them, and float images are read as [0, 1].
    """
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img)
        if img.mode == "F":
            arr8 = np.clip(arr * 255.0, 0, 255).astype(np.uint8)
        else:
            arr8 = (np.clip(arr.astype(np.int64), 0, 65535) >> 8).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    return img.convert("RGB")


def resize_crop(img: Image.Image, p: Preprocessing) -> np.ndarray:
    """The reference's resize and crop of an RGB image (``preprocessing.geometry``), to an H x W x 3 array.

    Exactly torchvision's PIL path: ``Image.resize(size, filter)`` of the whole image (antialiased when shrinking),
    then ``Image.crop`` at the centre offsets, padding with ``p.fill`` where the crop is larger.
    """
    g = geometry(*img.size, p)
    if g.size is not None:
        img = img.resize(g.size, _FILTERS[p.interpolation])
    arr = np.asarray(img, dtype=np.uint8)
    if any(g.pad):
        left, top, right, bottom = g.pad
        padded = np.empty((arr.shape[0] + top + bottom, arr.shape[1] + left + right, 3), dtype=np.uint8)
        padded[:] = np.asarray(p.fill, dtype=np.uint8)
        padded[top : top + arr.shape[0], left : left + arr.shape[1]] = arr
        arr = padded
    left, top, right, bottom = g.box
    return np.array(arr[top:bottom, left:right])  # a writable copy: torch.from_numpy shares it


def resize_crop_fast(img: Image.Image, p: Preprocessing) -> np.ndarray:
    """``data.decoding.exact=false``: resample only the pixels the crop keeps, about half the work of a full resize.

    Pillow's ``box`` maps the crop back onto the source with the same scale and filter support, but the filter taps
    sit at fractional offsets and Pillow may run its two passes in the other order, so the 8-bit result differs from
    the reference by a few levels (BENCHMARKS.md has the measured figures). Only ``crop_mode: center`` has a fast
    path; the other modes are exact either way.
    """
    g = geometry(*img.size, p)
    if p.crop_mode != "center" or g.size is None or any(g.pad):
        return resize_crop(img, p)
    width, height = img.size
    new_w, new_h = g.size
    left, top, right, bottom = g.box
    sx, sy = width / new_w, height / new_h
    box = (left * sx, top * sy, right * sx, bottom * sy)
    img = img.resize((right - left, bottom - top), _FILTERS[p.interpolation], box=box)
    return np.array(img, dtype=np.uint8)
