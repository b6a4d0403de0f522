"""``decode: gpu``: nvJPEG in batches with a Pillow fallback. The GPU tests skip without CUDA (and torchvision)."""

from __future__ import annotations

import csv
import io
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from data.source_helpers import by_index
from PIL import Image
from robustness.robust_helpers import MeanColour
from robustness.test_corrupt_corpus import RAW, build_corpus
from torch.utils.data import DataLoader

from lit_infer import ConfigError, Decoding, ImageClassifier, ImageDataModule, PredictionWriter, Preprocessing
from lit_infer.data import collate
from lit_infer.data.decode import Decoder
from lit_infer.data.gpu_decode import (
    GpuJpeg,
    decode_batch,
    gpu_jpeg,
    is_jpeg,
    jpeg_is_complete,
    nvjpeg_can_take,
    resize_crop_gpu,
    resize_crop_many,
)
from lit_infer.modules import PredictionModule
from lit_infer.nets import TinyCNN
from lit_infer.records import Batch, EncodedFiles
from tests.conftest import identity_value, make_images, quiet_trainer

PRE = Preprocessing(crop_size=32, resize_size=40)


class PillowJpegIO:
    """Stands in for ``torchvision.io`` where torchvision cannot run (CI): ``decode_jpeg`` with nvJPEG's contract.

    A list of encoded uint8 tensors in, C x H x W uint8 tensors out, EXIF orientation ignored, and one file it cannot
    take fails the whole call with a RuntimeError. Decodes with Pillow and refuses progressive JPEGs (as nvJPEG's
    hardware decoder does), so every branch of :func:`decode_batch` runs on a CPU. ``given`` records each file.
    """

    class ImageReadMode:
        RGB = "RGB"

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.given: list[bytes] = []

    def decode_jpeg(self, tensors: list[torch.Tensor], mode: str, device: torch.device) -> list[torch.Tensor]:
        assert mode == "RGB" and isinstance(tensors, list)
        self.calls.append(len(tensors))
        out = []
        for tensor in tensors:
            data = tensor.numpy().tobytes()
            self.given.append(data)
            try:
                with Image.open(io.BytesIO(data)) as img:
                    if img.info.get("progressive"):
                        raise RuntimeError("progressive JPEG: not for the hardware decoder")
                    rgb = np.array(img.convert("RGB"))
            except Exception as exc:
                raise RuntimeError(f"decode_jpeg: {exc}") from exc
            out.append(torch.from_numpy(rgb).permute(2, 0, 1).contiguous().to(device))
        return out


def _encoded_batch(files: list[bytes]) -> Batch:
    n = len(files)
    return Batch(
        torch.empty(0, 3, 0, 0, dtype=torch.uint8),
        torch.arange(10, 10 + n),
        [f"f{i}" for i in range(n)],
        torch.full((n,), -1),
        [],
        EncodedFiles.pack(files),
    )


