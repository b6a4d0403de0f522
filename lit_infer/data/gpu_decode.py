"""``decode: gpu``: JPEGs decode on the GPU with nvJPEG, in batches, and resize/crop there too.

DataLoader workers only read the files' bytes (``Batch.encoded``); the module calls :func:`decode_batch` at the start
of ``predict_step``. nvJPEG decoded 500x375 JPEGs at about 22,500 images/s on an H200, where 16 CPU cores with
Pillow top out near 5,000. Files that are not JPEGs (PNG, WebP...) or that nvJPEG refuses (CMYK, progressive corner
cases) fall back to Pillow in this process, with exactly the CPU path's semantics; a file neither can decode becomes an
error record, as on the CPU.

Pixels differ slightly from Pillow's (a different IDCT and a different antialiasing filter): a model's outputs
agree to within the usual JPEG-decoder noise, and the run's fingerprint records ``decode: gpu`` so that a resumed
run never mixes the two.
"""

from __future__ import annotations

import io
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from lit_infer.data.decode import Decoder, ImageTooLarge
from lit_infer.errors import ConfigError
from lit_infer.preprocessing import Preprocessing
from lit_infer.records import Batch, Failure

JPEG_MAGIC = b"\xff\xd8\xff"


def import_torchvision_io() -> Any:
    """``torchvision.io``, or a :class:`ConfigError` that says how to get it."""
    try:
        import torchvision.io
    except ImportError:
        raise ConfigError(
            "data.decode",
            "gpu",
            "needs torchvision (nvJPEG through torchvision.io.decode_jpeg)",
            "pip install 'lit_infer[gpu-decode]' (torchvision), or use data.decode=cpu",
        ) from None
    return torchvision.io


def is_jpeg(data: bytes) -> bool:
    return data[:3] == JPEG_MAGIC


def resize_crop_gpu(image: torch.Tensor, p: Preprocessing) -> torch.Tensor:
    """C x H x W uint8 on the device -> C x crop x crop uint8: the CPU path's resize (shorter side) and centre crop."""
    _, height, width = image.shape
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = p.resize, int(p.resize * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    crop = p.crop_size
    top, left = round((new_h - crop) / 2.0), round((new_w - crop) / 2.0)
    if (new_w, new_h) != (width, height):
        mode = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest"}[p.interpolation]
        x = image.unsqueeze(0).float()
        antialias = mode != "nearest"
        x = F.interpolate(
            x, size=(new_h, new_w), mode=mode, antialias=antialias, align_corners=None if mode == "nearest" else False
        )
        image = x.round_().clamp_(0, 255).to(torch.uint8)[0]
    return image[:, top : top + crop, left : left + crop]


def decode_batch(batch: Batch, decoder: Decoder, device: torch.device) -> Batch:
    """A batch of encoded files -> a batch of ``crop x crop`` uint8 images on ``device``, failures set apart.

    JPEGs go to nvJPEG in one batched call; if that call fails (one corrupt file fails the batch), each JPEG is
    retried alone, then with Pillow. Everything else decodes with Pillow.
    """
    assert batch.encoded is not None, "decode_batch needs a batch of encoded files"
    tvio = import_torchvision_io()
    p = decoder.preprocessing
    n = len(batch.encoded)
    images: list[torch.Tensor | None] = [None] * n
    failures = list(batch.failures)
    errors: dict[int, BaseException] = {}
    jpegs = []
    for i, data in enumerate(batch.encoded):
        if is_jpeg(data):
            try:
                if _nvjpeg_can_take(data, decoder.max_pixels):
                    jpegs.append(i)
            except Exception as exc:
                errors[i] = exc
    decoded = _nvjpeg(tvio, [batch.encoded[i] for i in jpegs], device)
    for i, image in zip(jpegs, decoded, strict=True):
        if image is not None:
            images[i] = resize_crop_gpu(image, p)
    for i in range(n):
        if images[i] is None and i not in errors:
            try:  # Pillow: not a JPEG, or a JPEG nvJPEG refused
                images[i] = decoder.decode(batch.encoded[i]).to(device, non_blocking=True).permute(2, 0, 1)
            except Exception as exc:
                errors[i] = exc
    keep = [i for i in range(n) if images[i] is not None]
    for i in sorted(errors):
        failures.append(Failure.from_exception(int(batch.indices[i]), batch.paths[i], errors[i]))
    if keep:
        stacked = torch.stack([images[i] for i in keep])  # type: ignore[misc]
        stacked = stacked.contiguous(memory_format=torch.channels_last)
    else:
        stacked = torch.empty(0, 3, p.crop_size, p.crop_size, dtype=torch.uint8, device=device)
    index = torch.tensor(keep, dtype=torch.long)
    return Batch(
        stacked, batch.indices[index], [batch.paths[i] for i in keep], batch.labels[index], failures, encoded=None
    )


def _nvjpeg(tvio: Any, files: list[bytes], device: torch.device) -> list[torch.Tensor | None]:
    if not files:
        return []
    tensors = [torch.frombuffer(bytearray(f), dtype=torch.uint8) for f in files]
    kwargs = {"mode": tvio.ImageReadMode.RGB, "device": device}
    try:
        return list(tvio.decode_jpeg(tensors, **kwargs))
    except RuntimeError:
        if len(tensors) == 1:
            return [None]
        # One bad file fails the whole batched call: decode one by one to find it.
        return [_nvjpeg(tvio, [f], device)[0] for f in files]


def _nvjpeg_can_take(data: bytes, max_pixels: int) -> bool:
    """From the header alone: the CPU path's bomb guard, and whether nvJPEG gives the CPU path's pixels.

    nvJPEG ignores EXIF orientation (torchvision applies it on the CPU only) and CMYK needs Pillow's conversion:
    such files go to Pillow, so a rotated phone photo is upright whichever decoder ran.
    """
    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
        if width * height > max_pixels:
            raise ImageTooLarge(f"{width}x{height} = {width * height} pixels exceeds max_pixels={max_pixels}")
        orientation = img.getexif().get(0x0112, 1)
        return img.mode in ("RGB", "L") and orientation in (1, None)
