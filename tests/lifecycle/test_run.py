"""``lit_infer.predict``: plan, Lightning's loop, finalize after it returns; the same files as a plain
``Trainer.predict`` with the writer callback, and the plan handed to every part instead of read off the trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from conftest import make_images, quiet_trainer

import lit_infer
from lit_infer import ImageClassifier, ImageDataModule, PredictionWriter
from lit_infer.nets import TinyCNN
from lit_infer.preprocessing import Preprocessing

P = Preprocessing(crop_size=16, resize_size=16)


def _parts(images: Path, seed: int = 0) -> tuple[ImageClassifier, ImageDataModule]:
    torch.manual_seed(seed)
    # Class names as the folders are named: the folders are labels (metrics), as the model says.
    module = ImageClassifier(net=TinyCNN(2, 4, 2), preprocessing=P, class_names=["class_0", "class_1"])
    return module, ImageDataModule(images, batch_size=4, num_workers=0, preprocessing=P)


class _SeesTheEnd(L.Callback):
    """Records what Lightning's teardown sees: with ``lit_infer.predict``, no merged output yet."""

    def __init__(self, out: Path) -> None:
        self.out, self.merged_at_teardown = out, None

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.merged_at_teardown = (self.out / "predictions.csv").exists()


@pytest.mark.slow
def test_predict_finalizes_after_the_loop_with_the_files_of_a_plain_trainer_predict(tmp_path: Path) -> None:
    make_images(tmp_path / "images", 9, classes=2)
    module, data = _parts(tmp_path / "images")
    plain = PredictionWriter(tmp_path / "plain")
    quiet_trainer(plain).predict(module, datamodule=data, return_predictions=False)

    module, data = _parts(tmp_path / "images")
    out = tmp_path / "api"
    seen = _SeesTheEnd(out)
    writer = PredictionWriter(out)
    summary = lit_infer.predict(module, data, trainer=quiet_trainer(seen), writer=writer)
    assert seen.merged_at_teardown is False  # the end did not happen inside Lightning's teardown
    assert summary == writer.summary and summary["num_predicted"] == 9
    assert summary["metrics"]["num_labeled"] == 9  # folder labels reached the module through the plan
    assert summary["metrics"] == plain.summary["metrics"]
    for name in ("predictions.csv", "errors.jsonl"):
        assert (out / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()
    assert writer.finalize_in_teardown  # back to the default for a later plain Trainer.predict

    # The one plan, handed to every part.
    assert module.plan is writer.plan and data.plan is writer.plan
    assert writer.plan.data.class_names == ["class_0", "class_1"] and module.class_names == ["class_0", "class_1"]

    # A rerun is complete already: the same summary, nothing predicted again.
    module, data = _parts(tmp_path / "images")
    again = lit_infer.predict(module, data, trainer=quiet_trainer(), writer=PredictionWriter(out))
    assert again["num_predicted"] == 9 and data.plan.complete


def test_predict_uses_the_trainers_own_writer_and_refuses_a_second(tmp_path: Path) -> None:
    make_images(tmp_path / "images", 3)
    module, data = _parts(tmp_path / "images")
    writer = PredictionWriter(tmp_path / "out", format="jsonl")
    summary = lit_infer.predict(module, data, trainer=quiet_trainer(writer))
    assert summary["files"]["table"] == "predictions.jsonl"
    with pytest.raises(ValueError, match="already has a PredictionWriter"):
        lit_infer.predict(module, data, trainer=quiet_trainer(writer), writer=PredictionWriter(tmp_path / "x"))


def test_an_interrupted_loop_is_not_finalized(tmp_path: Path) -> None:
    make_images(tmp_path / "images", 8)
    module, data = _parts(tmp_path / "images")

    class Boom(L.Callback):  # after the writer's commit of batch 0 (callbacks run in order), in batch 1
        def on_predict_batch_end(
            self, trainer: L.Trainer, module: Any, outputs: Any, batch: Any, batch_idx: int
        ) -> None:
            if batch_idx == 1:
                raise RuntimeError("boom")

    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"):
        lit_infer.predict(module, data, trainer=quiet_trainer(Boom()), writer=PredictionWriter(out))
    assert not (out / "predictions.csv").exists() and (out / ".lit_infer").is_dir()  # resumable, not merged
