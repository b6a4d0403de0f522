"""``dp``: replicas made once, each batch split across them, outputs gathered in order = single-device output."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from lit_infer import DataParallelStrategy, ImageDataModule
from strategies.strategy_helpers import assert_same_rows, classifier, predict_in_process


@pytest.mark.parametrize(("n", "batch_size"), [(1, 2), (3, 2), (23, 4)])
def test_dp_over_two_cpu_devices_matches_single_device(
    folders, weights: Path, tmp_path: Path, n: int, batch_size: int
) -> None:
    source = folders(n)
    expected = predict_in_process(source, tmp_path / "single", weights, batch_size, devices=1)
    got = predict_in_process(source, tmp_path / "dp", weights, batch_size, strategy="dp", devices=2)
    assert len(got) == n
    assert_same_rows(got, expected)


def test_dp_replicates_once_and_runs_every_replica(folders, weights: Path, tmp_path: Path) -> None:
    module = classifier(weights)
    strategy = DataParallelStrategy(devices=["cpu", "cpu", "cpu"])
    calls: list[tuple[int, int]] = []  # (replica, rows) per forward
    made: list[int] = []

    class Spy(L.Callback):
        def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            made.append(len(strategy.replicas))
            for i, replica in enumerate(strategy.replicas):
                replica.net.register_forward_hook(lambda m, a, o, i=i: calls.append((i, a[0].shape[0])))

    data = ImageDataModule(folders(23), batch_size=8, num_workers=0, preprocessing=module.preprocessing)
    from lit_infer import PredictionWriter

    trainer = L.Trainer(
        accelerator="cpu",
        strategy=strategy,
        callbacks=[Spy(), PredictionWriter(tmp_path / "out", fsync=False)],
        logger=False,
        enable_progress_bar=False,
    )
    trainer.predict(module, datamodule=data, return_predictions=False)
    assert made == [3]
    # Batches of 8, 8, 7 -> slices of 3/3/2, 3/3/2, 3/2/2: every replica works on every batch. Before them, each
    # replica's start-up probe of the classifier's output: one blank image.
    probes = [(0, 1), (1, 1), (2, 1)]
    assert sorted(calls) == sorted(probes + [(0, 3), (1, 3), (2, 2)] * 2 + [(0, 3), (1, 2), (2, 2)])
    assert strategy.replicas == []  # released at teardown


@pytest.mark.gpu
def test_dp_on_the_gpu_matches_single_device(folders, weights: Path, tmp_path: Path) -> None:
    torch.backends.cudnn.allow_tf32 = False  # fp32 answers, comparable to 1e-5
    source = folders(23)
    expected = predict_in_process(source, tmp_path / "single", weights, 4, accelerator="gpu", devices=1)
    for name, devices in {"two_on_one": ["cuda:0", "cuda:0"], "gpu_and_cpu": ["cuda:0", "cpu"]}.items():
        got = predict_in_process(
            source, tmp_path / name, weights, 4, accelerator="gpu", strategy=DataParallelStrategy(devices=devices)
        )
        assert_same_rows(got, expected)


def test_bf16_true_with_a_corrupt_file_on_one_device_and_under_dp(folders, weights: Path, tmp_path: Path) -> None:
    # bf16-true walks each batch with apply_to_collection (failures included), and sets the process-wide default
    # dtype: the dp threads must not leave it behind.
    source = tmp_path / "images"
    source.mkdir()
    for path in sorted(folders(9).iterdir()):
        (source / path.name).write_bytes(path.read_bytes())
    (source / "img_00004.png").write_bytes(b"\x89PNG corrupt")
    single = predict_in_process(source, tmp_path / "single", weights, 4, devices=1, precision="bf16-true")
    dp = predict_in_process(source, tmp_path / "dp", weights, 4, strategy="dp", devices=2, precision="bf16-true")
    assert torch.get_default_dtype() == torch.float32
    assert [r["index"] for r in single] == [r["index"] for r in dp] == ["0", "1", "2", "3", "5", "6", "7", "8"]
    for got, expected in zip(dp, single, strict=True):
        assert got["pred"] == expected["pred"] and abs(float(got["score"]) - float(expected["score"])) < 1e-2
    assert (tmp_path / "dp" / "errors.jsonl").read_text().count("img_00004.png") == 1
