"""PredictionModule: any network in, preprocess -> forward -> postprocess, plain records out."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import make_images

from lit_infer import ImageDataModule, PredictionModule, PredictionWriter, Preprocessing
from lit_infer.errors import ConfigError
from lit_infer.nets import TinyCNN
from lit_infer.records import Batch, Failure, Predictions

P = Preprocessing(crop_size=8, resize_size=8, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 0.125))


def _batch(n: int = 3, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    nhwc = torch.randint(0, 256, (n, 8, 8, 3), dtype=torch.uint8, generator=g)
    return Batch(nhwc.permute(0, 3, 1, 2), torch.arange(10, 10 + n), [f"p{i}" for i in range(n)], torch.full((n,), -1))


def test_preprocess_normalises_like_to_tensor_then_normalize() -> None:
    module = PredictionModule(net=TinyCNN(), preprocessing=P)
    batch = _batch()
    x = module.preprocess(batch)
    mean, std = torch.tensor(P.mean).view(1, 3, 1, 1), torch.tensor(P.std).view(1, 3, 1, 1)
    expected = (batch.images.float() / 255.0 - mean) / std
    torch.testing.assert_close(x, expected, atol=1e-5, rtol=0)
    assert x.dtype == torch.float32 and x.is_contiguous()


def test_preprocess_channels_last_and_network_dtype() -> None:
    module = PredictionModule(net=TinyCNN(), preprocessing=P, channels_last=True)
    assert module.preprocess(_batch()).is_contiguous(memory_format=torch.channels_last)
    module.net.to(torch.bfloat16)
    assert module.input_dtype == torch.bfloat16
    assert module.preprocess(_batch()).dtype == torch.bfloat16


def test_predict_step_writes_the_raw_output_with_index_and_path() -> None:
    net = TinyCNN(num_classes=5, width=4, depth=1)
    module = PredictionModule(net=net, preprocessing=P)
    batch = _batch(4)
    with torch.inference_mode():
        pred = module.predict_step(batch, 0)
        expected = net(module.preprocess(batch)).numpy()
    assert isinstance(pred, Predictions)
    assert pred.indices.tolist() == [10, 11, 12, 13]
    assert pred.paths == ["p0", "p1", "p2", "p3"]
    np.testing.assert_allclose(pred.columns["output"], expected, rtol=1e-6)


def test_a_batch_of_only_failures_returns_the_failures() -> None:
    module = PredictionModule(net=TinyCNN(), preprocessing=P)
    failure = Failure(4, "bad.jpg", "OSError", "truncated")
    empty = Batch(
        torch.empty(0, 3, 0, 0, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64), [], torch.zeros(0), [failure]
    )
    pred = module.predict_step(empty, 0)
    assert len(pred) == 0 and pred.failures == [failure]


def test_factory_with_kwargs_and_the_default_preprocessing() -> None:
    module = PredictionModule(factory="lit_infer.nets.TinyCNN", factory_kwargs={"num_classes": 9, "width": 4})
    assert isinstance(module.net, TinyCNN) and module.net.classifier.out_features == 9
    assert module.preprocessing == Preprocessing()
    assert not module.net.training  # eval mode: BatchNorm uses its running statistics


def test_preprocessing_comes_from_the_model_when_it_declares_one() -> None:
    net = TinyCNN()
    net.pretrained_cfg = {"input_size": (3, 96, 96), "crop_pct": 1.0, "mean": (0, 0, 0), "std": (1, 1, 1)}
    module = PredictionModule(net=net)
    assert module.preprocessing.crop_size == 96 and module.preprocessing.resize == 96
    assert PredictionModule(net=net, preprocessing=P).preprocessing == P  # an explicit setting wins


def test_weights_are_loaded_and_fingerprinted_by_content(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = TinyCNN(width=4, depth=1)
    path = tmp_path / "w.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    module = PredictionModule(net=TinyCNN(width=4, depth=1), weights=path)
    assert torch.equal(module.net.classifier.weight, source.classifier.weight)
    fp = module.fingerprint()
    assert fp["weights"]["path"] == str(path) and len(fp["weights"]["sha256"]) == 64
    assert fp["net"] == "lit_infer.nets.TinyCNN"
    copy = tmp_path / "copy.pt"
    copy.write_bytes(path.read_bytes())
    assert (
        PredictionModule(net=TinyCNN(width=4, depth=1), weights=copy).fingerprint()["weights"]["sha256"]
        == (fp["weights"]["sha256"])
    )


def test_bad_weights_path_names_model_weights(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        PredictionModule(net=TinyCNN(), weights=tmp_path / "nope.pt")
    assert info.value.key == "model.weights"


class _TupleNet(nn.Module):
    """A network that returns a tuple (as some detection/feature nets do): the base module writes each element."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(x).mean(dim=(2, 3))
        return y, -y


def test_trainer_predict_end_to_end_with_the_base_module(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", 9)
    module = PredictionModule(net=_TupleNet(), preprocessing=P)
    dm = ImageDataModule(tmp_path / "imgs", batch_size=4, num_workers=0, preprocessing=P)
    writer = PredictionWriter(tmp_path / "out", format="npy")
    trainer = L.Trainer(
        accelerator="cpu", logger=False, callbacks=[writer], enable_progress_bar=False, enable_model_summary=False
    )
    trainer.predict(module, datamodule=dm, return_predictions=False)
    output = np.load(tmp_path / "out" / "output_0.npy")
    assert output.shape == (9, 2) and output.dtype == np.float32
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "output_1.npy"), -output)  # nothing dropped
    # Row i is image i's own output, recomputed here from its decoded pixels.
    dm_check = ImageDataModule(tmp_path / "imgs", batch_size=9, num_workers=0, preprocessing=P)
    dm_check.setup()
    batch = next(iter(dm_check.predict_dataloader()))
    with torch.inference_mode():
        expected = module(module.preprocess(batch))[0].numpy()
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-6)
