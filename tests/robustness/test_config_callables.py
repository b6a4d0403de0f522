"""A config may not pick a function to run where a callable is expected: ``ThroughputMonitor(batch_size_fn:
lit_infer.output.lock.release)`` is refused in one line before anything runs, through the real CLI too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_images

from lit_infer.cli import main
from robustness.robust_helpers import REPO, cli_env

CALLBACK = "lightning.pytorch.callbacks.ThroughputMonitor"


def _config(tmp_path: Path, fn: str) -> Path:
    make_images(tmp_path / "images", 3, size=(20, 20))
    config = {
        "model": {
            "class_path": "lit_infer.ImageClassifier",
            "init_args": {"net": {"class_path": "lit_infer.nets.TinyCNN", "init_args": {"num_classes": 2}}},
        },
        "data": {"class_path": "lit_infer.ImageDataModule", "init_args": {"source": str(tmp_path / "images")}},
        "writer": {"output_dir": str(tmp_path / "out")},
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "enable_progress_bar": False,
            "callbacks": [{"class_path": CALLBACK, "init_args": {"batch_size_fn": fn}}],
        },
    }
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.slow
def test_a_function_by_import_path_as_a_callback_argument_is_refused(tmp_path: Path) -> None:
    config = _config(tmp_path, "lit_infer.output.lock.release")
    done = subprocess.run(
        [sys.executable, "-m", "lit_infer", "predict", "--config", str(config)],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "trainer.callbacks.batch_size_fn='lit_infer.output.lock.release'" in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fn", ["lit_infer.atomic.atomic_open", "torch.nn.init.zeros_", "torch.nn.functional.relu"])
def test_any_function_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], fn: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--config", str(_config(tmp_path, fn))])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1, err
    assert "trainer.callbacks.batch_size_fn=" in err and "may not choose a function" in err
