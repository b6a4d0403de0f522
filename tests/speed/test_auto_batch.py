"""``batch_size: auto``: end to end through Trainer.predict, and under DDP every rank agrees on the smallest."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import pytest

from lit_infer import ImageClassifier, ImageDataModule, PredictionWriter, Preprocessing
from lit_infer.nets import TinyCNN
from tests.conftest import free_port, make_images


def test_auto_batch_size_predicts_every_image(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", 20)
    pre = Preprocessing(crop_size=32, resize_size=36)
    dm = ImageDataModule(tmp_path / "imgs", batch_size="auto", num_workers=0, preprocessing=pre)
    module = ImageClassifier(net=TinyCNN(width=4, depth=2), preprocessing=pre)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        callbacks=[PredictionWriter(tmp_path / "out")],
    )
    trainer.predict(module, datamodule=dm, return_predictions=False)
    assert isinstance(dm.batch_size, int) and 16 <= dm.batch_size <= 512
    with open(tmp_path / "out" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["index"]) for r in rows] == list(range(20))


RANK_SCRIPT = textwrap.dedent(
    """
    import os, sys, torch, torch.distributed as dist
    from lit_infer.nets import TinyCNN
    from lit_infer.tuning import find_batch_size
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    # Rank 1 "fits" only 16 images: every rank must end with 16.
    size = find_batch_size(TinyCNN(width=4, depth=2).eval(), 32, torch.device("cpu"), limit=16 if rank else 64)
    print(f"RANK{rank}={size}", flush=True)
    dist.destroy_process_group()
    """
)


@pytest.mark.slow
def test_ddp_ranks_agree_on_the_smallest_batch(tmp_path: Path) -> None:
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    port = free_port()
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "WORLD_SIZE": "2",
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.getcwd(),
        }
        procs.append(subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True))
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=120)
            assert p.returncode == 0
            outputs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert "RANK0=16" in outputs[0] and "RANK1=16" in outputs[1]
