"""``decode: gpu``: nvJPEG in batches with a Pillow fallback. The GPU tests skip without CUDA (and torchvision)."""

from __future__ import annotations

import csv
import importlib.util
import io
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from lit_infer import ConfigError, ImageClassifier, ImageDataModule, PredictionWriter, Preprocessing
from lit_infer.data.decode import Decoder
from lit_infer.data.gpu_decode import decode_batch, is_jpeg, resize_crop_gpu
from lit_infer.nets import TinyCNN
from lit_infer.records import Batch
from tests.conftest import make_images

HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None
PRE = Preprocessing(crop_size=32, resize_size=40)


def _encoded_batch(files: list[bytes]) -> Batch:
    n = len(files)
    return Batch(
        torch.empty(0, 3, 0, 0, dtype=torch.uint8),
        torch.arange(10, 10 + n),
        [f"f{i}" for i in range(n)],
        torch.full((n,), -1),
        [],
        files,
    )


def _jpeg(seed: int, size: tuple[int, int] = (120, 90)) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).resize((size[0] // 4, size[1] // 4)).resize(size).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def test_jpeg_magic() -> None:
    assert is_jpeg(_jpeg(0)) and not is_jpeg(b"\x89PNG\r\n\x1a\n")


def test_gpu_resize_crop_matches_the_pillow_geometry(tmp_path: Path) -> None:
    # The GPU path's resize runs anywhere torch does: same output size and nearly the same pixels as Pillow's.
    data = _jpeg(1)
    decoder = Decoder(PRE)
    cpu = decoder.decode(data).numpy().astype(int)
    full = torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB"))).permute(2, 0, 1)
    gpu_path = resize_crop_gpu(full, PRE).permute(1, 2, 0).numpy().astype(int)
    assert gpu_path.shape == cpu.shape == (32, 32, 3)
    assert np.abs(gpu_path - cpu).mean() < 4.0


@pytest.mark.skipif(HAS_TORCHVISION, reason="checks the message shown when torchvision is missing")
def test_without_torchvision_the_error_names_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"data\.decode='gpu'.*torchvision"):
        decode_batch(_encoded_batch([_jpeg(0)]), Decoder(PRE), torch.device("cpu"))


@pytest.mark.gpu
def test_gpu_decode_mixes_nvjpeg_pillow_and_failures() -> None:
    png = io.BytesIO()
    Image.fromarray(np.zeros((50, 60, 3), dtype=np.uint8)).save(png, "PNG")
    files = [_jpeg(0), png.getvalue(), b"\xff\xd8\xff broken jpeg", _jpeg(1)]
    out = decode_batch(_encoded_batch(files), Decoder(PRE), torch.device("cuda"))
    assert out.images.shape == (3, 3, 32, 32) and out.images.device.type == "cuda"
    assert out.indices.tolist() == [10, 11, 13] and out.paths == ["f0", "f1", "f3"]
    assert [f.index for f in out.failures] == [12]
    cpu = Decoder(PRE).decode(files[0]).permute(2, 0, 1).numpy().astype(int)
    assert np.abs(out.images[0].cpu().numpy().astype(int) - cpu).mean() < 6.0


@pytest.mark.gpu
def test_predict_with_gpu_decode_covers_every_image(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", 20, ext="jpg")
    (tmp_path / "imgs" / "img_00020.jpg").write_bytes(b"\xff\xd8\xff not really")
    dm = ImageDataModule(tmp_path / "imgs", batch_size=8, num_workers=2, preprocessing=PRE, decode="gpu")
    module = ImageClassifier(net=TinyCNN(width=4, depth=2), preprocessing=PRE)
    trainer = L.Trainer(accelerator="gpu", devices=1, logger=False, callbacks=[PredictionWriter(tmp_path / "out")])
    trainer.predict(module, datamodule=dm, return_predictions=False)
    with open(tmp_path / "out" / "predictions.csv") as f:
        assert [int(r["index"]) for r in csv.DictReader(f)] == list(range(20))
    assert (tmp_path / "out" / "errors.jsonl").read_text().count("img_00020.jpg") == 1


def test_rotated_cmyk_and_oversized_jpegs_never_reach_nvjpeg() -> None:
    from lit_infer.data.decode import ImageTooLarge
    from lit_infer.data.gpu_decode import _nvjpeg_can_take

    plain = _jpeg(0)
    assert _nvjpeg_can_take(plain, 10**8)
    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90": nvJPEG would hand back the sideways pixels
    Image.open(io.BytesIO(plain)).save(rotated, "JPEG", exif=exif.tobytes())
    assert not _nvjpeg_can_take(rotated.getvalue(), 10**8)
    cmyk = io.BytesIO()
    Image.open(io.BytesIO(plain)).convert("CMYK").save(cmyk, "JPEG")
    assert not _nvjpeg_can_take(cmyk.getvalue(), 10**8)
    with pytest.raises(ImageTooLarge):
        _nvjpeg_can_take(plain, 100)
