"""The root folder and the home folder itself are refused as output folders (``writer.overwrite`` would delete
there); the weights hash holds no network and follows in-place changes of the weights."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch

from lit_infer.cli import main
from lit_infer.modules import PredictionModule
from lit_infer.nets import TinyCNN
from robustness.robust_helpers import REPO, cli_env


def _config(tmp_path: Path) -> Path:
    config = {
        "model": {
            "class_path": "lit_infer.ImageClassifier",
            "init_args": {"net": {"class_path": "lit_infer.nets.TinyCNN", "init_args": {"num_classes": 2}}},
        },
        "data": {"class_path": "lit_infer.ImageDataModule", "init_args": {"source": str(tmp_path)}},
        "trainer": {"accelerator": "cpu", "devices": 1},
    }
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.slow
def test_the_root_folder_is_refused_as_output_dir(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lit_infer", "predict", "--config", str(_config(tmp_path)), "--writer.output_dir", "/"],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1
    assert "writer.output_dir='/': is the root folder" in done.stderr


@pytest.mark.parametrize("value", ["~/", "$HOME", "HOME/", "HOME/sub/..", "/"])
@pytest.mark.parametrize("key", ["output_dir", "work_dir"])
def test_home_and_root_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, value: str, key: str
) -> None:
    home = tmp_path / "home"
    (home / "sub").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    value = value.replace("HOME/", f"{home}/")
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--config", str(_config(tmp_path)), f"--writer.{key}", value])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1, err
    assert f"writer.{key}=" in err and ("home folder itself" in err or "root folder" in err), err
    assert os.listdir(home) == ["sub"]


def test_the_weights_hash_holds_no_network_and_follows_in_place_changes() -> None:
    net = TinyCNN(num_classes=2, width=4, depth=1)
    module = PredictionModule(net=net)
    before = module.fingerprint()["weights"]["parameters_sha256"]
    with torch.no_grad():
        next(net.parameters()).add_(1.0)  # weights changed in place: same object, other outputs
    after = module.fingerprint()["weights"]["parameters_sha256"]
    assert after != before
    ref = weakref.ref(net)
    del module, net
    gc.collect()
    assert ref() is None, "something (a cache) keeps the network alive"
