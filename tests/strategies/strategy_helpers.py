"""Helpers for the strategy tests: runs in process or through the CLI, and row-by-row comparison."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
from conftest import free_port

from lit_infer import ImageClassifier, ImageDataModule, PredictionWriter
from lit_infer.nets import TinyCNN
from lit_infer.preprocessing import Preprocessing

REPO = Path(__file__).resolve().parents[2]
NET = {"class_path": "lit_infer.nets.TinyCNN", "init_args": {"num_classes": 3, "width": 4, "depth": 2}}
TORCHRUN = Path(sys.executable).with_name("torchrun")
PREPROCESSING = {"crop_size": 32, "resize_size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def classifier(weights: Path) -> ImageClassifier:
    return ImageClassifier(
        net=TinyCNN(**NET["init_args"]), weights=weights, top_k=2, preprocessing=Preprocessing(**PREPROCESSING)
    )


def predict_in_process(source: Path, out: Path, weights: Path, batch_size: int, **trainer: Any) -> list[dict]:
    """One run through the Python API; returns the rows of ``predictions.csv``."""
    module = classifier(weights)
    data = ImageDataModule(source, batch_size=batch_size, num_workers=0, preprocessing=module.preprocessing)
    trainer.setdefault("accelerator", "cpu")
    run = L.Trainer(
        callbacks=[PredictionWriter(out, overwrite=True, fsync=False)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer,
    )
    run.predict(module, datamodule=data, return_predictions=False)
    return read_rows(out)


def write_config(path: Path, source: Path, out: Path, weights: Path, batch_size: int, trainer: dict) -> Path:
    """A task config as the user writes it (JSON is YAML)."""
    config = {
        "model": {
            "class_path": "lit_infer.ImageClassifier",
            "init_args": {"net": NET, "weights": str(weights), "top_k": 2, "preprocessing": PREPROCESSING},
        },
        "data": {
            "class_path": "lit_infer.ImageDataModule",
            "init_args": {"source": str(source), "batch_size": batch_size, "num_workers": 0},
        },
        "writer": {"output_dir": str(out), "overwrite": True, "fsync": False},
        "trainer": {"accelerator": "cpu", **trainer},
    }
    path.write_text(json.dumps(config, indent=1))
    return path


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONWARNINGS"] = "ignore"
    return env


def run(cmd: list[str], timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own session; on timeout kill the whole group (DDP launches more processes)."""
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env or cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"timed out after {timeout} s\n{out[-3000:]}\n{err[-6000:]}") from None
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-3000:]}\n{err[-6000:]}"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def run_cli(args: list[str], timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m lit_infer predict ARGS`` in a child process; fails the test with its output if it fails."""
    return run([sys.executable, "-m", "lit_infer", "predict", *args], timeout, env)


def read_rows(out: Path) -> list[dict]:
    with open(out / "predictions.csv", newline="") as f:
        return list(csv.DictReader(f))


def assert_same_rows(got: list[dict], expected: list[dict], tol: float = 1e-5) -> None:
    """Same rows in the same order, same top classes, scores equal within ``tol``."""
    assert [(r["index"], r["path"]) for r in got] == [(r["index"], r["path"]) for r in expected]
    assert [int(r["index"]) for r in got] == list(range(len(expected)))
    for g, e in zip(got, expected, strict=True):
        assert (g["pred"], g["topk_pred_1"], g["topk_pred_2"]) == (e["pred"], e["topk_pred_1"], e["topk_pred_2"])
        for key in ("score", "topk_score_1", "topk_score_2"):
            assert abs(float(g[key]) - float(e[key])) <= tol, (key, g, e)


def launch_two_nodes(
    config: Path, extra: list[str], scratch: list[Path] | None = None, env: dict[str, str] | None = None
) -> list[str]:
    """Two ``torchrun --nnodes 2`` launches on loopback, one process each; fails the test with a node's log."""
    port = free_port()
    procs = []
    for node in (0, 1):
        node_env = dict(env or cli_env())
        if scratch is not None:
            node_env["NODE_SCRATCH"] = str(scratch[node])  # a disk only this "node" sees
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
                env=node_env,
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
