"""What the terminal shows: a short help, a fast --version, one start line, no banners, paths as a shell means them."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import make_images
from lightning.pytorch.cli import LightningCLI

from lit_infer import quiet
from lit_infer.cli import LitInferCLI

REPO = Path(__file__).resolve().parents[2]
NEEDED = ["--data.source", "--data.batch_size", "--data.num_workers", "--model.net", "--model.weights"]
NEEDED += ["--model.top_k", "--writer.format", "--writer.output_dir", "--trainer.precision", "--trainer.devices"]
NEEDED += ["--trainer.strategy", "--help all"]


def _run(*args: str, cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lit_infer", *args],
        cwd=cwd,
        env={**{k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}, "OMP_NUM_THREADS": "1", **env},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.mark.slow
def test_predict_help_shows_what_a_prediction_needs_in_under_200_lines() -> None:
    result = _run("predict", "--help")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) < 200
    for option in NEEDED:
        assert option in result.stdout, option
    assert "max_epochs" not in result.stdout and "gradient_clip_val" not in result.stdout
    assert "dp, cpu_multiprocess and pipeline" in result.stdout  # lit_infer's strategies, beside Lightning's
    # Choices spelled once, as a config takes them (writer.format csv, not CSV).
    assert "--writer.format {csv,jsonl,parquet,npy}" in result.stdout and "CSV" not in result.stdout


@pytest.mark.slow
def test_help_all_is_the_full_reference() -> None:
    result = _run("predict", "--help", "all")
    assert result.returncode == 0, result.stderr
    assert "--trainer.max_epochs" in result.stdout and "--writer.output_dir" in result.stdout


@pytest.mark.slow
def test_version_and_top_level_help_do_not_import_torch() -> None:
    code = (
        "import sys\nfrom lit_infer.cli import main\nmain(['--version'])\nmain(['--help'])\n"
        "heavy = sorted(m for m in ('torch', 'lightning', 'jsonargparse') if m in sys.modules)\nprint(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("lit-infer 0.") and "lightning 2." in lines[0] and "torch " in lines[0]
    assert "lit-infer predict --config my.yaml" in result.stdout
    assert lines[-1] == "[]"


@pytest.mark.slow
def test_a_run_shows_one_start_line_the_summary_and_no_banners(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", 6, size=(20, 20))
    (tmp_path / "run.yaml").write_text(
        "model:\n  class_path: lit_infer.ImageClassifier\n  init_args:\n"
        "    net: {class_path: lit_infer.nets.TinyCNN, init_args: {num_classes: 3, width: 4, depth: 1}}\n"
        "    preprocessing: {crop_size: 16, resize_size: 16}\n"
        "data: {class_path: lit_infer.ImageDataModule, init_args: {source: imgs, batch_size: 4, num_workers: 0}}\n"
        "trainer: {accelerator: cpu, devices: 1, enable_progress_bar: false}\n"
        "writer: {output_dir: '~/out'}\nseed_everything: 0\n",
        encoding="utf-8",
    )
    home = tmp_path / "home"
    home.mkdir()
    first = _run("predict", "--config", "run.yaml", cwd=tmp_path, HOME=str(home))
    assert first.returncode == 0, first.stderr
    text = first.stdout + first.stderr
    starts = [line for line in text.splitlines() if line.startswith("lit-infer: 'imgs': a folder of 6 images")]
    assert len(starts) == 1 and f"-> {home / 'out'} (csv); cpu, 1 process" in starts[0], text
    assert "lit-infer: 6 predictions, 0 failed" in text
    for banner in ("GPU available", "TPU available", "Tip", "transfer_batch_to_device", "Warning", "warn("):
        assert banner not in text, text
    assert (home / "out" / "predictions.csv").exists()  # ~ is the user's home, not a folder named '~'
    assert not (tmp_path / "~").exists() and not (tmp_path / "lightning_logs").exists()
    again = _run("predict", "--config", "run.yaml", cwd=tmp_path, HOME=str(home))
    assert again.returncode == 0, again.stderr
    assert "already complete" in again.stdout + again.stderr
    assert "Warning" not in again.stdout + again.stderr and "warn(" not in again.stderr, again.stderr


def test_paths_expand_home_and_variables_in_every_path_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_images(tmp_path / "home" / "imgs", 3, size=(20, 20))
    (tmp_path / "home" / "classes.txt").write_text("a\nb\nc\n", encoding="utf-8")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DATA", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    args = ["--model", "lit_infer.ImageClassifier", "--model.net", "lit_infer.nets.TinyCNN"]
    args += ["--model.net.num_classes", "3", "--model.net.width", "4", "--model.class_names", "${DATA}/classes.txt"]
    args += [
        "--data",
        "lit_infer.ImageDataModule",
        "--data.source",
        "$DATA/imgs",
        "--data.decoding.cache_dir",
        "~/cache",
    ]
    args += ["--writer.output_dir", "~/out", "--writer.work_dir", "~/work", "--trainer.accelerator", "cpu"]
    cli = LitInferCLI(args=args, run=False)
    home = str(tmp_path / "home")
    assert cli.datamodule.source == f"{home}/imgs" and cli.datamodule.decoding.cache_dir == f"{home}/cache"
    assert cli.model.class_names == ["a", "b", "c"]
    assert cli.config["writer"]["output_dir"] == f"{home}/out" and cli.config["writer"]["work_dir"] == f"{home}/work"


def test_quiet_filters_only_the_named_messages() -> None:
    quiet.install()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet.ignore_design_warnings()
        warnings.warn(
            "You have overridden `transfer_batch_to_device` in `LightningModule` but have passed in a "
            "`LightningDataModule`. It will use the implementation from `LightningModule` instance.",
            stacklevel=1,
        )
        warnings.warn("3 images of data.source could not be decoded", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["3 images of data.source could not be decoded"]


def test_only_public_hooks_of_lightning_cli_are_overridden() -> None:
    """LitInferCLI builds on LightningCLI's public hooks; if an upgrade renames one, this fails, not a user's run."""
    ours = {name for name in vars(LitInferCLI) if not name.startswith("__")}
    assert not {n for n in ours if n.startswith("_")}, "private LightningCLI methods overridden"
    for hook in ("add_arguments_to_parser", "parse_arguments", "before_instantiate_classes", "instantiate_trainer"):
        assert hook in ours and hasattr(LightningCLI, hook), hook
    assert "run" in inspect.signature(LightningCLI.__init__).parameters
    assert list(inspect.signature(LightningCLI.instantiate_trainer).parameters) == ["self", "kwargs"]


@pytest.mark.slow
def test_a_failed_start_leaves_no_work_folder(tmp_path: Path) -> None:
    # The classifier refuses the data's labels only once the writer has planned the run (and made its work folder).
    make_images(tmp_path / "imgs" / "cat", 2, size=(20, 20))
    make_images(tmp_path / "imgs" / "dog", 2, size=(20, 20))
    args = ["predict", "--model", "lit_infer.ImageClassifier", "--model.net", "lit_infer.nets.TinyCNN"]
    args += ["--model.net.num_classes", "3", "--model.net.width", "4", "--model.class_names", "[a, b, c]"]
    args += [
        "--data",
        "lit_infer.ImageDataModule",
        "--data.source",
        "imgs",
        "--data.inputs.labels_from_folders",
        "true",
    ]
    args += ["--data.num_workers", "0", "--writer.output_dir", "out", "--trainer.accelerator", "cpu"]
    result = _run(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3 and "class_names" in result.stderr, result.stderr
    assert not (tmp_path / "out" / ".lit_infer").exists(), sorted(p.name for p in (tmp_path / "out").rglob("*"))
