"""Measured settings: the batch-size search and the split of CPU cores between the model and the decoders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from lit_infer.nets import TinyCNN
from lit_infer.tuning import find_batch_size, main_threads, search_batch_size


def test_search_stops_at_the_first_batch_that_does_not_fit() -> None:
    tried = []

    def measure(n: int) -> float:
        tried.append(n)
        if n > 256:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return float(n)  # throughput still growing

    assert search_batch_size(measure, start=16, limit=4096) == 256
    assert tried == [16, 32, 64, 128, 256, 512]


def test_search_stops_when_throughput_stops_growing() -> None:
    ips = {16: 100.0, 32: 180.0, 64: 250.0, 128: 255.0, 256: 400.0}
    assert search_batch_size(ips.__getitem__, start=16, limit=256) == 64


def test_search_respects_the_limit_and_reraises_other_errors() -> None:
    assert search_batch_size(float, start=8, limit=40) == 32

    def broken(n: int) -> float:
        if n > 8:
            raise ValueError("shape mismatch")
        return 1.0

    with pytest.raises(ValueError, match="shape mismatch"):
        search_batch_size(broken, start=8, limit=64, growth=0.0)


def test_find_batch_size_on_cpu_returns_a_power_of_two_within_bounds() -> None:
    size = find_batch_size(TinyCNN(width=4, depth=2).eval(), crop_size=32, device=torch.device("cpu"), limit=64)
    assert size in (16, 32, 64)


@pytest.mark.parametrize(
    ("cores", "workers", "model_ms", "decode_ms", "expected"),
    [
        (2, 2, 1.0, 2.4, 1),  # small CNN on JPEGs: data-bound, one thread for the model
        (2, 2, 100.0, 2.4, 2),  # ResNet-18-sized: compute-bound, the model keeps the cores
        (16, 16, 10.0, 10.0, 1),
        (16, 4, 30.0, 10.0, 12),
        (4, 0, 1.0, 5.0, 4),  # decoding in this process: nothing to share
        (1, 1, 1.0, 5.0, 1),
    ],
)
def test_main_threads(cores: int, workers: int, model_ms: float, decode_ms: float, expected: int) -> None:
    assert main_threads(cores, workers, model_ms, decode_ms) == expected


class _ThreadsSeen(L.Callback):
    """A Lightning callback: the torch threads as each predicted batch starts; with ``fail``, the first batch raises."""

    def __init__(self, fail: bool = False) -> None:
        self.seen: list[int] = []
        self.fail = fail

    def on_predict_batch_start(self, *args: Any, **kwargs: Any) -> None:
        self.seen.append(torch.get_num_threads())
        if self.fail:
            raise RuntimeError("a batch that fails")


@pytest.mark.slow
@pytest.mark.parametrize(("threads", "before", "during"), [("auto", 2, 1), (2, 1, 2)])
@pytest.mark.parametrize("fail", [False, True])
def test_model_threads_hold_during_the_predict_and_the_process_gets_its_own_back(
    tmp_path: Path, threads: int | str, before: int, during: int, fail: bool
) -> None:
    """From Python: ``auto`` gives a data-bound model one thread (decoding costs far more than this tiny net), a
    number is taken as it is; either way the process's own count comes back when the predict ends or fails."""
    from lit_infer import ImageClassifier, ImageDataModule, Loader, PredictionWriter, Preprocessing
    from tests.conftest import make_images

    make_images(tmp_path / "imgs", 8, size=(400, 300), ext="jpg")
    pre = Preprocessing(crop_size=16, resize_size=16)
    own = torch.get_num_threads()
    try:
        torch.set_num_threads(before)
        dm = ImageDataModule(
            tmp_path / "imgs", batch_size=4, num_workers=1, preprocessing=pre, loader=Loader(model_threads=threads)
        )
        seen = _ThreadsSeen(fail)
        trainer = L.Trainer(
            accelerator="cpu",
            logger=False,
            enable_progress_bar=False,
            callbacks=[PredictionWriter(tmp_path / "out"), seen],
        )
        module = ImageClassifier(net=TinyCNN(width=2, depth=1), preprocessing=pre)
        if fail:
            with pytest.raises(RuntimeError, match="a batch that fails"):
                trainer.predict(module, datamodule=dm, return_predictions=False)
        else:
            trainer.predict(module, datamodule=dm, return_predictions=False)
        assert during != before and set(seen.seen) == {during}, seen.seen  # tuned for the predict ...
        assert torch.get_num_threads() == before  # ... and the process's own count after it
    finally:
        torch.set_num_threads(own)
