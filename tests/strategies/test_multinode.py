"""Two ``torchrun --nnodes 2`` launches on loopback, one CPU process each: output identical to one process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from strategies.strategy_helpers import (
    TORCHRUN,
    assert_same_rows,
    launch_two_nodes,
    predict_in_process,
    read_rows,
    write_config,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

REPEATS = int(os.environ.get("LIT_INFER_MULTINODE_REPEATS", "2"))
"""Finished two-node runs under a busy CPU in the exit test (the issue's check is 10 out of 10)."""


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed next to python")
@pytest.mark.parametrize("shared_filesystem", [True, False])
def test_two_torchrun_nodes_match_one_process(folders, weights: Path, tmp_path: Path, shared_filesystem: bool) -> None:
    source = folders(23)
    expected = predict_in_process(source, tmp_path / "single", weights, 4, devices=1)
    out = tmp_path / "nodes"
    trainer = {"strategy": "ddp", "num_nodes": 2, "devices": 1}
    config = write_config(tmp_path / "nodes.yaml", source, out, weights, 4, trainer)
    scratch = [tmp_path / "node0", tmp_path / "node1"] if not shared_filesystem else None
    extra = [] if shared_filesystem else ["--writer.shared_filesystem", "false", "--writer.work_dir", "$NODE_SCRATCH/w"]
    launch_two_nodes(config, extra, scratch)
    assert_same_rows(read_rows(out), expected)
    if scratch is not None:
        # Each node's shard lived only on its own disk; rank 0 gathered node 1's over the process group, and both
        # local work folders are gone after the merge.
        assert not (out / ".lit_infer").exists()
        assert [list(p.iterdir()) for p in scratch] == [[], []]


@contextmanager
def _busy_cpu() -> Iterator[None]:
    """A process that spins for as long as the block runs: the load under which ranks used to abort at exit."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


@pytest.mark.timeout(240 * REPEATS)
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed next to python")
def test_every_rank_of_a_finished_run_exits_0_under_load(folders, weights: Path, tmp_path: Path) -> None:
    # A gloo group left to interpreter finalization aborted a rank after every output was written
    # ("terminate called without an active exception", SIGABRT, torchrun exit 1).
    source = folders(23)
    trainer = {"strategy": "ddp", "num_nodes": 2, "devices": 1}
    with _busy_cpu():
        for attempt in range(REPEATS):
            out = tmp_path / f"nodes{attempt}"
            config = write_config(tmp_path / f"nodes{attempt}.yaml", source, out, weights, 4, trainer)
            logs = launch_two_nodes(config, [])  # every node's torchrun exit 0
            assert not any("terminate called" in log for log in logs), f"attempt {attempt}"
            assert len(read_rows(out)) == 23
