"""Class sub-folders give labels only when they are labels: the model's class names, or the user says so."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn as nn
from PIL import Image

from lit_infer import ImageClassifier, ImageDataModule, Inputs, PredictionWriter, Preprocessing
from lit_infer.errors import ConfigError
from lit_infer.modules.labels import folder_labels_refused

P = Preprocessing(crop_size=8, resize_size=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


class RedThirds(nn.Module):
    """Three classes by the mean red value: dark, middle, bright."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(1, 3)  # the net's width, as the classifier reads it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = x[:, 0].mean(dim=(1, 2)).unsqueeze(1)
        return -100.0 * (red - torch.tensor([0.15, 0.5, 0.85])) ** 2


def _folders(root: Path, names: list[str]) -> None:
    for i, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for j in range(2):
            Image.new("RGB", (9, 10), (round((0.15 + 0.35 * i) * 255), 20, j)).save(root / name / f"{j}.png")


def _run(tmp_path: Path, module: ImageClassifier, **data: object) -> dict:
    out = tmp_path / "out"
    dm = ImageDataModule(tmp_path / "imgs", batch_size=4, num_workers=0, preprocessing=P, **data)
    trainer = L.Trainer(accelerator="cpu", logger=False, callbacks=[PredictionWriter(out)], enable_progress_bar=False)
    trainer.predict(module, datamodule=dm, return_predictions=False)
    return json.loads((out / "summary.json").read_text())


def test_folders_that_are_not_classes_give_no_labels_and_say_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _folders(tmp_path / "imgs", ["holiday", "misc", "work"])
    with caplog.at_level(logging.INFO):
        summary = _run(tmp_path, ImageClassifier(net=RedThirds(), preprocessing=P))
    assert summary["metrics"] == {} and summary["num_predicted"] == 6
    lines = [r.getMessage() for r in caplog.records if "no labels" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "model declares no class names" in lines[0] and "data.inputs.labels_from_folders=true" in lines[0]
    assert "model.class_names" in lines[0]
    header = (tmp_path / "out" / "predictions.csv").read_text().splitlines()[0]
    assert "target" not in header and "label" not in header  # no folder names taken for class names


def test_folders_named_as_the_models_classes_are_labels(tmp_path: Path) -> None:
    _folders(tmp_path / "imgs", ["dark", "middle", "bright"])  # sorted: bright, dark, middle -- mapped by name
    module = ImageClassifier(net=RedThirds(), preprocessing=P, class_names=["dark", "middle", "bright"])
    assert _run(tmp_path, module)["metrics"]["top1_accuracy"] == 1.0


def test_the_user_can_say_the_folders_are_labels(tmp_path: Path) -> None:
    _folders(tmp_path / "imgs", ["a_dark", "b_middle", "c_bright"])  # sorted order is the model's order
    summary = _run(tmp_path, ImageClassifier(net=RedThirds(), preprocessing=P), inputs=Inputs(labels_from_folders=True))
    assert summary["metrics"]["top1_accuracy"] == 1.0
    # Three classes: no top-5 (or top-3) accuracy, which would be 1.0 whatever the network does.
    assert set(summary["metrics"]) == {"top1_accuracy", "macro_accuracy", "num_labeled"}


def test_asked_for_labels_that_cannot_be_right_is_refused_naming_both_fixes(tmp_path: Path) -> None:
    _folders(tmp_path / "imgs", ["a", "b", "c", "d"])
    with pytest.raises(ConfigError) as info:
        _run(tmp_path, ImageClassifier(net=RedThirds(), preprocessing=P), inputs=Inputs(labels_from_folders=True))
    assert info.value.key == "data.inputs.labels_from_folders"
    assert "4 class sub-folders" in str(info.value) and "model.class_names" in str(info.value)


def test_the_rule() -> None:
    assert folder_labels_refused(["a", "b"], ["a", "b", "c"], 3, None) is None
    assert "['z'] are not among model.class_names" in (folder_labels_refused(["a", "z"], ["a", "b"], 2, None) or "")
    assert folder_labels_refused(["a", "b"], None, 2, True) is None
    with pytest.raises(ConfigError, match=r"data\.inputs\.labels_from_folders=True: the sub-folders \['z'\]"):
        folder_labels_refused(["a", "z"], ["a", "b"], 2, True)
