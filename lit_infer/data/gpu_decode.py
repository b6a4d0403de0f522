"""``decode: gpu``: JPEGs decode on the GPU with nvJPEG, in batches, and resize/crop there too.

nvJPEG comes through TorchCodec's ``decode_jpeg`` where TorchCodec is installed (torchvision 0.29 deprecates its
own image decoders in its favour), else through torchvision's (:func:`gpu_jpeg`).

DataLoader workers read the files' bytes and their headers (``Batch.encoded``, shared memory); the module calls
:func:`decode_batch` at the start of ``predict_step``. nvJPEG decoded 500x375 JPEGs at about 22,500 images/s on an
H200, where 16 CPU cores with Pillow top out near 5,000. The main process does no per-image Pillow work: files
nvJPEG should not take (PNG, WebP, CMYK, rotated photos, see :func:`nvjpeg_can_take`) are decoded with Pillow by the
workers, with exactly the CPU path's semantics; a JPEG nvJPEG refuses at run time falls back to Pillow here; a file
neither can decode becomes an error record, as on the CPU.

Pixels differ slightly from Pillow's (a different IDCT and a different antialiasing filter): a model's outputs
agree to within the usual JPEG-decoder noise, and the run's fingerprint records ``decode: gpu`` so that a resumed
run never mixes the two.
"""

from __future__ import annotations

import functools
import io
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from lit_infer.data.decode import Decoder, ImageTooLarge
from lit_infer.errors import ConfigError
from lit_infer.preprocessing import Preprocessing, geometry
from lit_infer.records import Batch, Failure

JPEG_MAGIC = b"\xff\xd8\xff"
_FLOAT_VALUES_PER_GROUP = 1 << 26  # 256 MB of float32 per interpolation call


