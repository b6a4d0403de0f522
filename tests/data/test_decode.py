"""Decoding with Pillow: EXIF orientation, every mode to RGB, truncated files fail, torchvision's resize/crop."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from lit_infer.data.decode import Decoder, ImageTooLarge, resize_crop, resize_crop_fast, to_rgb
from lit_infer.preprocessing import Preprocessing

P32 = Preprocessing(crop_size=32, resize_size=32)


def _decode(path: Path, p: Preprocessing = P32, **kwargs: object) -> np.ndarray:
    out = Decoder(p, **kwargs)(str(path))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.uint8
    assert tuple(out.shape) == (p.crop_size, p.crop_size, 3)
    return out.numpy()


def _photo_like(w: int, h: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus noise: closer to a photo than uniform noise, so resampling differences show."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], axis=-1)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


# ---- EXIF orientation ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied(tmp_path: Path, fmt: str) -> None:
    # Stored 64 wide x 32 tall: left half red, right half blue. Orientation 6 = "rotate 90 degrees clockwise to
    # display", so the displayed image is 32 x 64 with red on top and blue below.
    arr = np.zeros((32, 64, 3), dtype=np.uint8)
    arr[:, :32] = (255, 0, 0)
    arr[:, 32:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / f"rotated.{fmt.lower()}"
    Image.fromarray(arr).save(path, format=fmt, exif=exif, quality=95)
    out = _decode(path).astype(int)
    # Centre 32x32 crop of the displayed 32x64 image: top rows red, bottom rows blue (unrotated: left/right).
    top, bottom = out[:8].reshape(-1, 3).mean(0), out[-8:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 50, top
    assert bottom[2] > 200 and bottom[0] < 50, bottom


@pytest.mark.parametrize(
    ("orientation", "display"),
    [
        (1, lambda a: a),
        (2, lambda a: a[:, ::-1]),  # mirrored left-right
        (3, lambda a: np.rot90(a, 2)),
        (4, lambda a: a[::-1]),  # mirrored top-bottom
        (6, lambda a: np.rot90(a, -1)),  # 90 degrees clockwise
        (8, lambda a: np.rot90(a, 1)),  # 90 degrees counter-clockwise
    ],
)
def test_every_exif_orientation_gives_the_displayed_pixels(tmp_path: Path, orientation: int, display: object) -> None:
    arr = np.zeros((32, 32, 3), dtype=np.uint8)  # four quadrants of different colours; square, so no resize
    arr[:16, :16], arr[:16, 16:], arr[16:, :16], arr[16:, 16:] = (255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "q.png"
    Image.fromarray(arr).save(path, exif=exif)
    np.testing.assert_array_equal(_decode(path), display(arr))  # type: ignore[operator]


# ---- every mode becomes RGB ------------------------------------------------------------------------------------
def _mode_image(mode: str) -> tuple[Image.Image, tuple[int, int, int], str]:
    """An image in ``mode`` of one flat colour, the RGB it must decode to, and a format that stores it exactly."""
    if mode == "L":
        return Image.new("L", (40, 30), 100), (100, 100, 100), "PNG"
    if mode == "1":
        return Image.new("1", (40, 30), 1), (255, 255, 255), "PNG"
    if mode == "LA":
        return Image.new("LA", (40, 30), (70, 128)), (70, 70, 70), "PNG"
    if mode == "P":
        img = Image.new("P", (40, 30), 3)
        img.putpalette([0, 0, 0] * 3 + [12, 200, 34] + [0, 0, 0] * 252)
        return img, (12, 200, 34), "PNG"
    if mode == "P+transparency":
        img = Image.new("P", (40, 30), 1)
        img.putpalette([0, 0, 0, 90, 60, 30] + [0, 0, 0] * 254)
        img.info["transparency"] = 0
        return img, (90, 60, 30), "PNG"
    if mode == "RGBA":
        return Image.new("RGBA", (40, 30), (10, 20, 30, 0)), (10, 20, 30), "PNG"
    if mode == "CMYK":
        # Pillow: R = 255 - min(255, C + K), and so on.
        return Image.new("CMYK", (40, 30), (0, 255, 255, 0)), (255, 0, 0), "TIFF"
    if mode == "I;16":
        arr = np.full((30, 40), 40_000, dtype=np.uint16)
        return Image.fromarray(arr), (40_000 >> 8,) * 3, "PNG"  # type: ignore[return-value]
    if mode == "F":
        return Image.fromarray(np.full((30, 40), 0.5, dtype=np.float32)), (127, 127, 127), "TIFF"
    raise AssertionError(mode)


@pytest.mark.parametrize("mode", ["L", "1", "LA", "P", "P+transparency", "RGBA", "CMYK", "I;16", "F"])
def test_every_mode_decodes_to_rgb(tmp_path: Path, mode: str) -> None:
    img, rgb, fmt = _mode_image(mode)
    path = tmp_path / f"img.{fmt.lower()}"
    img.save(path, format=fmt)
    with Image.open(path) as check:  # the file really holds that mode (not converted on save)
        assert check.mode.split(";")[0] == img.mode.split(";")[0] or check.mode.startswith("I")
    out = _decode(path)
    assert (out == np.array(rgb, dtype=np.uint8)).all(), (mode, out[0, 0])


def test_cmyk_jpeg_decodes_to_rgb(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(path, quality=95)
    out = _decode(path).reshape(-1, 3).mean(0)
    assert out[0] > 230 and out[1] < 25 and out[2] < 25, out


def test_to_rgb_leaves_rgb_untouched() -> None:
    img = Image.new("RGB", (3, 3), (1, 2, 3))
    assert to_rgb(img) is img


# ---- failures are failures -------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_raises_instead_of_grey_fill(tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.BytesIO()
    Image.fromarray(_photo_like(200, 150)).save(buf, format=fmt, quality=95)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    # Even if some library in the process switched Pillow to padding truncated images, the decoder must not.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(OSError):
        Decoder(P32)(str(path))


@pytest.mark.parametrize("content", [b"", b"this is not an image", bytes(range(256)) * 4])
def test_garbage_raises(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(Exception):  # noqa: B017 -- Pillow's error type varies; the dataset records any of them
        Decoder(P32)(str(path))


def test_missing_file_raises_without_retry_delay(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Decoder(P32, io_backoff_s=60.0)(str(tmp_path / "gone.png"))  # a minute per retry would time out the test


def test_max_pixels_refuses_big_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after: the decoder sets it
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 60)).save(path)
    with pytest.raises((ImageTooLarge, Image.DecompressionBombError)):
        Decoder(P32, max_pixels=5_000)(str(path))
    assert _decode(path, max_pixels=6_000).shape == (32, 32, 3)


def test_decoder_is_picklable_for_workers() -> None:
    decoder = Decoder(Preprocessing(crop_size=8), exact=False)
    assert pickle.loads(pickle.dumps(decoder)) == decoder


# ---- resize and centre crop (bit for bit against torchvision/timm themselves: test_reference_pixels.py) ----------
def _reference(img: Image.Image, resize: int, crop: int, resample: Image.Resampling) -> np.ndarray:
    """torchvision's ``Resize(resize)`` + ``CenterCrop(crop)`` on a PIL image, written out from its source."""
    w, h = img.size
    if w <= h:
        size = (resize, int(resize * h / w))
    else:
        size = (int(resize * w / h), resize)
    if size != (w, h):
        img = img.resize(size, resample)  # Pillow's resize antialiases when shrinking, like torchvision's PIL path
    w, h = img.size
    top, left = round((h - crop) / 2.0), round((w - crop) / 2.0)  # torchvision: int(round(...)), Python rounding
    return np.asarray(img.crop((left, top, left + crop, top + crop)))


