"""Networks that return tuples, lists and dicts: ``model.output`` picks the prediction, nothing is truncated silently,
and modules that need one tensor refuse before the first batch with a line naming ``model.output``."""

from __future__ import annotations

import csv
import json
from collections import namedtuple
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from lit_infer import FeatureExtractor, ImageClassifier, ImageDataModule, PredictionModule, PredictionWriter
from lit_infer.data.decode import Decoder
from lit_infer.errors import ConfigError, RunError
from lit_infer.modules import outputs
from lit_infer.preprocessing import Preprocessing
from lit_infer.records import Batch

P = Preprocessing(crop_size=12, resize_size=12, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


class ThreeHeads(nn.Module):
    """Shaped like MTCNN's ONet: box regression (4), landmarks (10), face probabilities (2), as a tuple."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.boxes, self.landmarks, self.faces = nn.Linear(8, 4), nn.Linear(8, 10), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.boxes(h), self.landmarks(h), self.faces(h).softmax(1)


class DictHeads(ThreeHeads):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        boxes, landmarks, faces = super().forward(x)
        return {"boxes": boxes, "landmarks": landmarks, "faces": faces}


def _folder(root: Path, n: int = 7) -> list[Path]:
    rng = np.random.default_rng(3)
    root.mkdir(parents=True)
    paths = []
    for i in range(n):
        paths.append(root / f"{i}.png")
        Image.fromarray(rng.integers(0, 255, (14 + i, 16, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def _plain_loop(net: nn.Module, paths: list[Path]) -> tuple[torch.Tensor, ...]:
    """The network on each image, normalised as ToTensor + Normalize would, one at a time."""
    decoder = Decoder(P)
    mean, std = torch.tensor(P.mean).view(3, 1, 1), torch.tensor(P.std).view(3, 1, 1)
    with torch.no_grad():
        outs = [net(((decoder(str(p)).permute(2, 0, 1) / 255.0 - mean) / std).unsqueeze(0)) for p in paths]
    outs = [tuple(o.values()) if isinstance(o, dict) else o for o in outs]
    return tuple(torch.cat([o[k] for o in outs]) for k in range(3))


def _predict(module: PredictionModule, source: Path, out: Path) -> dict:
    writer = PredictionWriter(out, format="csv")
    data = ImageDataModule(source, batch_size=3, num_workers=0, preprocessing=module.preprocessing)
    trainer = L.Trainer(accelerator="cpu", logger=False, callbacks=[writer], enable_progress_bar=False)
    trainer.predict(module, datamodule=data, return_predictions=False)
    return json.loads((out / "summary.json").read_text())


def _columns(path: Path, prefix: str) -> np.ndarray:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    names = [n for n in rows[0] if n.startswith(prefix + "_") or n == prefix]
    return np.array([[float(r[n]) for n in names] for r in rows])


def test_a_tuple_output_is_written_whole(tmp_path: Path) -> None:
    paths = _folder(tmp_path / "imgs")
    net = ThreeHeads().eval()
    _predict(PredictionModule(net=net, preprocessing=P), tmp_path / "imgs", tmp_path / "out")
    expected = _plain_loop(net, paths)
    table = tmp_path / "out" / "predictions.csv"
    for k, width in enumerate((4, 10, 2)):
        got = _columns(table, f"output_{k}")
        assert got.shape == (len(paths), width)
        np.testing.assert_allclose(got, expected[k].numpy(), atol=1e-5)


def test_a_dict_output_is_written_with_its_keys_as_names(tmp_path: Path) -> None:
    paths = _folder(tmp_path / "imgs")
    net = DictHeads().eval()
    _predict(PredictionModule(net=net, preprocessing=P), tmp_path / "imgs", tmp_path / "out")
    table = tmp_path / "out" / "predictions.csv"
    np.testing.assert_allclose(_columns(table, "output_faces"), _plain_loop(net, paths)[2].numpy(), atol=1e-5)
    assert _columns(table, "output_landmarks").shape == (len(paths), 10)


def test_model_output_picks_the_classifier_logits(tmp_path: Path) -> None:
    paths = _folder(tmp_path / "imgs")
    net = DictHeads().eval()
    module = ImageClassifier(net=net, preprocessing=P, output="faces", score="logits")
    _predict(module, tmp_path / "imgs", tmp_path / "out")
    with (tmp_path / "out" / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    faces = _plain_loop(net, paths)[2]
    assert [int(r["pred"]) for r in rows] == faces.argmax(1).tolist()
    np.testing.assert_allclose([float(r["score"]) for r in rows], faces.amax(1).numpy(), atol=1e-5)


def test_a_classifier_refuses_a_tuple_before_the_first_batch(tmp_path: Path) -> None:
    _folder(tmp_path / "imgs")
    with pytest.raises(ConfigError) as info:
        _predict(ImageClassifier(net=ThreeHeads(), preprocessing=P), tmp_path / "imgs", tmp_path / "out")
    message = str(info.value)
    assert info.value.key == "model.output" and "\n" not in message
    assert "a tuple of 3 ([0] Tensor 1x4, [1] Tensor 1x10, [2] Tensor 1x2)" in message
    assert "one of [0, 1, 2]" in message
    assert not list((tmp_path / "out").glob("predictions*"))  # nothing predicted


def test_a_feature_extractor_refuses_a_dict_and_takes_the_named_element(tmp_path: Path) -> None:
    _folder(tmp_path / "imgs")
    with pytest.raises(ConfigError, match=r"model\.output=None: FeatureExtractor needs one output.*'boxes'"):
        _predict(FeatureExtractor(net=DictHeads(), preprocessing=P), tmp_path / "imgs", tmp_path / "out")
    summary = _predict(
        FeatureExtractor(net=DictHeads(), preprocessing=P, output="landmarks"), tmp_path / "imgs", tmp_path / "out2"
    )
    assert summary["num_predicted"] == 7


def test_select_names_what_exists() -> None:
    t = torch.zeros(2, 3)
    Pair = namedtuple("Pair", ["logits", "aux"])
    assert outputs.select_output((t, t + 1), -1) is not None and outputs.select_output(Pair(t, t + 1), "aux")[0, 0] == 1
    with pytest.raises(ConfigError, match=r"model\.output=3: the network returned a tuple of 2.*one of \[0, 1\]"):
        outputs.select_output((t, t), 3)
    with pytest.raises(ConfigError, match=r"model\.output='x'.*one of \['a'\]"):
        outputs.select_output({"a": t}, "x")
    with pytest.raises(ConfigError, match=r"returned Tensor 2x3.*unset"):
        outputs.select_output(t, 0)
    assert set(outputs.output_columns([t, {"k": t}])) == {"output_0", "output_1_k"}


def test_a_predict_step_may_return_a_tensor_a_dict_of_columns_or_per_image_dicts() -> None:
    batch = Batch(torch.zeros(3, 3, 4, 4, dtype=torch.uint8), torch.tensor([7, 8, 9]), ["a", "b", "c"], torch.zeros(3))
    logits = torch.arange(6.0).view(3, 2)
    tensor = outputs.as_predictions(logits, batch)
    assert list(tensor.indices) == [7, 8, 9] and tensor.paths == ["a", "b", "c"]
    np.testing.assert_array_equal(tensor.columns["output"], logits.numpy())
    columns = outputs.as_predictions({"logits": logits, "top": logits.argmax(1)}, batch).columns
    assert list(columns) == ["logits", "top"] and list(columns["top"]) == [1, 1, 1]
    items = outputs.as_predictions([{"top": 1, "score": torch.tensor(0.5)} for _ in range(3)], batch).columns
    assert list(items["top"]) == [1, 1, 1] and list(items["score"]) == [0.5, 0.5, 0.5]
    for wrong in (3.0, {"x": 1}, logits[:2], [{"top": 1}], torch.tensor(1.0)):
        with pytest.raises(RunError, match=r"for a batch of 3 images\. Return lit_infer\.Predictions"):
            outputs.as_predictions(wrong, batch)
