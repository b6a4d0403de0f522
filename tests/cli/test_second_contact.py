"""What a new user met on second contact (issue 17), through the real ``lit-infer`` processes: each mistake ends in
one ``lit-infer: error:`` line naming the key and the fix, without a traceback; Ctrl-C during start-up is one line;
a quoted glob and a research ``predict_step`` work; the Python API is as quiet as the CLI.

The processes of a group start together (they mostly wait on imports), so that a group costs about one start.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import make_images

from lit_infer.nets import TinyCNN

pytestmark = pytest.mark.slow

CONFIG = """
model:
  class_path: lit_infer.ImageClassifier
  init_args:
    net:
      class_path: lit_infer.nets.TinyCNN
      init_args: {num_classes: 3, width: 4, depth: 1}
    weights: tiny.pt
    preprocessing: {crop_size: 16, resize_size: 16}
data:
  class_path: lit_infer.ImageDataModule
  init_args:
    source: imgs
    batch_size: 4
    num_workers: 0
writer:
  overwrite: true
trainer:
  accelerator: cpu
  devices: 1
  enable_progress_bar: false
"""

OWN_CODE = '''
import torch
import torch.nn as nn

import lit_infer


class FlatNet(nn.Module):
    """Built for 3 x 32 x 32 inputs only."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


def build(num_classes: int = 3):
    return FlatNet(num_classes)


class DictOut(lit_infer.PredictionModule):
    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        logits = self(self.preprocess(batch))
        return {"logits": logits, "top": logits.argmax(1)}


class TensorOut(lit_infer.PredictionModule):
    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return self(self.preprocess(batch))


class ItemsOut(lit_infer.PredictionModule):
    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        logits = self(self.preprocess(batch))
        return [{"top": int(row.argmax()), "score": float(row.max())} for row in logits]


class FloatOut(lit_infer.PredictionModule):
    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return 3.0
