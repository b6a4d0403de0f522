"""Two ``torchrun --nnodes 2`` launches on loopback, one CPU process each: output identical to one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port

from strategies.strategy_helpers import REPO, assert_same_rows, cli_env, predict_in_process, read_rows, write_config

pytestmark = pytest.mark.timeout(240)

TORCHRUN = Path(sys.executable).with_name("torchrun")


def _launch_two_nodes(config: Path, extra: list[str], scratch: list[Path] | None = None) -> list[str]:
    port = free_port()
    procs = []
    for node in (0, 1):
        env = cli_env()
        if scratch is not None:
            env["NODE_SCRATCH"] = str(scratch[node])  # a disk only this "node" sees
        cmd = [
            str(TORCHRUN),
            "--nnodes", "2", "--node-rank", str(node), "--nproc-per-node", "1",
            "--master-addr", "127.0.0.1", "--master-port", str(port),
            "-m", "lit_infer", "predict", "--config", str(config), *extra,
        ]  # fmt: skip
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        )
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=150)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.communicate()
    for proc, log in zip(procs, logs, strict=True):
        assert proc.returncode == 0, log[-6000:]
    return logs


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
    _launch_two_nodes(config, extra, scratch)
    assert_same_rows(read_rows(out), expected)
    if scratch is not None:
        # Each node's shard lived only on its own disk; rank 0 gathered node 1's over the process group, and both
        # local work folders are gone after the merge.
        assert not (out / ".lit_infer").exists()
        assert [list(p.iterdir()) for p in scratch] == [[], []]
