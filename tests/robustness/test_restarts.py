"""Under ``torchrun --max-restarts``, a rank killed with SIGKILL (in start-up or mid-batch) leads to a restarted group
that resumes from what was committed and ends exit 0, byte-identical to a clean one-process run; when torchrun's
agent itself dies, no rank of it outlives the graceful-stop bound. Real torchrun, real gloo, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port

from lit_infer.lifecycle.process import GRACE_S
from robustness.robust_helpers import REPO, classifier_config, cli_env, committed_batches

TORCHRUN = Path(sys.executable).with_name("torchrun")
RANKS = 3
BOUND_S = GRACE_S + 20  # the watch's grace, its poll, and a loaded 2-core machine

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed next to python"),
]


def _torchrun(config: Path, log: Path, max_restarts: int) -> subprocess.Popen:
    cmd = [
        str(TORCHRUN), "--nnodes", "1", "--nproc-per-node", str(RANKS), "--max-restarts", str(max_restarts),
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
        "-m", "lit_infer", "predict", "--config", str(config),
        "--trainer.strategy", "ddp", "--trainer.devices", str(RANKS),
    ]  # fmt: skip
    return subprocess.Popen(
        cmd, cwd=REPO, env=cli_env(), stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def _ranks(config: Path) -> list[int]:
    """Live worker processes of the run (torchrun starts each in its own session: found by their command line)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if str(config).encode() in cmdline and b"torchrun" not in cmdline and stat[stat.rindex(")") + 2] != "Z":
            found.append(int(entry))
    return sorted(found)


def _wait_ranks(config: Path, n: int, timeout: float = 120) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(ranks := _ranks(config)) >= n:
            return ranks
        time.sleep(0.02)
    raise AssertionError(f"{n} ranks never started")


def _wait_gone(config: Path, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := _ranks(config)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _end(proc: subprocess.Popen, config: Path) -> None:
    """Never leave a process behind, whatever the test did."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for pid in _ranks(config):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("when", ["start-up", "mid-batch"])
def test_a_killed_rank_is_restarted_and_the_run_ends_byte_identical(
    when: str, corpus: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    config = classifier_config(tmp_path / "run.yaml", corpus["images"], out, corpus["weights"], delay_s=0.3)
    proc = _torchrun(config, tmp_path / "run.log", max_restarts=2)
    try:
        ranks = _wait_ranks(config, RANKS)
        if when == "mid-batch":
            deadline = time.monotonic() + 240
            while committed_batches(out, 0) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)  # rank 0 has committed; the last rank is mid-batch (each forward sleeps 0.3 s)
        else:
            time.sleep(1.0)  # importing torch and Lightning, or in the rendezvous
        os.kill(ranks[-1], signal.SIGKILL)
        rc = proc.wait(timeout=420)
    finally:
        _end(proc, config)
    log = (tmp_path / "run.log").read_text(errors="replace")
    assert rc == 0, log[-4000:]
    assert "connectFullMesh" not in log
    assert (out / "predictions.csv").read_bytes() == (corpus["clean"] / "predictions.csv").read_bytes()


@pytest.mark.timeout(300)
def test_no_rank_outlives_a_dead_torchrun_agent(corpus: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = classifier_config(tmp_path / "run.yaml", corpus["images"], out, corpus["weights"], delay_s=0.3)
    proc = _torchrun(config, tmp_path / "run.log", max_restarts=2)
    try:
        _wait_ranks(config, RANKS)
        deadline = time.monotonic() + 240
        while committed_batches(out, 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # the agent: its ranks live in sessions of their own
        proc.wait()
        left = _wait_gone(config, BOUND_S)
    finally:
        _end(proc, config)
    assert not left, f"ranks still alive {BOUND_S} s after the agent died: {left}"
