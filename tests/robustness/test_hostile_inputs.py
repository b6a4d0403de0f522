"""No single input stops the run: odd names, symlink loops, FIFOs/devices/folders named like images, odd characters
in lists, byte-order marks and short rows in tables, and reads that hang. Each becomes its own record, and every
output format holds every name."""

from __future__ import annotations

import codecs
import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_images
from data.source_helpers import discover
from PIL import Image

from lit_infer.cli import main
from lit_infer.data.reading import NotARegularFile, ReadTimeout, read_image_file

ODD = os.fsdecode(b"odd\xff\\name.png")  # not UTF-8, with a backslash: must come back byte for byte


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), (200, 10, 10)).save(path, format="PNG")
    return path


def _hostile_folder(root: Path) -> Path:
    make_images(root, 2)
    _image(root / ODD)
    os.symlink("loop_b.png", root / "loop_a.png")
    os.symlink("loop_a.png", root / "loop_b.png")
    os.mkfifo(root / "pipe.jpg")
    (root / "folder.jpg").mkdir()  # a folder named like an image: walked, not an item
    _image(root / "folder.jpg" / "inner.png")
    return root


def _run(tmp_path: Path, source: Path, fmt: str, capsys: pytest.CaptureFixture[str], **data: object) -> Path:
    out = tmp_path / f"out_{fmt}"
    config = {
        "model": {
            "class_path": "lit_infer.ImageClassifier",
            "init_args": {
                "net": {"class_path": "lit_infer.nets.TinyCNN", "init_args": {"num_classes": 3}},
                "top_k": 1,
                "preprocessing": {"crop_size": 8, "resize_size": 8},
            },
        },
        "data": {
            "class_path": "lit_infer.ImageDataModule",
            "init_args": {"source": str(source), "num_workers": 0, "batch_size": 2, **data},
        },
        "writer": {"output_dir": str(out), "format": fmt},
        "trainer": {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False},
    }
    (tmp_path / "c.yaml").write_text(json.dumps(config))
    try:
        main(["predict", "--config", str(tmp_path / "c.yaml")])
    except SystemExit as exc:
        raise AssertionError(capsys.readouterr().err[-1500:]) from exc
    return out


def _paths(out: Path, fmt: str) -> list[str]:
    if fmt in ("csv", "npy"):
        with (out / "predictions.csv").open(encoding="utf-8", newline="") as f:
            return [row["path"] for row in csv.DictReader(f)]
    if fmt == "jsonl":
        return [json.loads(line)["path"] for line in (out / "predictions.jsonl").read_text("utf-8").splitlines()]
    import pyarrow.parquet as pq

    return pq.read_table(out / "predictions.parquet").column("path").to_pylist()


def _unescape(text: str) -> bytes:
    return codecs.escape_decode(text.encode("utf-8"))[0] if "\\x" in text else text.encode("utf-8")


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "npy"])
def test_a_hostile_folder_ends_as_one_record_per_item_in_every_format(
    fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    source = _hostile_folder(tmp_path / "images")
    out = _run(tmp_path, source, fmt, capsys)
    predicted = _paths(out, fmt)
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text("utf-8").splitlines()]
    names = {os.path.basename(_unescape(p)) for p in predicted}
    assert names == {b"img_00000.png", b"img_00001.png", b"inner.png", os.fsencode(ODD)}
    refused = {os.path.basename(e["path"]): e for e in errors}
    assert set(refused) == {"loop_a.png", "loop_b.png", "pipe.jpg"}
    assert "FIFO" in refused["pipe.jpg"]["message"] and "not opened" in refused["pipe.jpg"]["message"]


