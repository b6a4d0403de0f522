"""What ``lit-infer predict`` prints while it runs, read from the command's own output: the start line in plain words,
a progress bar with a total and an ETA whenever the count is known before reading (images of a list, a folder or
Parquet; tar shards otherwise), and no Lightning warning about batch indices, on one process or two (DDP, gloo)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_images
from scale.scale_helpers import write_parquet, write_shards

REPO = Path(__file__).resolve().parents[2]
N = 10
CONFIG = """\
model:
  class_path: lit_infer.ImageClassifier
  init_args:
    net: {class_path: lit_infer.nets.TinyCNN, init_args: {num_classes: 3, width: 4, depth: 1}}
    preprocessing: {crop_size: 16, resize_size: 16}
data: {class_path: lit_infer.ImageDataModule, init_args: {source: SOURCE, batch_size: 4, num_workers: 0}}
trainer: {accelerator: cpu, devices: 1}
writer: {output_dir: out}
seed_everything: 0
"""


def _sources(root: Path) -> dict[str, str]:
    images = make_images(root / "imgs", N, size=(20, 20), ext="jpg")
    (root / "files.txt").write_text("".join(f"imgs/{p.name}\n" for p in images))
    write_shards(images, root / "shards", [5, 5])
    write_parquet(images, root / "t.parquet")
    return {"list": "files.txt", "folder": "imgs", "tar": "shards", "parquet": "t.parquet"}


def _predict(root: Path, source: str, *args: str) -> str:
    """The command's stdout and stderr, each frame of the bar on its own line; warnings shown, as a user sees them."""
    (root / "run.yaml").write_text(CONFIG.replace("SOURCE", source))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-m", "lit_infer", "predict", "--config", "run.yaml", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    text = (result.stdout + result.stderr).replace("\r", "\n")
    assert result.returncode == 0, text
    return text


FINAL_FRAME = r"Predicting: 100%\|█+\| {n}/{n} \[\d\d:\d\d<\d\d:\d\d, *[\d.]+{unit}/s"
"""The bar's last frame: done of total, the time elapsed < the time remaining (the ETA), and the rate (tqdm pads a
rate under 10 with a space, so a loaded machine gives "<00:00,  8.43shard/s")."""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "start", "frame"),
    [
        ("list", f"a list of {N} images", FINAL_FRAME.format(n=N, unit="img")),
        ("folder", f"a folder of {N} images", FINAL_FRAME.format(n=N, unit="img")),
        ("parquet", f"1 Parquet file ({N} rows)", FINAL_FRAME.format(n=N, unit="img")),
        ("tar", "2 tar shards", FINAL_FRAME.format(n=2, unit="shard") + rf", img={N}, img/s="),
    ],
)
def test_the_start_line_and_the_bar_say_what_is_known(tmp_path: Path, kind: str, start: str, frame: str) -> None:
    source = _sources(tmp_path)[kind]
    text = _predict(tmp_path, source)
    assert f"lit-infer: '{source}': {start} -> out (csv); cpu, 1 process" in text, text
    assert re.search(frame, text), text
    assert "/?" not in text and "units of work" not in text, text
    assert f"lit-infer: {N} predictions, 0 failed" in text, text


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["tar", "list"])
def test_two_ddp_ranks_show_their_share_and_no_batch_index_warning(tmp_path: Path, kind: str) -> None:
    source = _sources(tmp_path)[kind]
    text = _predict(tmp_path, source, "--trainer.strategy", "ddp", "--trainer.devices", "2")
    assert "2 processes, DDPStrategy" in text, text
    assert "Couldn't infer the batch indices" not in text and "batch_indices" not in text, text
    # Rank 0 draws the bar to its end, with an ETA: units are leased as ranks become free (no rank knows its share),
    # so the bar is the whole run's: the list's ten images, the two tar shards. Drawn even when rank 0 read nothing
    # (the list is one unit, which rank 1 may take), and the report's table has a row for such a rank.
    final = FINAL_FRAME.format(n=2, unit="shard") if kind == "tar" else FINAL_FRAME.format(n=N, unit="img")
    assert re.search(final, text), text
    assert f"lit-infer: {N} predictions, 0 failed" in text, text
    assert "report: out/report.html" in text, text
