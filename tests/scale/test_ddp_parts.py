"""203 images through 2 gloo ranks with ``layout: parts``, read from and written to a loopback S3 (moto server):
three tar shards under ``ddp``, a Parquet table under two ``torchrun`` "nodes". Every image exactly once across the
parts, the manifest and ``_SUCCESS``, and ``lit-infer merge`` gives the file one process writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from conftest import free_port, make_images

from lit_infer import ImageClassifier, ImageDataModule, PredictionWriter, Preprocessing
from lit_infer.cli import main
from lit_infer.nets import TinyCNN
from scale.scale_helpers import csv_rows, write_parquet, write_shards

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
s3fs = pytest.importorskip("s3fs")

N = 203
REPO = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")
NET = {"class_path": "lit_infer.nets.TinyCNN", "init_args": {"num_classes": 3, "width": 4, "depth": 1}}
PRE = {"crop_size": 16, "resize_size": 16, "mean": [0.5] * 3, "std": [0.25] * 3}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ddp_parts")
    images = make_images(root / "imgs", N, size=(20, 16))
    # Units of whole batches (72 = 9 x 8): the batches are those of one process over the folder, so are the bytes.
    write_shards(images, root / "shards", [72, 72, 59])
    write_parquet(images[:104], root / "table" / "part-a.parquet")
    write_parquet(images[104:], root / "table" / "part-b.parquet")
    torch.manual_seed(0)
    torch.save(TinyCNN(**NET["init_args"]).state_dict(), root / "w.pt")
    return {
        "root": root,
        "images": root / "imgs",
        "shards": root / "shards",
        "table": root / "table",
        "weights": root / "w.pt",
    }


@pytest.fixture(scope="module")
def expected(corpus: dict[str, Path]) -> list[dict[str, str]]:
    """One process over the plain folder with today's single-file writer: what the distributed runs reproduce."""
    module = ImageClassifier(
        net=TinyCNN(**NET["init_args"]), weights=corpus["weights"], top_k=2, preprocessing=Preprocessing(**PRE)
    )
    out = corpus["root"] / "one"
    writer = PredictionWriter(out, fsync=False)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, callbacks=[writer])
    data = ImageDataModule(corpus["images"], batch_size=8, num_workers=0, preprocessing=module.preprocessing)
    trainer.predict(module, datamodule=data, return_predictions=False)
    return csv_rows(out / "predictions.csv")


def _config(path: Path, source: str, out: str, weights: Path, trainer: dict[str, Any], **writer: Any) -> Path:
    config = {
        "model": {
            "class_path": "lit_infer.ImageClassifier",
            "init_args": {"net": NET, "weights": str(weights), "top_k": 2, "preprocessing": PRE},
        },
        "data": {
            "class_path": "lit_infer.ImageDataModule",
            "init_args": {"source": source, "batch_size": 8, "num_workers": 1},
        },
        "writer": {"output_dir": out, "fsync": False, **writer},
        "trainer": {"accelerator": "cpu", **trainer},
    }
    path.write_text(json.dumps(config))
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ)  # AWS_ENDPOINT_URL and the test credentials of the S3 fixture
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", PYTHONPATH=str(REPO))
    return env


def _run(cmds: list[list[str]], timeout: float = 200) -> None:
    procs = [
        subprocess.Popen(c, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
        for c in cmds
    ]  # fmt: skip
    logs = []
    try:
        logs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 9)
                p.communicate()
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-5000:]


def _upload(local: Path, url: str) -> None:
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    for path in sorted(local.iterdir()):
        fs.put_file(str(path), f"{url.removeprefix('s3://')}/{path.name}")


def _check(out: str, tmp_path: Path, expected: list[dict[str, str]], units: int) -> None:
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    bucket_path = out.removeprefix("s3://")
    assert fs.exists(f"{bucket_path}/_SUCCESS")
    manifest = json.loads(fs.cat_file(f"{bucket_path}/_manifest.json"))
    assert manifest["num_units"] == units and manifest["num_predicted"] == N and manifest["num_failed"] == 0
    # Each rank writes the parts of the units it leased straight there, no gather (on a loaded machine one rank may
    # lease them all: which rank reads what is not fixed).
    assert {p["rank"] for p in manifest["parts"]} <= {0, 1}
    keys = [row["path"] for p in manifest["parts"] for row in _part_rows(fs, f"{bucket_path}/{p['files']['table']}")]
    assert len(keys) == len(set(keys)) == N  # every image exactly once across the parts
    main(["merge", out, "--dest", str(tmp_path / "merged")])
    merged = csv_rows(tmp_path / "merged" / "predictions.csv")
    assert [{k: v for k, v in r.items() if k != "path"} for r in merged] == [
        {k: v for k, v in r.items() if k != "path"} for r in expected
    ]


def _part_rows(fs: Any, path: str) -> list[dict[str, str]]:
    import csv
    import io

    return list(csv.DictReader(io.StringIO(fs.cat_file(path).decode())))


def test_tar_shards_on_s3_two_gloo_ranks(corpus: dict, expected: list, s3_bucket: str, tmp_path: Path) -> None:
    _upload(corpus["shards"], f"{s3_bucket}/shards")
    out = f"{s3_bucket}/out"
    source = f"{s3_bucket}/shards/{{000000..000002}}.tar"
    trainer = {"strategy": "ddp", "devices": 2}
    config = _config(tmp_path / "ddp.json", source, out, corpus["weights"], trainer, layout="parts")
    os.environ["MASTER_PORT"] = str(free_port())
    try:
        _run([[sys.executable, "-m", "lit_infer", "predict", "--config", str(config)]])
    finally:
        os.environ.pop("MASTER_PORT")
    _check(out, tmp_path, expected, units=3)


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed next to python")
def test_parquet_on_s3_two_torchrun_nodes(corpus: dict, expected: list, s3_bucket: str, tmp_path: Path) -> None:
    _upload(corpus["table"], f"{s3_bucket}/table")
    out = f"{s3_bucket}/out"
    trainer = {"strategy": "ddp", "num_nodes": 2, "devices": 1}
    config = _config(tmp_path / "nodes.json", f"{s3_bucket}/table", out, corpus["weights"], trainer, layout="parts")
    port = str(free_port())
    cmds = [
        [str(TORCHRUN), "--nnodes", "2", "--node-rank", str(node), "--nproc-per-node", "1", "--master-addr",
         "127.0.0.1", "--master-port", port, "-m", "lit_infer", "predict", "--config", str(config)]
        for node in (0, 1)
    ]  # fmt: skip
    _run(cmds)
    _check(out, tmp_path, expected, units=2)
