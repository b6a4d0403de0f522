"""An out-of-memory error on batch k (injected: no GPU here) splits the batch and retries; every item is written once,
with the same values as a run that never ran out of memory, and the size that worked is kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_images, quiet_trainer

from lit_infer.callbacks import PredictionWriter
from lit_infer.data import ImageDataModule
from lit_infer.data.batches import sizes_of_at_most, split_batch
from lit_infer.modules import ImageClassifier
from lit_infer.modules.oom import SplitOnOOM, concat_predictions
from lit_infer.nets import TinyCNN
from lit_infer.preprocessing import Preprocessing
from lit_infer.records import Batch, Failure, Predictions
from lit_infer.system import is_out_of_memory

P = Preprocessing(crop_size=16, resize_size=16)


class OOMFromBatch(ImageClassifier):
    """Runs out of memory on every forward of more than ``fits`` images, from its ``k``-th forward on."""

    probe_output = False  # it counts forwards: no start-up probe (its output is still checked on every batch)

    def __init__(self, k: int, fits: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.k, self.fits, self.forwards, self.sizes = k, fits, 0, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        if self.forwards > self.k and x.shape[0] > self.fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")
        self.sizes.append(x.shape[0])
        return super().forward(x)


def _run(module: ImageClassifier, images: Path, out: Path) -> str:
    data = ImageDataModule(images, batch_size=8, num_workers=0, preprocessing=P)
    trainer = quiet_trainer(PredictionWriter(out))
    trainer.predict(module, datamodule=data, return_predictions=False)
    return (out / "predictions.csv").read_text()


def test_oom_on_batch_k_splits_retries_and_keeps_the_size(tmp_path: Path) -> None:
    make_images(tmp_path / "images", 37)
    torch.manual_seed(0)
    state = TinyCNN(4, 4, 2).state_dict()

    def net() -> TinyCNN:
        n = TinyCNN(4, 4, 2)
        n.load_state_dict(state)
        return n

    expected = _run(ImageClassifier(net=net()), tmp_path / "images", tmp_path / "plain")
    module = OOMFromBatch(k=2, fits=3, net=net())
    with pytest.warns(UserWarning, match="out of memory on 8 images"):
        got = _run(module, tmp_path / "images", tmp_path / "oom")
    assert got == expected  # every row once, same order, same values
    # Batches 0-1 whole (8, 8); batch 2 fails at 8 and 4, fits at 2; from then on parts of 2.
    assert module.sizes[:2] == [8, 8] and set(module.sizes[2:]) == {2, 1}
    assert sum(module.sizes) == 37
    assert module.oom_split.max_size == 2


def _batch(n: int, failures: int = 0) -> Batch:
    return Batch(
        torch.zeros(n, 3, 2, 2, dtype=torch.uint8),
        torch.arange(10, 10 + n),
        [f"p{i}" for i in range(n)],
        torch.zeros(n, dtype=torch.int64),
        [Failure(100 + i, f"bad{i}", "OSError", "x") for i in range(failures)],
    )


def test_split_and_concat_keep_order_and_report_failures_once() -> None:
    parts = split_batch(_batch(5, failures=2), sizes_of_at_most(5, 2))
    assert [len(p) for p in parts] == [2, 2, 1]
    assert [len(p.failures) for p in parts] == [2, 0, 0]
    preds = [Predictions(p.indices.numpy(), p.paths, {"v": p.indices.numpy() * 2}, p.failures) for p in parts]
    merged = concat_predictions(preds)
    assert merged.indices.tolist() == [10, 11, 12, 13, 14] and merged.columns["v"].tolist() == [20, 22, 24, 26, 28]
    assert [f.index for f in merged.failures] == [100, 101]


def test_a_single_image_that_does_not_fit_and_other_errors_are_raised() -> None:
    def always_oom(part: Batch) -> Predictions:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.warns(UserWarning), pytest.raises(torch.cuda.OutOfMemoryError):
        SplitOnOOM()(_batch(4), always_oom)

    def broken(part: Batch) -> Predictions:
        raise ValueError("a bug, not memory")

    splitter = SplitOnOOM()
    with pytest.raises(ValueError):
        splitter(_batch(4), broken)
    assert splitter.max_size is None  # no retry for errors that are not about memory
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory")) and not is_out_of_memory(ValueError("x"))
    assert np.array_equal(split_batch(_batch(3), sizes_of_at_most(3, 8))[0].indices.numpy(), [10, 11, 12])


class HungryNet(torch.nn.Module):
    """Allocates ``per_image`` bytes of device memory per image: a real CUDA out-of-memory error past a batch size."""

    def __init__(self, per_image: int) -> None:
        super().__init__()
        self.per_image = per_image
        self.sizes: list[int] = []
        self.head = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scratch = torch.empty(x.shape[0] * self.per_image, dtype=torch.uint8, device=x.device)
        del scratch
        self.sizes.append(x.shape[0])
        return self.head(x.float().mean(dim=(2, 3)))


@pytest.mark.gpu
def test_real_cuda_oom_splits_and_recovers(tmp_path: Path) -> None:
    make_images(tmp_path / "images", 20)
    free, _ = torch.cuda.mem_get_info()
    net = HungryNet(per_image=int(free * 0.3))  # 8 images: 2.4x the free memory; 2 images: 0.6x
    module = ImageClassifier(net=net)
    data = ImageDataModule(tmp_path / "images", batch_size=8, num_workers=0, preprocessing=P)
    trainer = quiet_trainer(PredictionWriter(tmp_path / "out"), accelerator="cuda")
    with pytest.warns(UserWarning, match="out of memory"):
        trainer.predict(module, datamodule=data, return_predictions=False)
    rows = (tmp_path / "out" / "predictions.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(20))
    # sizes[0]: the classifier's start-up probe of its output, one blank image
    assert net.sizes[0] == 1 and max(net.sizes) <= 2 and sum(net.sizes[1:]) == 20 and module.oom_split.max_size == 2
