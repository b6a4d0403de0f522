"""A run with no prediction and at least one failure exits 1, with one line counting the errors by type; a run with
one prediction among failures exits 0 (``writer.max_errors`` is the knob for that)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_images

from robustness.robust_helpers import REPO, classifier_config, cli_env, save_weights


def _run(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "lit_infer",
            "predict",
            "--config",
            str(config),
            "--trainer.enable_progress_bar",
            "false",
        ],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_every_input_failed_exits_1_with_the_errors_by_type(tmp_path: Path) -> None:
    listed = tmp_path / "list.txt"
    (tmp_path / "bad.png").write_bytes(b"not an image")
    listed.write_text("".join(f"missing_{i}.png\n" for i in range(5)) + "bad.png\n")
    weights = save_weights(tmp_path / "w.pt")
    done = _run(classifier_config(tmp_path / "run.yaml", listed, tmp_path / "out", weights))
    assert done.returncode == 1, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("lit-infer: error:")]
    assert len(lines) == 1, done.stderr[-3000:]
    assert "no input was predicted: 6 failed" in lines[0]
    assert "FileNotFoundError: 5" in lines[0] and "UnidentifiedImageError: 1" in lines[0], lines[0]
    assert (tmp_path / "out" / "errors.jsonl").exists()

    make_images(tmp_path / "ok", 1, size=(20, 20))
    listed.write_text(listed.read_text() + "ok/img_00000.png\n")
    done = _run(classifier_config(tmp_path / "run2.yaml", listed, tmp_path / "out2", weights))
    assert done.returncode == 0, done.stderr[-3000:]
