"""A folder of good images among corrupt, hostile and unusual ones: every good image predicted from its own file,
every bad one in errors.jsonl exactly once, and ``writer.max_errors`` deciding the exit status."""

from __future__ import annotations

import errno
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import identity_value, make_images, quiet_trainer
from PIL import Image

from lit_infer.callbacks import PredictionWriter
from lit_infer.cli import main
from lit_infer.data import ImageDataModule, Loader, Reading, reading
from lit_infer.data.decode import Decoder
from lit_infer.errors import ConfigError
from lit_infer.lifecycle.budget import TooManyErrors, allowed_failures, check_max_errors
from lit_infer.modules import PredictionModule
from lit_infer.preprocessing import Preprocessing
from robustness.robust_helpers import HERE, MeanColour, cli_env

RAW = Preprocessing(crop_size=16, resize_size=16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
N_GOOD = 12


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A 200-byte PNG whose header claims 10 gigapixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + _png_chunk(b"IEND", b"")
    )


def _flat(value: int, size: tuple[int, int] = (40, 30)) -> np.ndarray:
    return np.full((size[1], size[0], 3), value, dtype=np.uint8)


def build_corpus(root: Path) -> tuple[dict[str, int], dict[str, str]]:
    """Good images (path name -> expected mean pixel value) and bad ones (path name -> kind), interleaved by name."""
    good = {p.name: identity_value(i) + 19.5 for i, p in enumerate(make_images(root, N_GOOD, size=(40, 36)))}
    # Unusual but valid: decoded correctly, each with its own known colour.
    cmyk, deep, rotated = identity_value(20) + 20, identity_value(21) + 20, identity_value(22) + 20
    Image.fromarray(_flat(cmyk)).convert("CMYK").save(root / "img_00002_cmyk.jpg", quality=100)
    Image.fromarray(np.full((30, 40), deep * 257, dtype=np.uint16)).save(root / "img_00004_deep16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    Image.fromarray(_flat(rotated, (30, 40))).save(root / "img_00006_exif.jpg", quality=100, exif=exif.tobytes())
    good.update({"img_00002_cmyk.jpg": cmyk, "img_00004_deep16.png": deep, "img_00006_exif.jpg": rotated})

    buf = io.BytesIO()
    Image.fromarray(_flat(100)).save(buf, "JPEG", quality=90)
    jpeg = buf.getvalue()
    png = (root / "img_00000.png").read_bytes()
    bad = {
        "img_00001_truncated.jpg": jpeg[: len(jpeg) // 2],
        "img_00003_truncated.png": png[: len(png) * 2 // 3],
        "img_00005_empty.png": b"",
        "img_00007_random.jpg": np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes(),
        "img_00008_text.jpg": b"this is not an image, only a text file with a .jpg name\n",
        "img_00009_bomb.png": bomb_png(),
    }
    for name, data in bad.items():
        (root / name).write_bytes(data)
    return good, dict.fromkeys(bad, "bad")


def _predict(source: Path, out: Path, max_errors: int | float | None = None, workers: int = 2) -> PredictionWriter:
    module = PredictionModule(net=MeanColour(), preprocessing=RAW)
    data = ImageDataModule(
        source, batch_size=4, num_workers=workers, preprocessing=RAW, loader=Loader(persistent_workers=False)
    )
    writer = PredictionWriter(out, max_errors=max_errors)
    trainer = quiet_trainer(writer)
    trainer.predict(module, datamodule=data, return_predictions=False)
    return writer


def test_each_good_image_predicted_from_its_own_file_each_bad_one_recorded_once(tmp_path: Path) -> None:
    images = tmp_path / "images"
    good, bad = build_corpus(images)
    _predict(images, tmp_path / "out")
    out = tmp_path / "out"
    rows = [line.split(",") for line in (out / "predictions.csv").read_text().splitlines()]
    assert rows[0] == ["index", "path", "output_1", "output_2", "output_3"]
    names = sorted(good) + sorted(bad)
    order = sorted(names)
    assert sorted(Path(r[1]).name for r in rows[1:]) == sorted(good)
    for index, path, *means in rows[1:]:
        name = Path(path).name
        assert order.index(name) == int(index)  # the dataset index is the file's place in sorted order
        # Its own colour, not a neighbour's: identity values of neighbours differ by 7 or more.
        assert np.allclose(np.asarray(means, dtype=float) * 255, good[name], atol=3.0), (name, means)

    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert sorted(Path(e["path"]).name for e in errors) == sorted(bad)  # each exactly once
    for e in errors:
        assert set(e) == {"index", "path", "error_type", "message"}
        assert order.index(Path(e["path"]).name) == e["index"]
    kinds = {Path(e["path"]).name: e["error_type"] for e in errors}
    assert kinds["img_00009_bomb.png"] in ("DecompressionBombError", "ImageTooLarge")
    assert kinds["img_00005_empty.png"] == "UnidentifiedImageError"
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["num_items"], summary["num_predicted"], summary["num_failed"]) == (len(order), len(good), len(bad))


def test_max_pixels_turns_a_large_image_into_an_error_record(tmp_path: Path) -> None:
    decoder = Decoder(RAW, max_pixels=1000)
    path = tmp_path / "big.png"
    Image.fromarray(_flat(50, (40, 30))).save(path)
    with pytest.raises(ValueError, match="max_pixels=1000"):
        decoder(str(path))
    assert Decoder(RAW, max_pixels=2000)(str(path)).shape == (16, 16, 3)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    arr = np.zeros((32, 32, 3), dtype=np.uint8)
    arr[:, 16:] = 255  # right half white
    exif = Image.Exif()
    exif[0x0112] = 3  # rotate 180 degrees on display: the white half shows on the left
    Image.fromarray(arr).save(tmp_path / "r.png", exif=exif.tobytes())
    out = Decoder(Preprocessing(crop_size=32, resize_size=32))(str(tmp_path / "r.png")).numpy()
    assert out[:, :16].min() == 255 and out[:, 16:].max() == 0


def test_a_transient_read_error_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # EIO from a flaky network mount cannot be produced on a local disk; inject it at the one call that reads.
    path = make_images(tmp_path, 1)[0]
    calls = []
    real = reading.read_regular_file

    def flaky_read(file: str) -> bytes:
        calls.append(file)
        if len(calls) < 3:
            raise OSError(errno.EIO, "Input/output error", file)
        return real(file)

    monkeypatch.setattr(reading, "read_regular_file", flaky_read)
    decoder = Decoder(RAW, reading=Reading(io_retries=2), io_backoff_s=0.001)
    assert decoder(str(path)).shape == (16, 16, 3) and len(calls) == 3
    calls.clear()
    with pytest.raises(OSError):
        Decoder(RAW, reading=Reading(io_retries=1), io_backoff_s=0.001)(str(path))


@pytest.mark.slow
def test_max_errors_decides_the_exit_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "images"
    _, bad = build_corpus(images)
    for key, value in cli_env().items():
        if key in ("LIT_INFER_ALLOW_IMPORTS",):
            monkeypatch.setenv(key, value)
    monkeypatch.syspath_prepend(str(HERE))
    config = {
        "model": {
            "class_path": "lit_infer.PredictionModule",
            "init_args": {
                "net": {"class_path": "robust_helpers.MeanColour"},
                "preprocessing": {"crop_size": 16, "resize_size": 16, "mean": [0, 0, 0], "std": [1, 1, 1]},
            },
        },
        "data": {"class_path": "lit_infer.ImageDataModule", "init_args": {"source": str(images), "num_workers": 0}},
        "trainer": {"accelerator": "cpu", "devices": 1},
    }
    (tmp_path / "c.yaml").write_text(json.dumps(config))
    base = ["predict", "--config", str(tmp_path / "c.yaml")]

    main([*base, "--writer.output_dir", str(tmp_path / "ok"), "--writer.max_errors", str(len(bad))])  # no exit
    assert json.loads((tmp_path / "ok" / "summary.json").read_text())["num_failed"] == len(bad)

    with pytest.raises(SystemExit) as exc:  # a count: stops as soon as it is exceeded, naming the first failures
        main([*base, "--writer.output_dir", str(tmp_path / "over"), "--writer.max_errors", str(len(bad) - 1)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "writer.max_errors=5" in err and "img_00001_truncated.jpg" in err
    with pytest.raises(SystemExit) as exc:  # a fraction: 0.2 of 21 inputs allows 4 failures, 6 happened
        main([*base, "--writer.output_dir", str(tmp_path / "frac"), "--writer.max_errors", "0.2"])
    assert exc.value.code == 2
    # Checked at the end: the outputs are there to read even though the run failed.
    assert len((tmp_path / "frac" / "errors.jsonl").read_text().splitlines()) == len(bad)
    assert "errors.jsonl" in capsys.readouterr().err


def test_max_errors_fails_early_on_a_count_and_checks_again_on_rerun(tmp_path: Path) -> None:
    images = tmp_path / "images"
    build_corpus(images)
    with pytest.raises(TooManyErrors, match=r"writer\.max_errors=0"):
        _predict(images, tmp_path / "out", max_errors=0, workers=0)
    _predict(images, tmp_path / "out2", max_errors=0.5, workers=0)  # 6 of 21 is below half
    with pytest.raises(TooManyErrors):  # finished run, stricter budget: nothing recomputed, still refused
        _predict(images, tmp_path / "out2", max_errors=0.1, workers=0)


def test_max_errors_values() -> None:
    assert allowed_failures(None, 100) is None
    assert allowed_failures(3, 100) == 3
    assert allowed_failures(0.05, 100) == 5
    assert check_max_errors(6.0) == 6 and isinstance(check_max_errors(6.0), int)
    for wrong in (-1, 1.5, -0.1, True, "ten", float("nan")):
        with pytest.raises(ConfigError, match=r"writer\.max_errors"):
            check_max_errors(wrong)  # type: ignore[arg-type]