@pytest.mark.parametrize(
    ("w", "h", "resize", "crop", "interpolation"),
    [
        (500, 375, 256, 224, "bilinear"),
        (375, 500, 256, 224, "bicubic"),
        (333, 500, 256, 224, "bilinear"),  # fractional crop offsets in the source
        (333, 257, 73, 64, "bilinear"),
        (40, 31, 64, 56, "bicubic"),  # upscaling
        (64, 64, 64, 64, "bilinear"),  # nothing to do
        (101, 99, 32, 31, "nearest"),
    ],
)
def test_resize_crop_matches_the_reference(w: int, h: int, resize: int, crop: int, interpolation: str) -> None:
    img = Image.fromarray(_photo_like(w, h, seed=w + h))
    p = Preprocessing(crop_size=crop, resize_size=resize, interpolation=interpolation)  # type: ignore[arg-type]
    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}[interpolation]
    out = resize_crop(img, p)
    assert out.shape == (crop, crop, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, _reference(img, resize, crop, resample))
    fast = resize_crop_fast(img, p).astype(int)  # data.decoding.exact=false: close, not equal
    assert fast.shape == out.shape and np.abs(fast - out).mean() < 1.5


def test_default_resize_follows_crop_pct() -> None:
    img = Image.fromarray(_photo_like(300, 200))
    out = resize_crop(img, Preprocessing(crop_size=224))  # resize = floor(224 / 0.875) = 256
    np.testing.assert_array_equal(out, _reference(img, 256, 224, Image.BILINEAR))


def test_downscaling_is_antialiased() -> None:
    # A one-pixel checkerboard shrunk 8x: antialiased, it is a flat mid grey; aliased, it would stay black/white.
    board = ((np.indices((256, 256)).sum(0) % 2) * 255).astype(np.uint8)
    out = resize_crop(Image.fromarray(board).convert("RGB"), Preprocessing(crop_size=32, resize_size=32))
    assert abs(out.mean() - 127.5) < 3
    assert out.std() < 3


def test_bicubic_and_bilinear_differ() -> None:
    img = Image.fromarray(_photo_like(200, 150))
    a = resize_crop(img, Preprocessing(crop_size=48, resize_size=56, interpolation="bilinear"))
    b = resize_crop(img, Preprocessing(crop_size=48, resize_size=56, interpolation="bicubic"))
    assert not np.array_equal(a, b)


def test_jpeg_draft_stays_close_to_a_full_decode(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    Image.fromarray(_photo_like(800, 600)).save(path, quality=92)
    p = Preprocessing(crop_size=64, resize_size=72)
    full = _decode(path, p).astype(int)
    draft = _decode(path, p, exact=False).astype(int)
    assert np.abs(full - draft).mean() < 4
