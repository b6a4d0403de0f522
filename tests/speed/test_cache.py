"""The preprocessed cache end to end: filled by DataLoader workers, read back by a later run with the same outputs,
and keyed by the preprocessing. Per-source effects (every source, a second run decodes nothing, a failed item or an
edited file is never served stale) are in tests/data/test_source_matrix.py."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L

from lit_infer import Decoding, ImageClassifier, ImageDataModule, Inputs, PredictionWriter, Preprocessing
from lit_infer.nets import TinyCNN
from tests.conftest import make_images

PRE = Preprocessing(crop_size=32, resize_size=36)


def test_predictions_from_the_cache_equal_predictions_without_it(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", 12, classes=2, ext="jpg")
    net = TinyCNN(num_classes=2, width=4, depth=2)
    results = []
    for run, cache in enumerate([None, tmp_path / "cache", tmp_path / "cache"]):
        dm = ImageDataModule(
            tmp_path / "imgs",
            batch_size=5,
            num_workers=2,
            preprocessing=PRE,
            decoding=Decoding(cache_dir=cache),
            inputs=Inputs(unit_size=4),
        )
        module = ImageClassifier(net=net, preprocessing=PRE, top_k=2)
        out = tmp_path / f"out{run}"
        trainer = L.Trainer(
            accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, callbacks=[PredictionWriter(out)]
        )
        trainer.predict(module, datamodule=dm, return_predictions=False)
        if cache is not None:  # one entry per unit, written by the workers
            assert len(list((tmp_path / "cache").glob("*/*.u8"))) == 3
        with open(out / "predictions.csv") as f:
            results.append(list(csv.DictReader(f)))
    assert results[0] == results[1] == results[2]
    assert len(results[0]) == 12


def test_other_preprocessing_gets_its_own_cache(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", 3)
    folders = []
    for p in (PRE, Preprocessing(crop_size=16)):
        dm = ImageDataModule(
            tmp_path / "imgs", num_workers=0, preprocessing=p, decoding=Decoding(cache_dir=tmp_path / "cache")
        )
        dm.setup("predict")
        folders.append(dm.dataset.cache.folder)
    assert folders[0] != folders[1]
