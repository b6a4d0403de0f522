"""FeatureExtractor: penultimate features by default, any named layer by a hook, pooling and L2 normalisation."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import make_images

from lit_infer import FeatureExtractor, ImageDataModule, PredictionWriter, Preprocessing
from lit_infer.errors import ConfigError
from lit_infer.nets import TinyCNN
from lit_infer.records import Batch

P = Preprocessing(crop_size=16, resize_size=16)


def _batch(n: int = 4) -> Batch:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g)
    return Batch(images, torch.arange(n), [f"{i}.png" for i in range(n)], torch.full((n,), -1))


def _net() -> TinyCNN:
    torch.manual_seed(0)
    return TinyCNN(num_classes=3, width=4, depth=2).eval()


def _embed(module: FeatureExtractor, batch: Batch) -> np.ndarray:
    with torch.inference_mode():
        return module.predict_step(batch, 0).columns["embedding"]


def test_default_is_the_input_of_the_last_linear() -> None:
    net = _net()
    module = FeatureExtractor(net=net, preprocessing=P)
    batch = _batch()
    emb = _embed(module, batch)
    with torch.inference_mode():
        expected = net.pool(net.features(module.preprocess(batch))).flatten(1).numpy()
    assert emb.shape == (4, 8)  # width 4 doubled once
    np.testing.assert_allclose(emb, expected, rtol=1e-6, atol=1e-7)


def test_named_layer_with_each_pooling() -> None:
    net = _net()
    batch = _batch()
    module = FeatureExtractor(net=net, preprocessing=P, layer="features.2")  # the first block's ReLU: 4 x 16 x 16
    with torch.inference_mode():
        fmap = net.features[:3](module.preprocess(batch))
    np.testing.assert_allclose(_embed(module, batch), fmap.mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6)
    maxed = FeatureExtractor(net=net, preprocessing=P, layer="features.2", pool="max")
    np.testing.assert_allclose(_embed(maxed, batch), fmap.amax(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6)
    flat = FeatureExtractor(net=net, preprocessing=P, layer="features.2", pool="flatten")
    np.testing.assert_allclose(_embed(flat, batch), fmap.flatten(1).numpy(), rtol=1e-5, atol=1e-6)
    assert _embed(flat, batch).shape == (4, 4 * 16 * 16)


def test_l2_normalisation() -> None:
    raw = _embed(FeatureExtractor(net=_net(), preprocessing=P), _batch())
    unit = _embed(FeatureExtractor(net=_net(), preprocessing=P, normalize=True), _batch())
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_a_net_without_linear_gives_its_output() -> None:
    net = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU())
    module = FeatureExtractor(net=net, preprocessing=P)
    batch = _batch(2)
    with torch.inference_mode():
        expected = net(module.preprocess(batch)).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(_embed(module, batch), expected, rtol=1e-5, atol=1e-6)


def test_unknown_layer_names_model_layer_and_lists_some() -> None:
    with pytest.raises(ConfigError) as info:
        FeatureExtractor(net=_net(), preprocessing=P, layer="layer4")
    assert info.value.key == "model.layer"
    assert "features.0" in str(info.value)


def test_embeddings_to_npy_in_dataset_order(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", 11)
    module = FeatureExtractor(net=_net(), preprocessing=P, normalize=True)
    writer = PredictionWriter(tmp_path / "out", format="npy")
    dm = ImageDataModule(tmp_path / "imgs", batch_size=4, num_workers=0, preprocessing=P)
    trainer = L.Trainer(
        accelerator="cpu", logger=False, callbacks=[writer], enable_progress_bar=False, enable_model_summary=False
    )
    trainer.predict(module, datamodule=dm, return_predictions=False)
    emb = np.load(tmp_path / "out" / "embedding.npy")
    assert emb.shape == (11, 8) and emb.dtype == np.float32
    table = (tmp_path / "out" / "predictions.csv").read_text().splitlines()
    assert table[0] == "index,path"
    assert [int(line.split(",")[0]) for line in table[1:]] == list(range(11))
    # Row i is image i's own embedding.
    check = ImageDataModule(tmp_path / "imgs", batch_size=11, num_workers=0, preprocessing=P)
    check.setup()
    np.testing.assert_allclose(emb, _embed(module, next(iter(check.predict_dataloader()))), rtol=1e-5, atol=1e-6)