def _jpeg(seed: int, size: tuple[int, int] = (120, 90)) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).resize((size[0] // 4, size[1] // 4)).resize(size).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def test_jpeg_magic() -> None:
    assert is_jpeg(_jpeg(0)) and not is_jpeg(b"\x89PNG\r\n\x1a\n")


def _pillow_loads(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("options", [{}, {"progressive": True}, {"restart_marker_blocks": 1}], ids=str)
def test_a_jpeg_cut_short_never_reaches_nvjpeg(options: dict) -> None:
    # nvJPEG (on the H200) decoded a JPEG cut after 5,000 bytes that Pillow refuses: the GPU run had one error record
    # fewer than the CPU run. A file cut anywhere is now Pillow's to decode, whatever the scans look like.
    buf = io.BytesIO()
    Image.open(io.BytesIO(_jpeg(3, (160, 120)))).save(buf, "JPEG", quality=90, **options)
    whole = buf.getvalue()
    assert jpeg_is_complete(whole) and nvjpeg_can_take(whole, 10**8)
    for cut in [4, 100, 600, len(whole) // 2, len(whole) - 3, len(whole) - 2, len(whole) - 1]:
        assert not jpeg_is_complete(whole[:cut]), cut
        assert not nvjpeg_can_take(whole[:cut], 10**8), cut
    # A thumbnail in an APP1 segment ends with its own end-of-image marker: it is skipped by its length.
    thumbnail = _jpeg(4, (16, 12))
    app1 = b"\xff\xe1" + (2 + 6 + len(thumbnail)).to_bytes(2, "big") + b"Exif\0\0" + thumbnail
    with_thumbnail = whole[:2] + app1 + whole[2:]
    assert jpeg_is_complete(with_thumbnail)
    assert not jpeg_is_complete(with_thumbnail[: len(app1) + 2 + len(whole) // 2])
    assert _pillow_loads(whole) and not _pillow_loads(whole[: len(whole) // 2])


def test_gpu_resize_crop_matches_the_pillow_geometry(tmp_path: Path) -> None:
    # The GPU path's resize runs anywhere torch does: same output size and nearly the same pixels as Pillow's.
    data = _jpeg(1)
    decoder = Decoder(PRE)
    cpu = decoder.decode(data).numpy().astype(int)
    full = torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB"))).permute(2, 0, 1)
    gpu_path = resize_crop_gpu(full, PRE).permute(1, 2, 0).numpy().astype(int)
    assert gpu_path.shape == cpu.shape == (32, 32, 3)
    assert np.abs(gpu_path - cpu).mean() < 4.0


def test_images_of_one_size_resize_together_exactly_as_alone() -> None:
    sizes = [(90, 120), (90, 120), (200, 150), (90, 120), (33, 48)]
    images = [
        torch.from_numpy(np.array(Image.open(io.BytesIO(_jpeg(i, s))))).permute(2, 0, 1) for i, s in enumerate(sizes)
    ]
    together = resize_crop_many(images, PRE)
    assert len(together) == len(images)
    for image, out in zip(images, together, strict=True):
        assert torch.equal(out, resize_crop_gpu(image, PRE))  # same image, same place: order and pixels kept


def test_decode_batch_routes_each_file_and_keeps_order() -> None:
    png = io.BytesIO()
    Image.fromarray(np.full((50, 60, 3), 7, dtype=np.uint8)).save(png, "PNG")
    progressive = io.BytesIO()
    Image.open(io.BytesIO(_jpeg(2))).save(progressive, "JPEG", progressive=True, quality=95)
    files = [_jpeg(0), png.getvalue(), b"\xff\xd8\xff broken jpeg", progressive.getvalue(), _jpeg(1, (90, 120))]
    stand_in = PillowJpegIO()
    decoder = Decoder(PRE)
    out = decode_batch(
        _encoded_batch(files), decoder, torch.device("cpu"), GpuJpeg("stand-in", stand_in.decode_jpeg, "RGB")
    )
    assert stand_in.calls[0] == 5  # one batched call first; it failed on the broken file, then one by one
    assert out.indices.tolist() == [10, 11, 13, 14] and out.paths == ["f0", "f1", "f3", "f4"]
    assert [(f.index, f.path) for f in out.failures] == [(12, "f2")]
    assert out.images.shape == (4, 3, 32, 32) and out.images.is_contiguous(memory_format=torch.channels_last)
    for row, i in enumerate([0, 1, 3, 4]):  # the PNG and the refused progressive JPEG: Pillow, the CPU path's pixels
        cpu = decoder.decode(files[i]).permute(2, 0, 1).numpy().astype(int)
        diff = np.abs(out.images[row].numpy().astype(int) - cpu)
        assert diff.max() == 0 if i in (1, 3) else diff.mean() < 4.0


@pytest.mark.slow
def test_workers_decode_what_nvjpeg_should_not_take(tmp_path: Path) -> None:
    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(io.BytesIO(_jpeg(0))).save(rotated, "JPEG", exif=exif.tobytes())
    (tmp_path / "a.jpg").write_bytes(_jpeg(1))
    (tmp_path / "b.jpg").write_bytes(rotated.getvalue())
    Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(tmp_path / "c.png")
    (tmp_path / "d.jpg").write_bytes(_jpeg(2))
    paths = [str(tmp_path / n) for n in ("a.jpg", "b.jpg", "c.png", "d.jpg")]
    ds = by_index(paths, Decoder(PRE), decode=False)
    batch = collate([ds[i] for i in range(4)])
    assert batch.encoded is not None
    assert batch.encoded.has_bytes() == [True, False, False, True]
    assert batch.encoded.to_list()[0] == (tmp_path / "a.jpg").read_bytes()
    assert batch.images.shape == (2, 3, 32, 32)  # the rotated JPEG (upright) and the PNG, in order
    assert torch.equal(batch.images[0].permute(1, 2, 0), Decoder(PRE)(paths[1]))
    assert collate([ds[2]]).encoded is None  # nothing left for the device: a plain batch
    # From a worker process the packed files arrive as shared memory, not pickled bytes.
    from_worker = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate, num_workers=1)))
    assert from_worker.encoded.data.is_shared() and from_worker.encoded.to_list() == batch.encoded.to_list()


def test_gpu_decode_predicts_every_good_image_from_its_own_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The corrupt corpus of the robustness tests through decode=gpu, end to end on a CPU with the stand-in decoder.
    images = tmp_path / "images"
    good, bad = build_corpus(images)
    for i in range(5):  # plain JPEGs, for nvJPEG (the corpus's good images are PNGs)
        value = identity_value(30 + i) + 20
        Image.fromarray(np.full((36, 40, 3), value, dtype=np.uint8)).save(images / f"img_1000{i}.jpg", quality=95)
        good[f"img_1000{i}.jpg"] = value
    cut = _jpeg(3, (200, 150))
    (images / "img_20000_cut.jpg").write_bytes(cut[: len(cut) * 3 // 4])  # its header is whole, its scan cut
    bad["img_20000_cut.jpg"] = "bad"
    stand_in = PillowJpegIO()
    monkeypatch.setattr("lit_infer.data.gpu_decode.gpu_jpeg", lambda: GpuJpeg("stand-in", stand_in.decode_jpeg, "RGB"))
    module = PredictionModule(net=MeanColour(), preprocessing=RAW)
    data = ImageDataModule(images, batch_size=4, num_workers=2, preprocessing=RAW, decoding=Decoding(decode="gpu"))
    quiet_trainer(PredictionWriter(tmp_path / "out")).predict(module, datamodule=data, return_predictions=False)
    rows = list(csv.DictReader((tmp_path / "out" / "predictions.csv").open()))
    assert sorted(Path(r["path"]).name for r in rows) == sorted(good)
    for row in rows:
        means = [float(row[f"output_{c}"]) * 255 for c in (1, 2, 3)]
        assert np.allclose(means, good[Path(row["path"]).name], atol=3.0), row
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert sorted(Path(e["path"]).name for e in errors) == sorted(bad)
    given = set(stand_in.given)
    # Decoded (or refused, the cut one: nvJPEG would fill in its missing rows) by the workers with Pillow.
    for name in (
        "img_00002_cmyk.jpg",
        "img_00006_exif.jpg",
        "img_00004_deep16.png",
        "img_00000.png",
        "img_20000_cut.jpg",
    ):
        assert (images / name).read_bytes() not in given, name
    for name in ("img_10000.jpg", "img_10004.jpg"):
        assert (images / name).read_bytes() in given, name


def _fake_module(monkeypatch: pytest.MonkeyPatch, name: str, **attrs: object) -> None:
    parent = types.ModuleType(name.split(".")[0])
    child = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(child, key, value)
    setattr(parent, name.split(".")[1], child)
    monkeypatch.setitem(sys.modules, name.split(".")[0], parent)
    monkeypatch.setitem(sys.modules, name, child)


@pytest.fixture
def fresh_choice() -> Iterator[None]:
    gpu_jpeg.cache_clear()  # the choice is made once per process
    yield
    gpu_jpeg.cache_clear()


def test_torchcodec_decodes_where_it_is_installed(monkeypatch: pytest.MonkeyPatch, fresh_choice: None) -> None:
    stand_in = PillowJpegIO()  # TorchCodec's decode_jpeg(list, mode="RGB", device=...) has nvJPEG's contract too
    _fake_module(monkeypatch, "torchcodec.decoders", decode_jpeg=stand_in.decode_jpeg)
    jpeg = gpu_jpeg()
    assert (jpeg.name, jpeg.rgb) == ("torchcodec", "RGB")
    out = decode_batch(_encoded_batch([_jpeg(0), _jpeg(1), _jpeg(2)]), Decoder(PRE), torch.device("cpu"))
    assert out.images.shape == (3, 3, 32, 32) and stand_in.calls == [3]  # one batched call


def test_torchvision_decodes_without_torchcodec(monkeypatch: pytest.MonkeyPatch, fresh_choice: None) -> None:
    monkeypatch.setitem(sys.modules, "torchcodec", None)  # not installed
    stand_in = PillowJpegIO()
    _fake_module(
        monkeypatch, "torchvision.io", decode_jpeg=stand_in.decode_jpeg, ImageReadMode=PillowJpegIO.ImageReadMode
    )
    assert gpu_jpeg().name == "torchvision"
    out = decode_batch(_encoded_batch([_jpeg(0), _jpeg(1)]), Decoder(PRE), torch.device("cpu"))
    assert len(out) == 2 and stand_in.calls == [2]


def test_without_either_the_error_names_the_setting(monkeypatch: pytest.MonkeyPatch, fresh_choice: None) -> None:
    monkeypatch.setitem(sys.modules, "torchcodec", None)
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(ConfigError, match=r"data\.decoding\.decode='gpu'.*TorchCodec.*torchvision"):
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
    dm = ImageDataModule(
        tmp_path / "imgs", batch_size=8, num_workers=2, preprocessing=PRE, decoding=Decoding(decode="gpu")
    )
    module = ImageClassifier(net=TinyCNN(width=4, depth=2), preprocessing=PRE)
    trainer = L.Trainer(accelerator="gpu", devices=1, logger=False, callbacks=[PredictionWriter(tmp_path / "out")])
    trainer.predict(module, datamodule=dm, return_predictions=False)
    with open(tmp_path / "out" / "predictions.csv") as f:
        assert [int(r["index"]) for r in csv.DictReader(f)] == list(range(20))
    assert (tmp_path / "out" / "errors.jsonl").read_text().count("img_00020.jpg") == 1


def test_rotated_cmyk_and_oversized_jpegs_never_reach_nvjpeg() -> None:
    from lit_infer.data.decode import ImageTooLarge

    plain = _jpeg(0)
    assert nvjpeg_can_take(plain, 10**8)
    png = io.BytesIO()
    Image.open(io.BytesIO(plain)).save(png, "PNG")
    assert not nvjpeg_can_take(png.getvalue(), 10**8)
    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90": nvJPEG would hand back the sideways pixels
    Image.open(io.BytesIO(plain)).save(rotated, "JPEG", exif=exif.tobytes())
    assert not nvjpeg_can_take(rotated.getvalue(), 10**8)
    cmyk = io.BytesIO()
    Image.open(io.BytesIO(plain)).convert("CMYK").save(cmyk, "JPEG")
    assert not nvjpeg_can_take(cmyk.getvalue(), 10**8)
    with pytest.raises(ImageTooLarge):
        nvjpeg_can_take(plain, 100)