@dataclass(frozen=True)
class GpuJpeg:
    """A batched nvJPEG decoder: ``decode_jpeg(list of encoded uint8 tensors, mode=..., device=...)`` -> C x H x W
    uint8 tensors on the device, the contract TorchCodec's and torchvision's ``decode_jpeg`` share."""

    name: str
    decode_jpeg: Callable[..., Any]
    rgb: Any  # the library's spelling of "RGB" for ``mode``

    def __call__(self, tensors: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        return list(self.decode_jpeg(tensors, mode=self.rgb, device=device))


@functools.cache
def gpu_jpeg() -> GpuJpeg:
    """TorchCodec's ``decode_jpeg`` where it is installed (torchvision 0.29 deprecates its image decoders in its
    favour), else torchvision's; a :class:`ConfigError` naming ``data.decoding.decode`` when neither is there."""
    problem = "not installed"
    try:
        from torchcodec.decoders import decode_jpeg

        return GpuJpeg("torchcodec", decode_jpeg, "RGB")
    except ImportError:
        pass
    except (OSError, RuntimeError) as exc:  # installed, but its native libraries (FFmpeg, CUDA) do not load
        problem = f"installed but failed to load ({type(exc).__name__}: {exc})"
        warnings.warn(f"TorchCodec is {problem}; decoding JPEGs with torchvision's nvJPEG instead", stacklevel=2)
    try:
        import torchvision.io as tvio
    except ImportError:
        raise ConfigError(
            "data.decoding.decode",
            "gpu",
            f"needs TorchCodec (>= 0.16) or torchvision for nvJPEG; TorchCodec is {problem}, torchvision is not installed",
            "pip install torchcodec (or 'lit_infer[gpu-decode]' for torchvision), or use data.decoding.decode=cpu",
        ) from None
    return GpuJpeg("torchvision", tvio.decode_jpeg, tvio.ImageReadMode.RGB)


def is_jpeg(data: bytes) -> bool:
    return data[:3] == JPEG_MAGIC


def nvjpeg_can_take(data: bytes, max_pixels: int) -> bool:
    """From the header alone, in a DataLoader worker: whether nvJPEG gives the CPU path's pixels for this file.

    Not a JPEG, cut short (see :func:`jpeg_is_complete`), CMYK (needs Pillow's conversion) or an EXIF orientation other than upright (nvJPEG ignores it;
    torchvision applies it on the CPU only): ``False``, and the worker decodes the file with Pillow, so a rotated
    phone photo is upright whichever decoder ran. Raises :class:`ImageTooLarge` as the CPU path does.
    """
    if not is_jpeg(data) or not jpeg_is_complete(data):
        return False
    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
        if width * height > max_pixels:
            raise ImageTooLarge(f"{width}x{height} = {width * height} pixels exceeds max_pixels={max_pixels}")
        orientation = img.getexif().get(0x0112, 1)
        return img.mode in ("RGB", "L") and orientation in (1, None)


_MARKER_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
"""In entropy-coded data a 0xFF byte is followed by 0x00 (stuffing), a restart marker or more 0xFF (fill): anything
else is the marker that ends the scan."""


def jpeg_is_complete(data: bytes) -> bool:
    """Whether every scan of the JPEG is followed by a marker and the file by its end-of-image marker.

    nvJPEG decodes a file cut short (the missing rows filled in) where Pillow refuses it ("image file is truncated");
    such a file goes to Pillow in the worker, so both decoders give the same error record. The markers are walked
    by their lengths, so an EXIF thumbnail's own end marker is not taken for the file's. ``False`` only costs
    speed: Pillow then decodes the file, with the CPU path's exact semantics.
    """
    pos, n = 2, len(data)  # after the start-of-image marker
    while pos + 1 < n:
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xD9:  # end of image
            return True
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # restart markers and TEM stand alone
            pos += 2
            continue
        if pos + 4 > n:
            return False
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # start of scan: its entropy-coded data runs to the next real marker
            end = _MARKER_AFTER_SCAN.search(data, pos)
            if end is None:
                return False
            pos = end.start()
    return False


GPU_FILTERS = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest"}
"""Filters ``F.interpolate`` has; the others (box, hamming, lanczos) need ``data.decoding.decode=cpu``."""


def check_gpu_filter(p: Preprocessing) -> None:
    """``data.decoding.decode=gpu`` resizes with ``F.interpolate``: refuse, before the run, a filter it does not have."""
    if p.interpolation not in GPU_FILTERS:
        raise ConfigError(
            "data.decoding.decode",
            "gpu",
            f"the GPU resizes with bilinear, bicubic or nearest, not {p.interpolation!r}",
            "Use data.decoding.decode=cpu, or set model.preprocessing.interpolation",
        )


def resize_crop_gpu(images: torch.Tensor, p: Preprocessing) -> torch.Tensor:
    """[N x] C x H x W uint8 on the device -> [N x] C x crop x crop uint8: the CPU path's geometry
    (``preprocessing.geometry``), resampled by ``F.interpolate`` (antialiased; close to Pillow, not equal)."""
    batched = images.ndim == 4
    x = images if batched else images.unsqueeze(0)
    height, width = x.shape[-2:]
    g = geometry(int(width), int(height), p)
    if g.size is not None:
        mode = GPU_FILTERS[p.interpolation]
        antialias = mode != "nearest"
        align = None if mode == "nearest" else False
        new_w, new_h = g.size
        resized = F.interpolate(x.float(), size=(new_h, new_w), mode=mode, antialias=antialias, align_corners=align)
        x = resized.round_().clamp_(0, 255).to(torch.uint8)
    if any(g.pad):
        left, top, right, bottom = g.pad
        padded = x.new_empty((*x.shape[:2], x.shape[2] + top + bottom, x.shape[3] + left + right))
        padded[:] = torch.tensor(p.fill, dtype=torch.uint8, device=x.device).view(1, 3, 1, 1)
        padded[:, :, top : top + x.shape[2], left : left + x.shape[3]] = x
        x = padded
    left, top, right, bottom = g.box
    out = x[:, :, top:bottom, left:right]
    return out if batched else out[0]


def resize_crop_many(images: list[torch.Tensor], p: Preprocessing) -> list[torch.Tensor]:
    """Each C x H x W image resized and cropped; images of one size go through one interpolation together.

    A folder of photos from one camera is one size: a batch then costs a handful of kernels, not a handful per
    image. Groups are cut so that their float copy stays under about 256 MB.
    """
    out: list[torch.Tensor | None] = [None] * len(images)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(i)
    for shape, members in groups.items():
        per_chunk = max(1, _FLOAT_VALUES_PER_GROUP // math.prod(shape))
        for start in range(0, len(members), per_chunk):
            chunk = members[start : start + per_chunk]
            resized = resize_crop_gpu(torch.stack([images[i] for i in chunk]), p)
            for i, image in zip(chunk, resized, strict=True):
                out[i] = image
    return out  # type: ignore[return-value]


def decode_batch(batch: Batch, decoder: Decoder, device: torch.device, jpeg: GpuJpeg | None = None) -> Batch:
    """A batch of encoded files -> a batch of ``crop x crop`` uint8 images on ``device``, failures set apart.

    The workers already decoded what nvJPEG should not take (empty in ``batch.encoded``, pixels in
    ``batch.images``). The JPEGs go to nvJPEG in one batched call; if that call fails (one corrupt file fails the
    batch), each is retried alone, and one nvJPEG refuses is decoded here with Pillow. ``jpeg``: the nvJPEG
    decoder, :func:`gpu_jpeg`'s by default (a stand-in in tests).
    """
    assert batch.encoded is not None, "decode_batch needs a batch of encoded files"
    jpeg = jpeg if jpeg is not None else gpu_jpeg()
    p = decoder.preprocessing
    n = len(batch.encoded)
    images: list[torch.Tensor | None] = [None] * n
    from_workers = iter(batch.images.to(device, non_blocking=True))
    files = [batch.encoded[i] for i in range(n)]
    jpegs = []
    for i, data in enumerate(files):
        if data is None:
            images[i] = next(from_workers)
        else:
            jpegs.append(i)
    decoded = _nvjpeg(jpeg, [files[i] for i in jpegs], device)
    took = [(i, image) for i, image in zip(jpegs, decoded, strict=True) if image is not None]
    for (i, _), image in zip(took, resize_crop_many([image for _, image in took], p), strict=True):
        images[i] = image
    failures = list(batch.failures)
    for i in range(n):
        if images[i] is None:
            try:  # a JPEG nvJPEG refused: Pillow, with the CPU path's semantics
                data = files[i]
                assert data is not None
                images[i] = decoder.decode(data.numpy().tobytes()).to(device, non_blocking=True).permute(2, 0, 1)
            except Exception as exc:
                failures.append(Failure.from_exception(int(batch.indices[i]), batch.paths[i], exc))
    keep = [i for i in range(n) if images[i] is not None]
    if keep:
        stacked = torch.stack([images[i] for i in keep])  # type: ignore[misc]
        stacked = stacked.contiguous(memory_format=torch.channels_last)
    else:
        stacked = torch.empty(0, 3, p.crop_size, p.crop_size, dtype=torch.uint8, device=device)
    index = torch.tensor(keep, dtype=torch.long)
    return Batch(
        stacked, batch.indices[index], [batch.paths[i] for i in keep], batch.labels[index], failures, encoded=None
    )


def _nvjpeg(jpeg: GpuJpeg, tensors: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    if not tensors:
        return []
    if device.type == "cuda":
        # torchvision's batched nvJPEG allocates its outputs on our stream but writes them from its own, which does
        # not wait for ours: memory the previous batch's queued kernels still read could be handed out and
        # overwritten. Let the previous batch finish first (the GPU then decodes while we prepare the next step).
        # Kept for TorchCodec too: its stream use is not documented either.
        torch.cuda.current_stream(device).synchronize()
    try:
        return jpeg(tensors, device)
    except RuntimeError:
        if len(tensors) == 1:
            return [None]
        # One bad file fails the whole batched call: decode one by one to find it.
        return [_nvjpeg(jpeg, [t], device)[0] for t in tensors]