def test_a_device_or_folder_named_in_a_list_is_refused_unopened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    real_open = os.open

    def spy(path: str, *args: object, **kwargs: object) -> int:
        opened.append(os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    with pytest.raises(NotARegularFile, match="character device"):
        read_image_file("/dev/zero")
    (tmp_path / "d.png").mkdir()
    with pytest.raises(NotARegularFile, match="a folder"):
        read_image_file(str(tmp_path / "d.png"))
    os.mkfifo(tmp_path / "p.png")
    with pytest.raises(NotARegularFile, match="FIFO"):
        read_image_file(str(tmp_path / "p.png"), timeout=None)  # refused from stat: no writer needed, no wait
    assert opened == []  # refused from the stat alone: none of the three was opened
    _image(tmp_path / "ok.png")
    assert read_image_file(str(tmp_path / "ok.png"), timeout=None) and opened == [str(tmp_path / "ok.png")]


def test_list_entries_split_on_newline_only_and_keep_odd_bytes(tmp_path: Path) -> None:
    odd = "line\u2028sep\x85next\x0cpage.png"
    for name in [odd, "café.png"]:
        _image(tmp_path / name)
    latin1 = os.fsdecode("café.png".encode("latin-1"))
    _image(tmp_path / latin1)
    text = f"{odd}\r\ncafé.png\n".encode() + "café.png\n".encode("latin-1")
    (tmp_path / "list.txt").write_bytes(b"\xef\xbb\xbf" + text)  # with a byte-order mark
    items = discover(tmp_path / "list.txt")
    assert [os.path.basename(p) for p in items.paths] == [odd, "café.png", latin1]
    assert all(os.path.isfile(p) for p in items.paths)


def test_csv_with_bom_short_rows_and_latin1_cells(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    _image(tmp_path / os.fsdecode("é.png".encode("latin-1")))
    body = b"path,label\r\na.png,cat\r\n" + "é.png,dog\r\n".encode("latin-1") + b"\r\n,\r\nb.png\r\n"
    (tmp_path / "t.csv").write_bytes(b"\xef\xbb\xbf" + body)
    items = discover(tmp_path / "t.csv")
    assert len(items) == 4  # the blank line is no row; the empty one and the short one are
    assert os.path.isfile(items.paths[1]) and items.labels[3] < 0
    assert [i for i, _ in items.rejected] == [2]  # the row without a path; b.png (short) just has no label


def _hold_lease(path: Path) -> subprocess.Popen:
    """Another process takes a write lease on ``path``: the kernel then blocks every other open of it (up to
    /proc/sys/fs/lease-break-time, 45 s by default) -- a real hung read on a regular file."""
    code = (
        "import fcntl, os, signal, sys, time\n"
        "signal.signal(signal.SIGIO, signal.SIG_IGN)\n"
        f"fd = os.open({str(path)!r}, os.O_RDONLY)\n"
        "fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)\n"
        "print('held', flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"held":
        proc.kill()
        pytest.skip(f"no file lease here: {proc.stderr.read().decode()[-200:] if proc.stderr else ''}")
    return proc


@pytest.mark.slow
def test_a_read_that_hangs_is_that_items_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_images(tmp_path / "images", 3)
    stuck = tmp_path / "images" / "img_00001.png"
    holder = _hold_lease(stuck)
    try:
        with pytest.raises(ReadTimeout):
            read_image_file(str(stuck), timeout=0.5)
        assert read_image_file(str(tmp_path / "images" / "img_00000.png"), timeout=0.5)  # the next read works
        # Without the timeout the open would wait out the lease break (45 s) and then succeed: the image would be
        # predicted, not this item's error record (checked below), so no wall-clock bound is needed here.
        out = _run(tmp_path, tmp_path / "images", "csv", capsys, reading={"read_timeout": 0.5})
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert len(_paths(out, "csv")) == 2
    (error,) = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert error["path"].endswith("img_00001.png") and "data.reading.read_timeout" in error["message"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("loader.prefetch_factor", 0),
        ("reading.io_retries", -1),
        ("decoding.max_pixels", 0),
        ("reading.read_timeout", 0),
    ],
)
def test_bad_reader_settings_are_one_line_naming_the_key(
    key: str, value: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_images(tmp_path / "images", 1)
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "predict",
                "--data.source",
                str(tmp_path / "images"),
                f"--data.{key}",
                str(value),
                "--model.net",
                "lit_infer.nets.TinyCNN",
                "--writer.output_dir",
                str(tmp_path / "o"),
            ]
        )
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"data.{key}={value!r}" in err and len(err.strip().splitlines()) <= 3, err