'''


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LIT_INFER_DEBUG", "PYTHONWARNINGS")}
    return {**env, "OMP_NUM_THREADS": "1"}


def _start(args: list[str], cwd: Path, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "lit_infer", *args],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,  # type: ignore[call-overload]
    )


def _ends_in_one_error_line(err: str, code: object, wanted: list[str], status: int = 2) -> str | None:
    """None when the run ended as the CLI promises, else what is wrong."""
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("lit-infer: error: ")]
    if code != status or "Traceback" in err or len(errors) != 1 or not lines or lines[-1] != errors[0]:
        return f"exit {code}, {len(errors)} error lines:\n{err[-3000:]}"
    missing = [w for w in wanted if w not in errors[0]]
    return f"{missing} not in {errors[0]!r}" if missing else None


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("second_contact")
    make_images(root / "imgs", 6, size=(20, 20), ext="jpg")
    make_images(root / "pngs", 2, size=(20, 20), ext="png")
    torch.manual_seed(0)
    torch.save(TinyCNN(num_classes=3, width=4, depth=1).state_dict(), root / "tiny.pt")
    (root / "run.yaml").write_text(CONFIG, encoding="utf-8")
    (root / "mycode.py").write_text(OWN_CODE, encoding="utf-8")
    (root / "top.yaml").write_text("batch_size: 8\n", encoding="utf-8")
    (root / "flat_data.yaml").write_text(
        "data:\n  class_path: lit_infer.ImageDataModule\n  source: imgs\n  batch_size: 2\n", encoding="utf-8"
    )
    (root / "weights.txt").write_text("hello, these are not weights\n", encoding="utf-8")
    names = sorted(p.name for p in (root / "imgs").iterdir())
    rows = [f"{name},{label}" for name, label in zip(names, ["a", "b", "zebra", "c", "a", "b"], strict=True)]
    (root / "imgs" / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return root


# (name, arguments after `lit-infer`, what the one error line must hold)
BEFORE_THE_RUN = [
    ("top-level batch_size", ["--config", "top.yaml"], ["batch_size", "under data:", "data.batch_size"]),
    ("keys beside class_path", ["--config", "flat_data.yaml"], ["data:", "data.init_args", "drop class_path"]),
    ("function as class_path", ["--model.net.class_path", "mycode.build"], ["model.net.class_path", "model.factory"]),
    (
        "unset variable",
        ["--data.source", "$LIT_INFER_UNSET_VAR/imgs"],
        ["data.source", "$LIT_INFER_UNSET_VAR", "not set"],
    ),
    ("Windows path", ["--data.source", "C:\\data\\imgs"], ["data.source", "Windows path", "'/'"]),
    ("trailing backslash", ["--data.source", "imgs\\"], ["data.source", "backslash", "'imgs'"]),
    ("text file as weights", ["--model.weights", "weights.txt"], ["model.weights", "not a PyTorch file"]),
    ("no devices", ["--trainer.devices", "0"], ["trainer.devices", "no device", "1"]),
    (
        "shell-expanded glob",
        ["--data.source", "imgs/a.jpg", "imgs/b.jpg"],
        ["--data.source", "Quote it", "'imgs/*.jpg'"],
    ),
]


def test_mistakes_before_the_run_are_one_line_with_the_fix(workdir: Path) -> None:
    runs = {name: _start(["predict", "--config", "run.yaml", *args], workdir) for name, args, _ in BEFORE_THE_RUN}
    runs["no config"] = _start(["predict"], workdir)
    runs["merge a missing folder"] = _start(["merge", "no_such_run"], workdir)
    wanted = {name: words for name, _, words in BEFORE_THE_RUN}
    wanted["no config"] = ["no config", "--config"]
    wanted["merge a missing folder"] = ["OUTPUT_DIR", "'no_such_run'", "missing"]
    failures = []
    for name, proc in runs.items():
        _, err = proc.communicate(timeout=600)
        problem = _ends_in_one_error_line(err, proc.returncode, wanted[name])
        if problem is not None:
            failures.append(f"{name}: {problem}")
        if "NestedArg" in err or "class_path: no such option" in err:
            failures.append(f"{name}: jsonargparse's wording leaked: {err}")
    assert not failures, "\n\n".join(failures)


def test_mistakes_found_at_the_start_of_the_run_end_in_one_line(workdir: Path) -> None:
    flat = ["--model.net.class_path", "mycode.FlatNet", "--model.weights", "null"]
    flat += ["--model.preprocessing.crop_size", "48", "--model.preprocessing.resize_size", "48"]
    cases = {
        "network rejects the input size": (
            flat,
            ["model.preprocessing.crop_size=48", "rejected a 3 x 48 x 48 input", "mat1 and mat2 shapes"],
        ),
        "CSV label not a class name": (
            ["--data.source", "imgs/labels.csv", "--model.class_names", "[a, b, c]"],
            ["data.inputs.label_column", "'zebra'", "model.class_names"],
        ),
        "predict_step returns a float": (
            ["--model.class_path", "mycode.FloatOut", "--writer.output_dir", "out_float"],
            ["predict_step returned float", "Return lit_infer.Predictions, a tensor"],
        ),
    }
    runs = {name: _start(["predict", "--config", "run.yaml", *args], workdir) for name, (args, _) in cases.items()}
    failures = []
    for name, proc in runs.items():
        _, err = proc.communicate(timeout=600)
        problem = _ends_in_one_error_line(err, proc.returncode, cases[name][1])
        if problem is not None:
            failures.append(f"{name}: {problem}")
    assert not failures, "\n\n".join(failures)


def _wait_for_torch_import(proc: subprocess.Popen[str], limit_s: float = 120.0) -> None:
    """Until torch's library is mapped into the process (it is importing torch, or past it)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError):
            if "libtorch" in Path(f"/proc/{proc.pid}/maps").read_text():
                return
        time.sleep(0.05)
    raise AssertionError(f"the process did not import torch within {limit_s} s (exit {proc.poll()})")


def test_ctrl_c_during_start_up_is_one_line_and_writes_nothing(workdir: Path) -> None:
    # The whole process group, as a terminal's Ctrl-C: imports, parsing and building take seconds on any machine.
    proc = _start(
        ["predict", "--config", "run.yaml", "--writer.output_dir", "out_sigint"], workdir, start_new_session=True
    )
    _wait_for_torch_import(proc)  # in start-up for sure, however slow the machine
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    problem = _ends_in_one_error_line(
        err, proc.returncode, ["interrupted before the first batch; nothing written"], 130
    )
    assert problem is None, problem
    assert not (workdir / "out_sigint" / "predictions.csv").exists()


def test_a_quoted_glob_and_research_predict_steps_write_their_outputs(workdir: Path) -> None:
    jsonl = ["--writer.format", "jsonl"]
    cases = {
        "glob": ["--data.source", "imgs/*.jpg", *jsonl],  # the output folder is named after imgs/
        "dict": ["--model.class_path", "mycode.DictOut", "--writer.output_dir", "out_dict", *jsonl],
        "tensor": ["--model.class_path", "mycode.TensorOut", "--writer.output_dir", "out_tensor", *jsonl],
        "items": ["--model.class_path", "mycode.ItemsOut", "--writer.output_dir", "out_items", *jsonl],
    }
    runs = {name: _start(["predict", "--config", "run.yaml", *args], workdir) for name, args in cases.items()}
    for name, proc in runs.items():
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{name}:\n{err[-3000:]}"

    def rows(folder: str) -> list[dict]:
        text = (workdir / folder / "predictions.jsonl").read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines()]

    jpgs = sorted(str(Path("imgs") / p.name) for p in (workdir / "imgs").glob("*.jpg"))
    assert [r["path"] for r in rows("outputs/imgs")] == jpgs  # sorted, the .png and .csv beside them left out
    # The same network on the same pixels: the classifier's top class, the raw logits' argmax, every column kept.
    tops = [r["pred"] for r in rows("outputs/imgs")]
    assert [r["top"] for r in rows("out_dict")] == tops
    assert [max(range(3), key=r["logits"].__getitem__) for r in rows("out_dict")] == tops
    assert [r["output"] for r in rows("out_tensor")] == [r["logits"] for r in rows("out_dict")]
    assert [r["top"] for r in rows("out_items")] == tops and all("score" in r for r in rows("out_items"))


def test_a_resume_refused_for_a_changed_input_names_the_file(workdir: Path) -> None:
    args = ["predict", "--config", "run.yaml", "--writer.output_dir", "out_resume", "--writer.overwrite", "false"]
    first = _start(args, workdir)
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    changed = sorted((workdir / "imgs").glob("*.jpg"))[2]
    make_images(workdir / "other", 1, size=(24, 24), ext="jpg", seed=7)
    data = next((workdir / "other").iterdir()).read_bytes()
    changed.write_bytes(data)  # the same name, other pixels
    again = _start(args, workdir)
    _, err = again.communicate(timeout=600)
    problem = _ends_in_one_error_line(err, again.returncode, ["writer.output_dir", repr(f"imgs/{changed.name}")])
    assert problem is None, problem


PYTHON_API = """
import time
import lightning as L
import lit_infer
from lit_infer import ImageClassifier, ImageDataModule, PredictionWriter
from lit_infer.nets import TinyCNN

module = ImageClassifier(net=TinyCNN(num_classes=3, width=4, depth=1), weights="tiny.pt", top_k=2)
data = ImageDataModule("imgs", batch_size=2, num_workers=0, preprocessing=module.preprocessing)
time.sleep(3)  # a notebook's earlier work is not the run's
began = time.time()
summary = lit_infer.predict(
    module, data, trainer=L.Trainer(accelerator="cpu", devices=1), writer=PredictionWriter("outputs/photos")
)
print("SECONDS", summary["command_seconds"], time.time() - began)
"""


def test_the_python_api_is_as_quiet_as_the_cli_and_dp_says_its_preprocessing_once(workdir: Path) -> None:
    (workdir / "api.py").write_text(PYTHON_API, encoding="utf-8")
    api = subprocess.Popen(
        [sys.executable, "api.py"], cwd=workdir, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    dp_args = ["--trainer.strategy", "dp", "--trainer.devices", "2", "--trainer.enable_progress_bar", "true"]
    dp = _start(["predict", "--config", "run.yaml", *dp_args, "--writer.output_dir", "out_dp"], workdir)
    for name, proc in (("python api", api), ("dp", dp)):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{name}:\n{err[-3000:]}"
        text = out + err
        for noise in ("GPU available", "TPU available", "Tip:", "tensorboardX", "Warning", "Predicting: |"):
            assert noise not in text, f"{name}: {noise!r} in\n{text}"
        # One prefix on every line we print (the summary's indented lines belong to its first); one bar frame at 0.
        ours = [line for line in err.splitlines() if line.strip() and not line.startswith("  ")]
        assert ours and all(line.startswith("lit-infer: ") for line in ours), f"{name}:\n{err}"
        assert sum("preprocessing:" in line for line in ours) == 1, f"{name}:\n{err}"
        assert len(re.findall(r"\| 0/\d+ \[", out)) <= 1, f"{name}: {out!r}"
        if name == "python api":
            seconds = next(line for line in out.splitlines() if line.startswith("SECONDS")).split()[1:]
            assert float(seconds[0]) <= float(seconds[1]) + 0.5, seconds  # from the call, not the interpreter
    assert not (workdir / "lightning_logs").exists()
