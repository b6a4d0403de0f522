"""``pipeline``: stages over devices, micro-batches in a wavefront; same answers as one device."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from lit_infer import PipelineStrategy
from lit_infer.errors import ConfigError
from lit_infer.nets import TinyCNN
from lit_infer.strategies.pipelined_net import PipelinedNet
from lit_infer.strategies.stages import child_costs, split_stages
from strategies.strategy_helpers import assert_same_rows, classifier, predict_in_process


@pytest.mark.parametrize(("n", "batch_size"), [(1, 2), (3, 2), (23, 4)])
def test_pipeline_over_two_cpu_devices_matches_single_device(
    folders, weights: Path, tmp_path: Path, n: int, batch_size: int
) -> None:
    source = folders(n)
    expected = predict_in_process(source, tmp_path / "single", weights, batch_size, devices=1)
    strategy = PipelineStrategy(devices=["cpu", "cpu"], micro_batches=3)
    got = predict_in_process(source, tmp_path / "pipe", weights, batch_size, strategy=strategy)
    assert len(got) == n
    assert_same_rows(got, expected)
    # Balanced by parameters: the conv features outweigh pooling + the linear head.
    assert strategy.plan == [("cpu", ["features"]), ("cpu", ["pool", "classifier"])]


def test_pipeline_split_by_name_and_by_time(folders, weights: Path, tmp_path: Path) -> None:
    source = folders(7)
    expected = predict_in_process(source, tmp_path / "single", weights, 3, devices=1)
    for name, strategy in {
        "named": PipelineStrategy(devices=["cpu", "cpu", "cpu"], split_at=["pool", "classifier"], micro_batches=2),
        "timed": PipelineStrategy(devices=["cpu", "cpu"], balance_by="time"),
    }.items():
        assert_same_rows(predict_in_process(source, tmp_path / name, weights, 3, strategy=strategy), expected)
    assert strategy.plan[0] == ("cpu", ["features"])


def test_pipeline_gives_the_users_network_back(folders, weights: Path, tmp_path: Path) -> None:
    import lightning as L

    from lit_infer import ImageDataModule, PredictionWriter

    module = classifier(weights)
    net = module.net
    data = ImageDataModule(folders(3), batch_size=2, num_workers=0, preprocessing=module.preprocessing)
    trainer = L.Trainer(
        accelerator="cpu",
        strategy=PipelineStrategy(devices=["cpu", "cpu"]),
        callbacks=[PredictionWriter(tmp_path / "out", fsync=False)],
        logger=False,
        enable_progress_bar=False,
    )
    trainer.predict(module, datamodule=data, return_predictions=False)
    assert module.net is net


def test_split_stages_compose_to_the_network() -> None:
    torch.manual_seed(0)
    net = TinyCNN(num_classes=5, width=4, depth=2).eval()
    x = torch.rand(6, 3, 16, 16)
    with torch.inference_mode():
        expected = net(x)
        for starts in ([0], [0, 1], [0, 2], [0, 1, 2]):
            stages = split_stages(net, starts)
            assert len(stages) == len(starts)
            y = x
            for stage in stages:
                y = stage(y)  # TinyCNN's flatten between pool and classifier travels with its stage
            torch.testing.assert_close(y, expected, rtol=0, atol=0)


def test_split_stages_of_a_sequential_and_refused_cuts() -> None:
    seq = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    stages = split_stages(seq, [0, 2])
    assert [len(s) for s in stages] == [2, 1]

    class TwoPaths(nn.Module):  # the input is used again after `a`: two values cross a cut after it
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x)) + x

    with pytest.raises(ConfigError, match="more than one value"):
        split_stages(TwoPaths(), [0, 1])


def test_wavefront_runs_stages_concurrently_and_in_order() -> None:
    """Stage 1 must start micro-batch 0 while stage 0 is still busy with later micro-batches."""
    log: list[tuple[str, int, int]] = []
    lock = threading.Lock()
    # Stage 0 holds its later micro-batches until stage 1 has begun: a wavefront gets there at once, one stage after
    # the other never does (then the wait times out and the order below fails). No race with a busy machine: the wait
    # ends as soon as stage 1 starts, and its bound is paid only when the pipeline is broken.
    stage1_started = threading.Event()

    class Slow(nn.Module):
        def __init__(self, k: int) -> None:
            super().__init__()
            self.k = k

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with lock:
                log.append(("start", self.k, int(x[0, 0])))
            if self.k == 1:
                stage1_started.set()
            elif int(x[0, 0]) > 0:
                stage1_started.wait(timeout=20)
            with lock:
                log.append(("end", self.k, int(x[0, 0])))
            return x

    pipe = PipelinedNet([Slow(0), Slow(1)], [torch.device("cpu")] * 2, micro_batches=4)
    x = torch.arange(8, dtype=torch.float32).repeat_interleave(1).view(8, 1).expand(8, 2).contiguous()
    try:
        out = pipe(x)
    finally:
        pipe.close()
    assert torch.equal(out, x)
    # Micro-batches start at rows 0, 2, 4, 6 and go through each stage in order.
    assert [m for ev, k, m in log if ev == "start" and k == 0] == [0, 2, 4, 6]
    assert [m for ev, k, m in log if ev == "start" and k == 1] == [0, 2, 4, 6]
    stage1_first = log.index(("start", 1, 0))
    stage0_last_end = log.index(("end", 0, 6))
    assert stage1_first < stage0_last_end  # overlap: not one stage after the other


def test_child_costs() -> None:
    net = TinyCNN(num_classes=5, width=4, depth=2)
    params = child_costs(net, "parameters")
    assert params[0] > params[2] > params[1]  # features > classifier > pool (no parameters)
    times = child_costs(net, "time", torch.rand(2, 3, 16, 16), repeats=1)
    assert len(times) == 3 and all(t > 0 for t in times)


def test_pipeline_refuses_a_bad_plan() -> None:
    with pytest.raises(ConfigError, match="micro_batches"):
        PipelineStrategy(devices=["cpu"], micro_batches=0)
    with pytest.raises(ConfigError, match="devices"):
        PipelineStrategy(devices=["cuda"])


@pytest.mark.gpu
def test_pipeline_on_the_gpu_matches_single_device(folders, weights: Path, tmp_path: Path) -> None:
    torch.backends.cudnn.allow_tf32 = False  # fp32 answers, comparable to 1e-5
    source = folders(23)
    expected = predict_in_process(source, tmp_path / "single", weights, 4, accelerator="gpu", devices=1)
    for name, devices in {"one_gpu": ["cuda:0", "cuda:0"], "gpu_then_cpu": ["cuda:0", "cpu"]}.items():
        strategy = PipelineStrategy(devices=devices, micro_batches=2)
        got = predict_in_process(source, tmp_path / name, weights, 4, accelerator="gpu", strategy=strategy)
        assert_same_rows(got, expected)
