"""Shared pieces of the robustness tests: test-only nets (importable by class path from a CLI subprocess, with this
folder on PYTHONPATH and in LIT_INFER_ALLOW_IMPORTS), config files, and running the CLI as a real process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from lit_infer.nets import TinyCNN

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
N_IMAGES = 48
"""Images in the shared corpus of the interrupted-run tests (12 batches of 4)."""
DDP = ["--trainer.strategy", "ddp", "--trainer.devices", "2"]
SRUN = [sys.executable, str(HERE / "fake_srun.py"), "2"]
"""Two SLURM tasks of one command on this machine (with ``DDP``: a job of ``--ntasks-per-node=2``)."""


class SlowTinyCNN(TinyCNN):
    """TinyCNN that sleeps in every forward, so a test can signal or kill a run between committed batches.

    Args:
        num_classes: Outputs of the classifier.
        width: Channels of the first block.
        depth: Number of conv blocks.
        delay_s: Seconds to sleep per batch.
    """

    def __init__(self, num_classes: int = 4, width: int = 4, depth: int = 2, delay_s: float = 0.0) -> None:
        super().__init__(num_classes, width, depth)
        self.delay_s = delay_s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.delay_s:
            time.sleep(self.delay_s)
        return super().forward(x)


class MeanColour(nn.Module):
    """Identity-like net: the mean of each input channel, so every output row shows which image it came from."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().mean(dim=(2, 3))


def save_weights(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    torch.save(SlowTinyCNN().state_dict(), path)
    return path


def classifier_config(
    path: Path,
    source: Path,
    output_dir: Path,
    weights: Path,
    delay_s: float = 0.0,
    batch_size: int = 4,
    num_workers: int = 0,
    unit_size: int | None = 8,
    **writer: Any,
) -> Path:
    """A CLI config (JSON is valid YAML) for an ImageClassifier over ``source`` with SlowTinyCNN, in units of
    ``unit_size`` inputs (8: two batches of 4 per unit, units enough for two ranks to share a small corpus)."""
    config = {
        "model": {
            "class_path": "lit_infer.ImageClassifier",
            "init_args": {
                "net": {"class_path": "robust_helpers.SlowTinyCNN", "init_args": {"delay_s": delay_s}},
                "weights": str(weights),
                "top_k": 2,
                "preprocessing": {"crop_size": 32, "resize_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3},
            },
        },
        "data": {
            "class_path": "lit_infer.ImageDataModule",
            "init_args": {
                "source": str(source),
                "batch_size": batch_size,
                "num_workers": num_workers,
                "inputs": {"unit_size": unit_size},
            },
        },
        "writer": {"output_dir": str(output_dir), **writer},
        "trainer": {"accelerator": "cpu", "devices": 1},
    }
    path.write_text(json.dumps(config, indent=1))
    return path


def cli_env(port: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["LIT_INFER_ALLOW_IMPORTS"] = "robust_helpers"
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONWARNINGS"] = "ignore"
    if port is not None:
        env["MASTER_ADDR"] = "127.0.0.1"
        env["MASTER_PORT"] = str(port)
    return env


def start_cli(
    args: list[str], log: Path, port: int | None = None, launcher: list[str] | None = None
) -> subprocess.Popen:
    """The CLI as a real process in its own session (so a test can find and signal every rank of it); ``launcher``:
    the command that starts it (``fake_srun.py``'s tasks), else the CLI itself."""
    out = log.open("wb")
    return subprocess.Popen(
        [*(launcher or []), sys.executable, "-m", "lit_infer", "predict", *args],
        cwd=REPO,
        env=cli_env(port),
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def run_cli(
    args: list[str], log: Path, port: int | None = None, timeout: float = 180, launcher: list[str] | None = None
) -> tuple[int, str]:
    proc = start_cli(args, log, port, launcher)
    try:
        rc = proc.wait(timeout=timeout)
    finally:
        kill_group(proc)
    return rc, log.read_text(errors="replace")


def committed_batches(output_dir: Path, rank: int = 0, batch_size: int = 4) -> int:
    """Batches the rank has committed (``layout: single``: its stages in the work folder, and the parts it
    committed there; a part counts its inputs in batches of ``batch_size``)."""
    work = output_dir / ".lit_infer"
    n = 0
    for path in [*(work / "stages").glob(f"u*.r{rank:05d}.json"), *(work / "parts" / "_parts").glob("part-*.json")]:
        try:
            state = json.loads(path.read_text())
        except (ValueError, OSError):
            continue  # being replaced or removed right now: the next poll reads it
        if "batches" in state:
            n += int(state["batches"])
        elif state.get("rank") == rank:
            n += -(-int(state["items"]) // batch_size)
    return n


def wait_for_commits(proc: subprocess.Popen, output_dir: Path, k: int, ranks: int = 1, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(committed_batches(output_dir, r) >= k for r in range(ranks)):
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (rc={proc.returncode}) before {k} committed batches")
        time.sleep(0.01)
    raise AssertionError(f"no {k} committed batches within {timeout} s")


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, read from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not group_members(pgid):
            return True
        time.sleep(0.05)
    return False


def kill_group(proc: subprocess.Popen) -> None:
    """Never leave a process behind, whatever the test did."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def refused_in_one_line(args: list[str], capsys: Any) -> str:
    """``lit-infer predict ARGS`` in this process: it must exit 2 with exactly one line on stderr, which is returned."""
    import pytest

    from lit_infer.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["predict", *args])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1, err
    return err
