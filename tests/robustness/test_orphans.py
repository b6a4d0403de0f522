"""Orphans never live on: after ``kill -9`` of rank 0, rank 1 exits within the graceful-stop bound, whether it was
still starting up or predicting. Real processes, real signals."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from conftest import free_port

from lit_infer.lifecycle.process import GRACE_S, is_launched_rank, stand_down, watch_parent
from robustness.robust_helpers import (
    DDP,
    classifier_config,
    group_members,
    kill_group,
    run_cli,
    start_cli,
    wait_for_commits,
    wait_group_gone,
)

BOUND_S = GRACE_S + 15  # the watch's grace, its poll, and a loaded 2-core machine


def _child_rank(proc_pid: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in group_members(proc_pid):
            if pid == proc_pid:
                continue
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == proc_pid:
                return pid
        time.sleep(0.01)
    raise AssertionError("rank 1 never started")


@pytest.mark.slow
@pytest.mark.parametrize("when", ["start-up", "mid-run"])
def test_rank_1_exits_when_rank_0_is_killed(when: str, corpus: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = classifier_config(tmp_path / "run.yaml", corpus["images"], out, corpus["weights"], delay_s=0.3)
    proc = start_cli(["--config", str(config), *DDP], tmp_path / "run.log", port=free_port())
    try:
        rank1 = _child_rank(proc.pid)
        if when == "mid-run":
            wait_for_commits(proc, out, k=1, ranks=2)
        else:
            time.sleep(0.5)  # rank 1 is importing torch and Lightning, far from its rendezvous
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        started = time.monotonic()
        assert wait_group_gone(proc.pid, timeout=BOUND_S), f"left running: {group_members(proc.pid)}"
        elapsed = time.monotonic() - started
    finally:
        kill_group(proc)
    assert not os.path.exists(f"/proc/{rank1}/stat") or "Z" in Path(f"/proc/{rank1}/stat").read_text().split()[2]
    assert elapsed < BOUND_S


def test_only_launched_ranks_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert not is_launched_rank() and watch_parent() is None
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert watch_parent() is None
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert is_launched_rank()
    watch = watch_parent(poll_s=0.01)
    assert watch is not None and watch.is_alive()
    stand_down()  # the run is over: the watch ends, and rank 0 exiting first signals nothing
    watch.join(timeout=2)
    assert not watch.is_alive()


@pytest.mark.slow
def test_a_killed_data_worker_is_one_line_and_the_rerun_resumes(corpus: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = classifier_config(
        tmp_path / "run.yaml", corpus["images"], out, corpus["weights"], delay_s=0.3, num_workers=1
    )
    proc = start_cli(["--config", str(config)], tmp_path / "run.log")
    try:
        wait_for_commits(proc, out, k=2)
        os.kill(_child_rank(proc.pid), signal.SIGKILL)  # the decoding worker, the only child of the run
        rc = proc.wait(timeout=60)
    finally:
        kill_group(proc)
    log = (tmp_path / "run.log").read_text(errors="replace")
    assert rc == 2 and log.count("lit-infer: error: a data loading worker died") == 1, log[-3000:]
    assert "Traceback" not in log
    rc, log = run_cli(["--config", str(config)], tmp_path / "resume.log")
    assert rc == 0 and "resuming" in log, log[-3000:]
    assert (out / "predictions.csv").read_bytes() == (corpus["clean"] / "predictions.csv").read_bytes()
