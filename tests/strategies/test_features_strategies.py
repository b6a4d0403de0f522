"""FeatureExtractor under ``dp`` and ``pipeline``: the embeddings come back whole and in order, as on one device.

The embedding is captured by a hook inside the network: ``dp`` runs it in each replica on a slice of the batch and
``pipeline`` once per micro-batch, so a capture kept beside the forward's result would hold one slice only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest

from lit_infer import FeatureExtractor, ImageDataModule, PipelineStrategy, PredictionWriter, Preprocessing
from lit_infer.nets import TinyCNN
from strategies.strategy_helpers import NET, PREPROCESSING


def _embeddings(source: Path, out: Path, weights: Path, layer: str | None, **trainer: Any) -> np.ndarray:
    module = FeatureExtractor(
        net=TinyCNN(**NET["init_args"]), weights=weights, layer=layer, preprocessing=Preprocessing(**PREPROCESSING)
    )
    data = ImageDataModule(source, batch_size=8, num_workers=0, preprocessing=module.preprocessing)
    writer = PredictionWriter(out, format="npy", fsync=False)
    L.Trainer(
        accelerator="cpu",
        callbacks=[writer],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer,
    ).predict(module, datamodule=data, return_predictions=False)
    return np.load(out / "embedding.npy")


@pytest.mark.parametrize("layer", [None, "features"])  # the last linear's input; a 4-D map, average-pooled
def test_embeddings_under_dp_and_pipeline_match_one_device(folders, weights: Path, tmp_path: Path, layer) -> None:
    source = folders(23)
    single = _embeddings(source, tmp_path / "single", weights, layer, devices=1)
    dp = _embeddings(source, tmp_path / "dp", weights, layer, strategy="dp", devices=3)
    pipe = PipelineStrategy(devices=["cpu", "cpu"], micro_batches=3)
    pipelined = _embeddings(source, tmp_path / "pipe", weights, layer, strategy=pipe)
    assert single.shape[0] == 23 and single.shape[1] > 1
    np.testing.assert_allclose(dp, single, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pipelined, single, rtol=1e-5, atol=1e-6)
