"""Under ``torchrun --max-restarts``, a rank killed with SIGKILL (in start-up or mid-batch) leads to a restarted group
that resumes from what was committed and ends exit 0, byte-identical to a clean one-process run; when torchrun's
agent itself dies, no rank of it outlives the graceful-stop bound. Real torchrun, real gloo, real signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port

from lit_infer.cli import main
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


def _wait_listening(port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")


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


@pytest.mark.timeout(420)
def test_elastic_a_lost_node_leaves_the_other_to_finish_alone(corpus: dict[str, Path], tmp_path: Path) -> None:
    # `--nnodes 1:2` with the c10d rendezvous, two loopback "nodes" of one rank each; node 1's agent is killed
    # (its rank, in a session of its own, stops through the orphan watch): node 0 re-forms the group alone
    # (trainer.num_nodes follows the rendezvous), resumes what both had committed, and finishes.
    out = tmp_path / "out"
    config = classifier_config(tmp_path / "run.yaml", corpus["images"], out, corpus["weights"], delay_s=0.3)
    port = free_port()
    agents = []
    for node in (0, 1):
        cmd = [
            str(TORCHRUN), "--nnodes", "1:2", "--nproc-per-node", "1", "--max-restarts", "2",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "lit-infer-test",
            "-m", "lit_infer", "predict", "--config", str(config),
            "--trainer.strategy", "ddp", "--trainer.devices", "1", "--trainer.num_nodes", "2",
        ]  # fmt: skip
        log = (tmp_path / f"node{node}.log").open("wb")
        agents.append(
            subprocess.Popen(cmd, cwd=REPO, env=cli_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )
        if node == 0:
            _wait_listening(port)  # node 0's agent hosts the rendezvous store: the node that stays
    try:
        deadline = time.monotonic() + 240
        while committed_batches(out, 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(agents[1].pid, signal.SIGKILL)
        agents[1].wait()
        rc = agents[0].wait(timeout=300)
    finally:
        for agent in agents:
            if agent.poll() is None:
                os.killpg(agent.pid, signal.SIGKILL)
                agent.wait()
        for pid in _ranks(config):
            os.kill(pid, signal.SIGKILL)
    log = (tmp_path / "node0.log").read_text(errors="replace")
    assert rc == 0, log[-4000:]
    assert "trainer.num_nodes 2 -> 1" in log
    assert (out / "predictions.csv").read_bytes() == (corpus["clean"] / "predictions.csv").read_bytes()


@pytest.mark.timeout(480)
def test_a_killed_rank_holding_leases_is_restarted_and_its_units_redone_once(
    corpus: dict[str, Path], tmp_path: Path
) -> None:
    # Units of 4 images leased between the ranks (writer.layout: parts); the last rank is killed once parts are
    # committed, holding leases of its own: the restarted group leases again what has no part, and the merge of the
    # parts is the clean run's file byte for byte, every image once.
    out = tmp_path / "out"
    config = classifier_config(
        tmp_path / "run.yaml", corpus["images"], out, corpus["weights"], delay_s=0.3, layout="parts", fsync=False
    )
    settings = json.loads(config.read_text())
    settings["data"]["init_args"]["inputs"]["unit_size"] = 4
    config.write_text(json.dumps(settings))
    proc = _torchrun(config, tmp_path / "run.log", max_restarts=2)
    try:
        ranks = _wait_ranks(config, RANKS)
        deadline = time.monotonic() + 240
        while len(list((out / "_parts").glob("part-*.json"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(ranks[-1], signal.SIGKILL)
        rc = proc.wait(timeout=420)
    finally:
        _end(proc, config)
    log = (tmp_path / "run.log").read_text(errors="replace")
    assert rc == 0, log[-4000:]
    records = [json.loads(p.read_text()) for p in sorted((out / "_parts").glob("part-*.json"))]
    assert len(records) == 12 and max(r["attempt"] for r in records) >= 2  # a restarted attempt committed some
    main(["merge", str(out), "--dest", str(tmp_path / "merged")])
    assert (tmp_path / "merged" / "predictions.csv").read_bytes() == (corpus["clean"] / "predictions.csv").read_bytes()
