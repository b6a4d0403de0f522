"""The preprocessed cache: filled once (by workers too), read back with identical pixels, keyed so it never goes stale."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from lit_infer import ImageClassifier, ImageDataModule, PredictionWriter, Preprocessing
from lit_infer.data.cache import CachedDataset
from lit_infer.nets import TinyCNN
from tests.conftest import make_images

PRE = Preprocessing(crop_size=32, resize_size=36)


def _datamodule(root: Path, cache: Path | None) -> ImageDataModule:
    dm = ImageDataModule(root, batch_size=4, num_workers=0, preprocessing=PRE, cache_dir=cache)
    dm.setup("predict")
    return dm


def test_cache_serves_the_same_pixels_without_reading_the_files(tmp_path: Path) -> None:
    paths = make_images(tmp_path / "imgs", 6, ext="jpg")
    plain = _datamodule(tmp_path / "imgs", None).dataset
    cached = _datamodule(tmp_path / "imgs", tmp_path / "cache").dataset
    assert isinstance(cached, CachedDataset) and cached.num_cached == 0
    first = [cached[i].image for i in range(6)]
    assert cached.num_cached == 6
    for i in range(6):
        assert torch.equal(first[i], plain[i].image)
    # A new run over the same files finds the cache; with the files gone it can only have read the cache.
    again = _datamodule(tmp_path / "imgs", tmp_path / "cache").dataset
    for p in paths:
        os.remove(p)
    for i in range(6):
        sample = again[i]
        assert sample.error is None and torch.equal(sample.image, first[i])
        assert sample.path == str(paths[i])


def test_changed_file_or_preprocessing_gets_a_fresh_cache(tmp_path: Path) -> None:
    paths = make_images(tmp_path / "imgs", 3)
    a = _datamodule(tmp_path / "imgs", tmp_path / "cache").dataset
    a[0]
    os.utime(paths[1], ns=(1, 1))  # an edited image changes its mtime
    b = _datamodule(tmp_path / "imgs", tmp_path / "cache").dataset
    assert b.folder != a.folder and b.num_cached == 0
    other = ImageDataModule(tmp_path / "imgs", preprocessing=Preprocessing(crop_size=16), cache_dir=tmp_path / "cache")
    other.setup("predict")
    assert other.dataset.folder not in (a.folder, b.folder)


def test_failures_are_not_cached(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", 2)
    (tmp_path / "imgs" / "img_00002.png").write_bytes(b"not an image")
    ds = _datamodule(tmp_path / "imgs", tmp_path / "cache").dataset
    assert ds[2].error is not None and ds.num_cached == 0
    assert ds[2].error is not None  # read again, fails again: still an error record, never zeros
    assert ds[0].error is None and ds.num_cached == 1


@pytest.mark.slow
def test_predictions_from_the_cache_equal_predictions_without_it(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", 12, classes=2, ext="jpg")
    net = TinyCNN(num_classes=2, width=4, depth=2)
    results = []
    for run, cache in enumerate([None, tmp_path / "cache", tmp_path / "cache"]):
        dm = ImageDataModule(tmp_path / "imgs", batch_size=5, num_workers=2, preprocessing=PRE, cache_dir=cache)
        module = ImageClassifier(net=net, preprocessing=PRE, top_k=2)
        out = tmp_path / f"out{run}"
        trainer = L.Trainer(
            accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, callbacks=[PredictionWriter(out)]
        )
        trainer.predict(module, datamodule=dm, return_predictions=False)
        if cache is not None:
            assert dm.dataset.num_cached == 12  # rows written by the DataLoader workers are in the shared file
        with open(out / "predictions.csv") as f:
            results.append(list(csv.DictReader(f)))
    assert results[0] == results[1] == results[2]
    assert len(results[0]) == 12


def test_cached_dataset_pickles_without_its_arrays(tmp_path: Path) -> None:
    import pickle

    make_images(tmp_path / "imgs", 3)
    ds = _datamodule(tmp_path / "imgs", tmp_path / "cache").dataset
    ds[0]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._images is None and np.array_equal(clone[0].image.numpy(), ds[0].image.numpy())
