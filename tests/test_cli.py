"""The CLI as a user runs it: a subprocess of ``lit-infer`` / ``python -m lit_infer`` on real image files."""

from __future__ import annotations

import csv
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import make_images

pytestmark = pytest.mark.slow  # every test here starts processes

REPO = Path(__file__).resolve().parents[1]
N = 203

CONFIG = """
model:
  class_path: lit_infer.ImageClassifier
  init_args:
    net:
      class_path: lit_infer.nets.TinyCNN
      init_args: {num_classes: 3, width: 4, depth: 1}
    top_k: 2
    preprocessing: {crop_size: 16, resize_size: 16}
data:
  class_path: lit_infer.ImageDataModule
  init_args:
    source: SOURCE
    batch_size: 16
    num_workers: 2
trainer:
  accelerator: cpu
  devices: 1
"""

FEATURES = """
model:
  class_path: lit_infer.FeatureExtractor
  init_args:
    net:
      class_path: lit_infer.nets.TinyCNN
      init_args: {num_classes: 3, width: 4, depth: 1}
    normalize: true
    preprocessing: {crop_size: 16, resize_size: 16}
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "imgs"
    make_images(root, N, size=(24, 20))
    return root


@pytest.fixture
def config(corpus: Path, tmp_path: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(CONFIG.replace("SOURCE", str(corpus)), encoding="utf-8")
    return path


def _cli(*args: str, cwd: Path, script: bool = False, timeout: int = 180) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "lit-infer")] if script else [sys.executable, "-m", "lit_infer"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def _expected_paths(corpus: Path) -> list[str]:
    return [str(corpus / f"img_{i:05d}.png") for i in range(N)]


def test_predict_without_a_writer_section_writes_to_the_default_place(
    config: Path, corpus: Path, tmp_path: Path
) -> None:
    if not (Path(sys.executable).parent / "lit-infer").exists():
        pytest.skip("console script not installed in this environment")
    output = _ok(_cli("predict", "--config", str(config), cwd=tmp_path, script=True))
    table = tmp_path / "outputs" / "imgs" / "predictions.csv"
    assert os.path.join("outputs", "imgs", "predictions.csv") in output  # says where the predictions went
    with table.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == N
    assert [int(r["index"]) for r in rows] == list(range(N))
    assert [r["path"] for r in rows] == _expected_paths(corpus)  # each path once, in dataset order
    assert all(r["pred"] == r["topk_pred_1"] for r in rows)
    summary = json.loads((tmp_path / "outputs" / "imgs" / "summary.json").read_text())
    assert (summary["num_predicted"], summary["num_failed"]) == (N, 0)
    assert "img/s" in output  # the progress bar shows images per second


def test_predict_jsonl_with_command_line_overrides(config: Path, corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _ok(
        _cli(
            "predict",
            "--config",
            str(config),
            "--writer.format",
            "jsonl",
            "--writer.output_dir",
            str(out),
            "--trainer.enable_progress_bar",
            "false",  # our images/s bar is a default callback: switching the bar off must drop it, not fail
            cwd=tmp_path,
        )
    )
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(N))
    assert [r["path"] for r in rows] == _expected_paths(corpus)
    assert all(len(r["topk_pred"]) == 2 and 0 <= r["pred"] < 3 for r in rows)


def test_embeddings_to_npy(config: Path, corpus: Path, tmp_path: Path) -> None:
    features = tmp_path / "features.yaml"
    features.write_text(FEATURES, encoding="utf-8")
    out = tmp_path / "emb"
    args = ["--config", str(config), "--config", str(features), "--writer.format", "npy", "--writer.output_dir"]
    # A seeded random net: an unseeded 4-wide one can map two colours to the same rounded vector now and then.
    _ok(_cli("predict", *args, str(out), "--seed_everything", "0", cwd=tmp_path))
    emb = np.load(out / "embedding.npy")
    assert emb.shape == (N, 4)  # width 4, one block
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    with (out / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == _expected_paths(corpus)
    # Images of different colours give different embeddings: the rows are not one repeated vector.
    assert len({tuple(np.round(e, 4)) for e in emb[:20]}) >= 15


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["--data.source", "/no/such/folder"], "data.source"),
        (["--model.init_args.weights", "/no/such/weights.pt"], "model.weights"),
        (["--writer.format", "xlsx"], "writer.format"),
    ],
)
def test_bad_input_is_one_message_without_traceback(config: Path, tmp_path: Path, args: list[str], key: str) -> None:
    result = _cli("predict", "--config", str(config), *args, cwd=tmp_path)
    assert result.returncode == 2
    assert key in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert args[-1] in result.stderr  # shows the value
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr  # a message, not a usage or traceback wall


def test_help_shows_docstrings_and_print_config_shows_prediction_defaults(config: Path, tmp_path: Path) -> None:
    help_text = _ok(_cli("predict", "--help", "all", cwd=tmp_path))
    assert "--writer.output_dir" in help_text and "Folder for the outputs" in help_text
    assert "--data" in help_text and "--model" in help_text
    printed = _ok(_cli("predict", "--config", str(config), "--data.batch_size", "7", "--print_config", cwd=tmp_path))
    cfg = yaml.safe_load(printed[printed.index("model:") :] if not printed.startswith("#") else printed)
    # Nothing accumulates in memory: the CLI calls Trainer.predict(return_predictions=False), not a setting.
    assert "return_predictions" not in cfg and "ckpt_path" not in cfg
    assert cfg["model"]["class_path"] == "lit_infer.ImageClassifier"
    assert cfg["data"]["init_args"]["batch_size"] == 7
    assert cfg["writer"]["format"] == "csv"


def test_quickstart_reaches_its_accuracy(tmp_path: Path) -> None:
    out = tmp_path / "quickstart"
    output = _ok(_cli("predict", "--config", "configs/quickstart.yaml", "--writer.output_dir", str(out), cwd=REPO))
    assert str(out / "predictions.csv") in output
    summary = json.loads((out / "summary.json").read_text())
    heldout = sorted(p for p in (REPO / "examples" / "quickstart" / "data" / "heldout").rglob("*") if p.is_file())
    assert summary["num_predicted"] == len(heldout) > 0
    assert summary["metrics"]["top1_accuracy"] >= 0.9
    with (out / "predictions.csv").open(newline="") as f:
        assert len(list(csv.DictReader(f))) == len(heldout)


HEADS = '''
import torch
import torch.nn as nn


class ThreeHeads(nn.Module):
    """Box regression, landmarks and face probabilities, as a tuple (MTCNN's ONet's shape)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.boxes, self.landmarks, self.faces = nn.Linear(8, 4), nn.Linear(8, 10), nn.Linear(8, 2)

    def forward(self, x):
        h = self.body(x)
        return self.boxes(h), self.landmarks(h), self.faces(h).softmax(1)
