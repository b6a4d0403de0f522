"""Path options that name a file to read (``model.class_names``, ``model.weights``, ``model.torchscript``, a list as
``data.source``) refuse special files from their ``stat`` alone, and class names are text lines, at most one per
output of the network: ``--model.class_names /proc/self/environ`` copies nothing into the outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_images

from lit_infer.data.access import check_regular_file
from lit_infer.errors import ConfigError
from lit_infer.modules import ImageClassifier
from lit_infer.nets import TinyCNN
from robustness.robust_helpers import REPO, cli_env, refused_in_one_line

CLASS_NAMES = ["--model.class_names", "/proc/self/environ"]


def _config(tmp_path: Path, **model: object) -> Path:
    make_images(tmp_path / "images", 3, size=(20, 20))
    config = {
        "model": {
            "class_path": "lit_infer.ImageClassifier",
            "init_args": {"net": {"class_path": "lit_infer.nets.TinyCNN", "init_args": {"num_classes": 2}}, **model},
        },
        "data": {"class_path": "lit_infer.ImageDataModule", "init_args": {"source": str(tmp_path / "images")}},
        "writer": {"output_dir": str(tmp_path / "out")},
        "trainer": {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False},
    }
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.slow
def test_class_names_from_proc_self_environ_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    config = _config(tmp_path)
    env = {**cli_env(), "MY_SECRET_TOKEN": "s3cr3t-value"}
    done = subprocess.run(
        [sys.executable, "-m", "lit_infer", "predict", "--config", str(config), *CLASS_NAMES],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1
    assert "model.class_names='/proc/self/environ': is under /proc" in done.stderr
    assert not (tmp_path / "out").exists() or not any(
        "s3cr3t" in p.read_text() for p in (tmp_path / "out").rglob("*") if p.is_file()
    )


@pytest.mark.parametrize(
    "special", ["/proc/self/environ", "/proc/self/mem", "/dev/zero", "/sys/kernel/mm", "FIFO", "LINK", "DIR"]
)
@pytest.mark.parametrize("key", ["class_names", "weights", "torchscript"])
def test_special_files_are_refused_for_every_file_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], special: str, key: str
) -> None:
    if special == "FIFO":
        special = str(tmp_path / "names.txt")
        os.mkfifo(special)  # opening it would hang the run
    elif special == "LINK":
        special = str(tmp_path / "classes.txt")
        os.symlink("/proc/self/environ", special)
    elif special == "DIR":
        special = str(tmp_path)
    elif not os.path.exists(special):
        pytest.skip(f"{special} does not exist here")
    extra = {"trust_torchscript": True, "net": None} if key == "torchscript" else {}
    config = _config(tmp_path, **{key: special}, **extra)
    err = refused_in_one_line(["--config", str(config)], capsys)
    assert f"model.{key}={special!r}" in err and "not opened" in err, err


@pytest.mark.parametrize("special", ["/proc/self/environ", "FIFO", "LINK"])
def test_a_special_file_as_the_list_source_isrefused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], special: str
) -> None:
    if special == "FIFO":
        special = str(tmp_path / "list.txt")
        os.mkfifo(special)
    elif special == "LINK":
        special = str(tmp_path / "list.txt")
        os.symlink("/proc/self/environ", special)
    config = _config(tmp_path)
    err = refused_in_one_line(["--config", str(config), "--data.source", special], capsys)
    assert f"data.source={special!r}" in err and "not opened" in err, err


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"cat\x00dog\x00", "control characters"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"a\nb\nc\n", "has 3 names for a network with 2 outputs"),
    ],
)
def test_class_names_must_be_text_lines_one_per_output(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "classes.txt"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=problem) as exc:
        ImageClassifier(net=TinyCNN(num_classes=2, width=4, depth=1), class_names=str(path))
    assert str(exc.value).startswith("model.class_names=")
    with pytest.raises(ConfigError, match="has 3 names for a network with 2 outputs"):
        ImageClassifier(net=TinyCNN(num_classes=2, width=4, depth=1), class_names=["a", "b", "c"])
    path.write_text("\ufeffcat\r\ndog\r\n", encoding="utf-8")  # a BOM and CRLF are still text lines
    assert ImageClassifier(net=TinyCNN(num_classes=2, width=4, depth=1), class_names=str(path)).class_names == [
        "cat",
        "dog",
    ]


def test_a_network_without_a_final_linear_is_checked_on_its_output() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    module = ImageClassifier(net=net, class_names=["a", "b", "c"])
    with pytest.raises(ConfigError, match="has 3 names for a network with 2 outputs"):
        module.check_output(torch.zeros(1, 2))


def test_regular_files_pass(tmp_path: Path) -> None:
    (tmp_path / "ok.txt").write_text("x\n")
    os.symlink(tmp_path / "ok.txt", tmp_path / "link.txt")
    check_regular_file(tmp_path / "ok.txt", "model.class_names")
    check_regular_file(tmp_path / "link.txt", "model.class_names")
