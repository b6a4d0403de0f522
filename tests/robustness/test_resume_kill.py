"""kill -9 at a committed batch, then the same command: the output is byte-identical to an uninterrupted run's, and a
third run does no work. Real CLI processes, real SIGKILL, single process and 2-process DDP over gloo."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from conftest import free_port

from robustness.robust_helpers import (
    DDP,
    N_IMAGES,
    classifier_config,
    committed_batches,
    kill_group,
    run_cli,
    start_cli,
    wait_for_commits,
    wait_group_gone,
)

pytestmark = pytest.mark.slow  # every test here starts processes


def _summary(output_dir: Path) -> dict:
    return json.loads((output_dir / "summary.json").read_text())


def test_clean_run_predicts_every_image_once(corpus: dict[str, Path]) -> None:
    lines = (corpus["clean"] / "predictions.csv").read_text().splitlines()
    assert len(lines) == N_IMAGES + 1
    assert [int(line.split(",")[0]) for line in lines[1:]] == list(range(N_IMAGES))
    assert not (corpus["clean"] / ".lit_infer").exists()


def test_sigkill_single_process_then_resume_is_identical(corpus: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = classifier_config(tmp_path / "run.yaml", corpus["images"], out, corpus["weights"], delay_s=0.15)
    args = ["--config", str(config)]
    proc = start_cli(args, tmp_path / "killed.log")
    try:
        wait_for_commits(proc, out, k=3)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        kill_group(proc)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "predictions.csv").exists()

    rc, log = run_cli(args, tmp_path / "resume.log")
    assert rc == 0, log
    assert "resuming" in log
    summary = _summary(out)
    assert 0 < summary["num_processed_this_run"] < N_IMAGES  # only what was missing
    assert (out / "predictions.csv").read_bytes() == (corpus["clean"] / "predictions.csv").read_bytes()

    before = (out / "predictions.csv").stat().st_mtime_ns
    rc, log = run_cli(args, tmp_path / "third.log")
    assert rc == 0, log
    assert "already complete" in log
    assert (out / "predictions.csv").stat().st_mtime_ns == before
    assert _summary(out) == summary


@pytest.mark.slow
def test_sigkill_ddp_two_processes_then_resume_is_identical(corpus: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = classifier_config(tmp_path / "run.yaml", corpus["images"], out, corpus["weights"], delay_s=0.15)
    args = ["--config", str(config), *DDP]
    proc = start_cli(args, tmp_path / "killed.log", port=free_port())
    try:
        wait_for_commits(proc, out, k=2, ranks=2)
        os.killpg(proc.pid, signal.SIGKILL)  # every rank at once, as a node failure would
        assert wait_group_gone(proc.pid, timeout=30)
    finally:
        kill_group(proc)
    assert not (out / "predictions.csv").exists()

    rc, log = run_cli(args, tmp_path / "resume.log", port=free_port())
    assert rc == 0, log
    assert "resuming" in log
    assert _summary(out)["world_size"] == 2
    # Merged by index: the same bytes as the single-process clean run, whatever the ranks and attempts were.
    assert (out / "predictions.csv").read_bytes() == (corpus["clean"] / "predictions.csv").read_bytes()


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["rank0", "rank1"])
def test_when_one_ddp_rank_dies_the_others_exit_in_bounded_time(
    corpus: dict[str, Path], tmp_path: Path, victim: str
) -> None:
    out = tmp_path / "out"
    config = classifier_config(tmp_path / "run.yaml", corpus["images"], out, corpus["weights"], delay_s=0.3)
    proc = start_cli(["--config", str(config), *DDP], tmp_path / "run.log", port=free_port())
    try:
        wait_for_commits(proc, out, k=1, ranks=2)
        ranks = [pid for pid in _children(proc.pid) if "lit_infer" in Path(f"/proc/{pid}/cmdline").read_text()]
        assert len(ranks) == 1, ranks  # Lightning's launcher: rank 0 is the command's process, rank 1 its child
        os.kill(proc.pid if victim == "rank0" else ranks[0], signal.SIGKILL)
        assert wait_group_gone(proc.pid, timeout=30), "a rank was left running after its peer died"
    finally:
        kill_group(proc)
    # Whatever was committed stays committed (the resume itself is tested above).
    assert committed_batches(out, 0) >= 1 and committed_batches(out, 1) >= 1