'''


def test_a_tuple_network_under_the_classifier_is_one_line_naming_model_output(config: Path, tmp_path: Path) -> None:
    (tmp_path / "heads.py").write_text(HEADS, encoding="utf-8")  # the user's own module, in the working directory
    result = _cli("predict", "--config", str(config), "--model.net=heads.ThreeHeads", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "model.output" in errors[0] and "a tuple of 3" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    # Told which element holds the logits, the same network classifies.
    args = ["--model.net=heads.ThreeHeads", "--model.output=2", "--writer.overwrite=true"]
    _ok(_cli("predict", "--config", str(config), *args, cwd=tmp_path))


EXIT_PROBE = """
import atexit, gc, runpy, sys
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > 0))
sys.argv = ["lit_infer", *sys.argv[1:]]
runpy.run_module("lit_infer", run_name="__main__", alter_sys=True)  # what python -m does
"""


@pytest.mark.parametrize(("args", "code"), [(["--version"], 0), (["predcit"], 2)])
def test_the_command_freezes_what_is_left_before_the_interpreter_exits(
    tmp_path: Path, args: list[str], code: int
) -> None:
    # The interpreter's last collections would walk torch's and Lightning's million objects (1-2 s of CPU per process,
    # each rank, each command); frozen, they are skipped, whether the command returns or exits with an error.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", EXIT_PROBE, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == code and done.stdout.strip().endswith("frozen at exit: True"), done.stdout + done.stderr
    # main() inside a longer-lived process (this test) leaves its garbage collectable.
    from lit_infer.cli import main

    before = gc.get_freeze_count()
    main(["--version"])
    assert gc.get_freeze_count() == before
