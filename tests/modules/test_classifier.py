"""ImageClassifier: scores, top-k, class names from everywhere, and metrics that are right on a known case."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from lit_infer import ImageClassifier, ImageDataModule, Inputs, PredictionWriter, Preprocessing
from lit_infer.errors import ConfigError
from lit_infer.records import Batch

CENTERS = (0.1, 0.25, 0.4, 0.55, 0.7, 0.85)
# Mean 0, std 1: the network sees pixel / 255, so a solid image's red value decides its class below.
P = Preprocessing(crop_size=8, resize_size=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


class RedNet(nn.Module):
    """Class scores from the mean red value: the nearest centre wins, the farthest comes last. No ties."""

    def __init__(self, centers: tuple[float, ...] = CENTERS) -> None:
        super().__init__()
        self.register_buffer("centers", torch.tensor(centers))
        self.head = nn.Linear(1, len(centers))  # gives FeatureExtractor/metrics a last Linear; unused in forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = x[:, 0].mean(dim=(1, 2)).unsqueeze(1)
        return -100.0 * (red - self.centers) ** 2


def _solid(path: Path, red: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (10, 12), (round(red * 255), 30, 60)).save(path)


# Folder class -> the centre each of its images sits on (what RedNet will predict for it).
KNOWN_CASE = {0: [0, 1.13, 1.13, 1.13], 1: [1, 1], 2: [2, 2], 3: [3, 3], 4: [4, 4], 5: [5, 0]}


def _known_folder(root: Path) -> tuple[list[int], list[float]]:
    targets, reds = [], []
    for cls, where in KNOWN_CASE.items():
        for j, w in enumerate(where):
            # 1.13: between centres 1 and 2, nearer 1, so the true class 0 ranks third (top-5 hit, top-1 miss).
            # +0.01: off centre, so no two other centres are equally near and the top-k order is defined.
            red = CENTERS[int(w)] + (w - int(w)) * (CENTERS[1] - CENTERS[0]) + 0.01
            _solid(root / f"class_{cls}" / f"{j}.png", red)
            targets.append(cls)
            reds.append(round(red * 255) / 255)
    return targets, reds


def _run(module: ImageClassifier, source: Path, out: Path, fmt: str = "csv", **dm: object) -> PredictionWriter:
    writer = PredictionWriter(out, format=fmt)  # type: ignore[arg-type]
    data = ImageDataModule(source, batch_size=5, num_workers=0, preprocessing=module.preprocessing, **dm)
    trainer = L.Trainer(
        accelerator="cpu", logger=False, callbacks=[writer], enable_progress_bar=False, enable_model_summary=False
    )
    trainer.predict(module, datamodule=data, return_predictions=False)
    return writer


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_metrics_on_a_known_case(tmp_path: Path) -> None:
    targets, reds = _known_folder(tmp_path / "imgs")
    module = ImageClassifier(net=RedNet(), preprocessing=P, top_k=3)
    writer = _run(module, tmp_path / "imgs", tmp_path / "out", inputs=Inputs(labels_from_folders=True))

    # Independent expectation from the same scores.
    logits = -100.0 * (np.array(reds)[:, None] - np.array(CENTERS)) ** 2
    ranks = np.argsort(-logits, axis=1)
    t = np.array(targets)
    top1 = (ranks[:, 0] == t).mean()
    top5 = np.mean([t[i] in ranks[i, :5] for i in range(len(t))])
    recalls = [(ranks[t == c, 0] == c).mean() for c in range(6)]
    assert (top1, top5, np.mean(recalls)) == pytest.approx((10 / 14, 13 / 14, 4.75 / 6))

    metrics = writer.summary["metrics"]
    assert metrics["top1_accuracy"] == pytest.approx(top1, abs=1e-6)
    assert metrics["top5_accuracy"] == pytest.approx(top5, abs=1e-6)
    assert metrics["macro_accuracy"] == pytest.approx(np.mean(recalls), abs=1e-6)
    assert metrics["num_labeled"] == 14
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["metrics"] == metrics

    rows = _rows(tmp_path / "out" / "predictions.csv")
    assert [int(r["index"]) for r in rows] == list(range(14))
    assert [int(r["pred"]) for r in rows] == ranks[:, 0].tolist()
    assert [int(r["target"]) for r in rows] == targets
    assert [r["label"] for r in rows] == [f"class_{c}" for c in ranks[:, 0]]  # names from the class folders
    assert [[int(r[f"topk_pred_{k}"]) for k in (1, 2, 3)] for r in rows] == ranks[:, :3].tolist()
    assert [r["topk_label_2"] for r in rows] == [f"class_{c}" for c in ranks[:, 1]]
    probs = torch.tensor(logits).softmax(1).numpy()
    np.testing.assert_allclose([float(r["score"]) for r in rows], probs.max(1), rtol=1e-4, atol=1e-6)


def test_model_class_names_map_folder_labels_by_name(tmp_path: Path) -> None:
    # The data has folders class_0 and class_1; the model knows more classes, in another order.
    _solid(tmp_path / "imgs" / "class_0" / "a.png", CENTERS[2])  # predicted as model class 2 = "class_0": right
    _solid(tmp_path / "imgs" / "class_1" / "b.png", CENTERS[2])  # wrong
    _solid(tmp_path / "imgs" / "class_1" / "c.png", CENTERS[4])  # model class 4 = "class_1": right
    names = ["bird", "cat", "class_0", "dog", "class_1", "eel"]
    writer = _run(
        ImageClassifier(net=RedNet(), preprocessing=P, class_names=names), tmp_path / "imgs", tmp_path / "out"
    )
    assert writer.summary["metrics"]["top1_accuracy"] == pytest.approx(2 / 3)
    rows = _rows(tmp_path / "out" / "predictions.csv")
    assert [r["label"] for r in rows] == ["class_0", "class_0", "class_1"]
    # The target column uses the model's class indices, so it compares with pred.
    assert [int(r["target"]) for r in rows] == [2, 4, 4]
    assert [int(r["pred"]) for r in rows] == [2, 2, 4]


def test_model_class_names_lacking_a_data_class_are_refused(tmp_path: Path) -> None:
    _solid(tmp_path / "imgs" / "class_0" / "a.png", 0.1)
    _solid(tmp_path / "imgs" / "zebra" / "b.png", 0.1)
    module = ImageClassifier(net=RedNet(), preprocessing=P, class_names=["class_0", "a", "b", "c", "d", "e"])
    with pytest.raises(ConfigError) as info:
        _run(module, tmp_path / "imgs", tmp_path / "out", inputs=Inputs(labels_from_folders=True))
    assert info.value.key == "data.inputs.labels_from_folders" and "zebra" in str(info.value)
    assert "model.class_names" in str(info.value)
    # Not asked: the folders are not (all) the model's classes, so no labels and no metrics, and no refusal.
    writer = _run(module, tmp_path / "imgs", tmp_path / "out2")
    assert writer.summary["metrics"] == {}


def test_table_labels_outside_the_models_classes_are_refused_before_the_run(tmp_path: Path) -> None:
    _solid(tmp_path / "a.png", 0.1)
    _solid(tmp_path / "b.png", 0.25)
    (tmp_path / "list.csv").write_text("path,label\na.png,0\nb.png,6\n")  # RedNet has classes 0..5
    with pytest.raises(ConfigError) as info:
        _run(ImageClassifier(net=RedNet(), preprocessing=P), tmp_path / "list.csv", tmp_path / "out")
    assert info.value.key == "data.source" and "[6]" in str(info.value) and "0..5" in str(info.value)


def test_no_labels_no_metrics_and_no_target_column(tmp_path: Path) -> None:
    for i, c in enumerate(CENTERS):
        _solid(tmp_path / "imgs" / f"{i}.png", c)
    writer = _run(ImageClassifier(net=RedNet(), preprocessing=P, score="logits"), tmp_path / "imgs", tmp_path / "out")
    assert writer.summary["metrics"] == {}
    rows = _rows(tmp_path / "out" / "predictions.csv")
    assert list(rows[0]) == ["index", "path", "pred", "score"]
    assert [int(r["pred"]) for r in rows] == list(range(6))
    # Logits: the top score is minus 100 times the squared distance to the nearest centre (~0 here).
    assert all(-0.01 < float(r["score"]) <= 0 for r in rows)


def _batch(reds: list[float]) -> Batch:
    images = torch.stack([torch.full((3, 8, 8), round(r * 255), dtype=torch.uint8) for r in reds])
    return Batch(images, torch.arange(len(reds)), [f"{i}.png" for i in range(len(reds))], torch.full((len(reds),), -1))


def test_probs_logits_top_k_and_names_without_a_trainer(tmp_path: Path) -> None:
    batch = _batch([0.1, 0.7, 0.42])  # no two centres equally near
    probs = ImageClassifier(net=RedNet(), preprocessing=P, top_k=2, class_names=list("abcdef")).predict_step(batch, 0)
    logits = ImageClassifier(net=RedNet(), preprocessing=P, score="logits", save_scores=True).predict_step(batch, 0)
    assert probs.columns["pred"].tolist() == [0, 4, 2]
    assert probs.columns["label"].tolist() == ["a", "e", "c"]
    assert probs.columns["topk_label"].tolist() == [["a", "b"], ["e", "d"], ["c", "d"]]
    assert probs.columns["topk_score"].shape == (3, 2)
    assert np.all(probs.columns["score"] <= 1) and np.all(probs.columns["score"] > 0.2)
    scores = logits.columns["scores"]
    assert scores.shape == (3, 6)
    np.testing.assert_allclose(logits.columns["score"], scores.max(1))
    np.testing.assert_allclose(torch.tensor(scores).softmax(1).max(1).values.numpy(), probs.columns["score"], rtol=1e-5)


def test_class_names_from_a_file(tmp_path: Path) -> None:
    names = tmp_path / "classes.txt"
    names.write_text("alpha\n\nbeta\n gamma \nd\ne\nzeta\n", encoding="utf-8")
    module = ImageClassifier(net=RedNet(), preprocessing=P, class_names=str(names))
    assert module.class_names == ["alpha", "beta", "gamma", "d", "e", "zeta"]
    pred = module.predict_step(_batch([0.85, 0.25]), 0)
    assert pred.columns["label"].tolist() == ["zeta", "beta"]


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"top_k": 0}, "model.top_k"),
        ({"score": "softmax"}, "model.score"),
        ({"output": "logits"}, "model.output"),  # the old spelling of model.score: the message says so
        ({"class_names": "/no/such/classes.txt"}, "model.class_names"),
    ],
)
def test_bad_options_name_their_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        ImageClassifier(net=RedNet(), preprocessing=P, **kwargs)
    assert info.value.key == key


def test_a_non_classifier_output_is_a_clear_error() -> None:
    module = ImageClassifier(net=nn.Conv2d(3, 4, 1), preprocessing=P)
    with pytest.raises(ConfigError, match=r"model\.output=None: ImageClassifier needs N x classes logits.*Tensor 1x4x"):
        module.predict_step(_batch([0.1]), 0)


@pytest.mark.parametrize("names", [["dog", "cat", "bird"], [f"c{i}" for i in range(10)], "file"])
def test_class_names_not_one_per_output_are_refused_with_both_numbers(tmp_path: Path, names: Any) -> None:
    # 3 names for 5 outputs labelled images dog, cat, bird, 4, 3; 10 for 5 named classes the network does not have.
    _solid(tmp_path / "imgs" / "a.png", CENTERS[4])
    if names == "file":
        (tmp_path / "classes.txt").write_text("dog\ncat\nbird\n")
        names = str(tmp_path / "classes.txt")
    with pytest.raises(ConfigError) as info:  # more names than the last Linear's outputs: refused as it is built
        _run(
            ImageClassifier(net=RedNet(CENTERS[:5]), preprocessing=P, class_names=names),
            tmp_path / "imgs",
            tmp_path / "out",
        )
    count = 10 if isinstance(names, list) and len(names) == 10 else 3
    assert info.value.key == "model.class_names" and "\n" not in str(info.value)
    assert f"has {count} names for a network with 5 outputs" in str(info.value)
    assert (str(tmp_path / "classes.txt") in str(info.value)) == isinstance(names, str)
    assert not (tmp_path / "out" / "predictions.csv").exists()


def test_top_k_above_the_classes_is_lowered_and_said_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for i in range(12):  # three batches of 5
        _solid(tmp_path / "imgs" / f"{i:02d}.png", CENTERS[i % 6])
    with caplog.at_level(logging.INFO):
        _run(ImageClassifier(net=RedNet(), preprocessing=P, top_k=10), tmp_path / "imgs", tmp_path / "out")
    said = [r.getMessage() for r in caplog.records if "model.top_k" in r.getMessage()]
    assert said == ["lit-infer: model.top_k=10 lowered to 6: the network has 6 classes"]
    rows = _rows(tmp_path / "out" / "predictions.csv")
    assert len(rows) == 12 and {f"topk_pred_{k}" for k in range(1, 7)} <= set(rows[0])
    assert "topk_pred_7" not in rows[0]
