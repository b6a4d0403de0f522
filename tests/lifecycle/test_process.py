"""A rank's process: which launcher it watches, and that it leaves its process group before the interpreter
finalizes. Real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import free_port, make_images

from lit_infer.lifecycle.process import LAUNCHER_ENV, is_launched_rank, launched_nodes, launcher_pid

REPO = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "TORCHELASTIC_RUN_ID", LAUNCHER_ENV)}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return {**env, **extra}


def test_torchrun_launches_every_rank_and_lightning_names_its_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("LOCAL_RANK", "TORCHELASTIC_RUN_ID", LAUNCHER_ENV):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert not is_launched_rank()  # Lightning's rank 0 is the launcher itself
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job")
    monkeypatch.setenv(LAUNCHER_ENV, "1")  # inherited from somewhere: torchrun's agent is the parent, whatever it says
    assert is_launched_rank() and launcher_pid() == os.getppid()
    monkeypatch.setenv("GROUP_WORLD_SIZE", "1")
    assert launched_nodes() == 1  # what the rendezvous gathered, whatever trainer.num_nodes says
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")
    assert launched_nodes() is None
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert is_launched_rank() and launcher_pid() == 1


def test_a_rank_whose_launcher_died_before_it_started_watching_stops_at_once() -> None:
    # The launcher named in the environment is not this process's parent: it died while the rank was starting
    # (the rank was handed to a reaper). The rank must not wait for the process group's 30-minute timeout.
    code = "from lit_infer.lifecycle.process import watch_parent; watch_parent(grace_s=1); import time; time.sleep(60)"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=_env(LOCAL_RANK="1", **{LAUNCHER_ENV: "1"}),  # its parent is this test, not pid 1
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGTERM, proc.stderr  # no stop handler yet: the SIGTERM ends it
    assert "launching process" in proc.stderr and time.monotonic() - started < 30


@pytest.mark.slow
def test_predict_leaves_the_process_group_before_the_interpreter_finalizes(tmp_path: Path) -> None:
    make_images(tmp_path / "images", 6)
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(f"""
        import atexit
        import lightning as L
        import torch.distributed as dist
        import lit_infer
        from lit_infer.nets import TinyCNN
        from lit_infer.preprocessing import Preprocessing

        # atexit runs last-in first-out: this runs after lit_infer's own exit handler.
        atexit.register(lambda: print("group at exit:", dist.is_initialized(), flush=True))
        p = Preprocessing(crop_size=16, resize_size=16)
        trainer = L.Trainer(accelerator="cpu", devices=1, strategy="ddp", logger=False, enable_progress_bar=False)
        lit_infer.predict(
            lit_infer.ImageClassifier(net=TinyCNN(num_classes=3), preprocessing=p),
            lit_infer.ImageDataModule({str(tmp_path / "images")!r}, batch_size=2, num_workers=0, preprocessing=p),
            trainer=trainer,
            writer=lit_infer.PredictionWriter({str(tmp_path / "out")!r}),
        )
        print("group after the run:", dist.is_initialized(), flush=True)
        """)
    )
    env = _env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "group after the run: True" in proc.stdout  # the user's script may still use it
    assert "group at exit: False" in proc.stdout  # destroyed at exit, before finalization
