"""Ragged outputs: a network that returns one dict per image with a varying number of boxes (torchvision's
detection contract), written without padding under every strategy and layout, and equal to the network itself."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch

from lit_infer import ImageDataModule, PipelineStrategy, PredictionModule, PredictionWriter
from lit_infer.data.decode import Decoder
from lit_infer.errors import ConfigError
from lit_infer.preprocessing import Preprocessing
from modules.ragged_nets import TinyDetector, TinyRaggedList

PREPROCESSING = {"crop_size": 12, "resize_size": 12, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
P = Preprocessing(**PREPROCESSING)
KEYS = ("boxes", "scores", "labels")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import make_images

    root = tmp_path_factory.mktemp("ragged")
    make_images(root, 13, size=(14, 12))
    return root


def _direct(net: torch.nn.Module, folder: Path) -> list[Any]:
    """The network on each image alone, normalised as ToTensor + Normalize would."""
    decoder = Decoder(P)
    mean, std = torch.tensor(P.mean).view(3, 1, 1), torch.tensor(P.std).view(3, 1, 1)
    with torch.no_grad():
        return [
            net(((decoder(str(p)).permute(2, 0, 1) / 255.0 - mean) / std).unsqueeze(0))[0]
            for p in sorted(folder.glob("*.png"))
        ]


def _predict(out: Path, images: Path, fmt: str = "jsonl", net: Any = None, layout: str = "single", **trainer: Any):
    module = PredictionModule(net=net if net is not None else TinyDetector(), preprocessing=P)
    writer = PredictionWriter(out, format=fmt, fsync=False, layout=layout)
    data = ImageDataModule(images, batch_size=4, num_workers=0, preprocessing=P)
    trainer.setdefault("accelerator", "cpu")
    L.Trainer(
        logger=False, callbacks=[writer], enable_progress_bar=False, enable_model_summary=False, **trainer
    ).predict(module, datamodule=data, return_predictions=False)
    return writer


def _rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: json.loads(v) if k.startswith("output_") else v for k, v in r.items()} for r in rows]


def _assert_same(rows: list[dict[str, Any]], expected: list[dict[str, torch.Tensor]]) -> None:
    assert [int(r["index"]) for r in rows] == list(range(len(expected)))
    for row, ref in zip(rows, expected, strict=True):
        for key in KEYS:
            got = np.asarray(row[f"output_{key}"], dtype=np.float64).reshape(ref[key].shape)
            np.testing.assert_allclose(got, ref[key].double().numpy(), atol=1e-5)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv"])
def test_a_detector_shaped_net_is_written_whole_without_padding(images: Path, tmp_path: Path, fmt: str) -> None:
    expected = _direct(TinyDetector().eval(), images)
    counts = [len(e["boxes"]) for e in expected]
    assert len(set(counts)) > 2 and 0 in counts  # varying, empty ones included: the test means something
    _predict(tmp_path / "out", images, fmt)
    rows = _rows(tmp_path / "out" / f"predictions.{fmt}")
    _assert_same(rows, expected)
    assert [len(r["output_boxes"]) for r in rows] == counts  # no padding
    if fmt == "parquet":
        import pyarrow.parquet as pq

        schema = pq.read_schema(tmp_path / "out" / "predictions.parquet")
        boxes, labels = schema.field("output_boxes").type, schema.field("output_labels").type
        assert (boxes.value_type.list_size, str(boxes.value_type.value_type)) == (4, "float")
        assert str(labels.value_type) == "int64"


def test_npy_refuses_ragged_columns_at_the_first_batch(images: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _predict(tmp_path / "out", images, "npy")
    assert info.value.key == "writer.format" and "\n" not in str(info.value)
    assert "'output_boxes' has a varying number of values per image" in str(info.value)


def test_a_list_of_tensors_per_image(images: Path, tmp_path: Path) -> None:
    expected = _direct(TinyRaggedList().eval(), images)
    _predict(tmp_path / "out", images, "jsonl", net=TinyRaggedList())
    rows = _rows(tmp_path / "out" / "predictions.jsonl")
    for row, ref in zip(rows, expected, strict=True):
        np.testing.assert_allclose(row["output"], ref.numpy(), atol=1e-5)


def test_dp_pipeline_and_parts_give_the_same_rows(images: Path, tmp_path: Path) -> None:
    expected = _direct(TinyDetector().eval(), images)
    _predict(tmp_path / "dp", images, strategy="dp", devices=3)
    _assert_same(_rows(tmp_path / "dp" / "predictions.jsonl"), expected)
    _predict(tmp_path / "pipe", images, strategy=PipelineStrategy(devices=["cpu", "cpu"], micro_batches=3))
    _assert_same(_rows(tmp_path / "pipe" / "predictions.jsonl"), expected)
    listing = tmp_path / "list.txt"  # read in units: a range of a list per part
    listing.write_text("".join(f"{p}\n" for p in sorted(images.glob("*.png"))))
    for fmt in ("jsonl", "parquet"):
        out = tmp_path / f"parts_{fmt}"
        _predict(out, listing, fmt, layout="parts")
        manifest = json.loads((out / "_manifest.json").read_text())
        rows = [r for part in manifest["parts"] for r in _rows(out / part["files"]["table"])]
        _assert_same(sorted(rows, key=lambda r: r["index"]), expected)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "strategy",
    [
        {"strategy": "ddp", "devices": 2},
        {"strategy": {"class_path": "lit_infer.CPUMultiprocessStrategy", "init_args": {"num_processes": 2}}},
    ],
    ids=["ddp", "cpu_multiprocess"],
)
def test_ddp_over_gloo_and_cpu_multiprocess_match_the_network(images: Path, tmp_path: Path, strategy: dict) -> None:
    from strategies.strategy_helpers import run

    config = {
        "model": {
            "class_path": "lit_infer.PredictionModule",
            "init_args": {"net": {"class_path": "modules.ragged_nets.TinyDetector"}, "preprocessing": PREPROCESSING},
        },
        "data": {"init_args": {"source": str(images), "batch_size": 3, "num_workers": 0}},
        "writer": {"output_dir": str(tmp_path / "out"), "format": "parquet", "fsync": False},
        "trainer": {"accelerator": "cpu", **strategy},
    }
    path = tmp_path / "ddp.yaml"
    path.write_text(json.dumps(config))
    run([sys.executable, "-m", "lit_infer", "predict", "--config", str(path)], timeout=240)
    _assert_same(_rows(tmp_path / "out" / "predictions.parquet"), _direct(TinyDetector().eval(), images))
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["world_size"] == 2


def test_whole_images_of_different_sizes_are_refused_by_a_module_that_stacks(images: Path, tmp_path: Path) -> None:
    whole = Preprocessing(crop_mode="none", mean=P.mean, std=P.std)
    module = PredictionModule(net=TinyDetector(), preprocessing=whole)
    writer = PredictionWriter(tmp_path / "out", format="jsonl", fsync=False)
    data = ImageDataModule(images, batch_size=4, num_workers=0, preprocessing=whole)
    with pytest.raises(ConfigError) as info:
        L.Trainer(accelerator="cpu", logger=False, callbacks=[writer], enable_progress_bar=False).predict(
            module, datamodule=data, return_predictions=False
        )
    assert info.value.key == "model.preprocessing.crop_mode" and "differ in size" in str(info.value)


def test_a_stopped_run_resumes_its_ragged_shards(images: Path, tmp_path: Path) -> None:
    from lit_infer.output.parts import CoverageError

    expected = _direct(TinyDetector().eval(), images)
    with pytest.raises(CoverageError):  # one batch of 4 committed, nothing merged
        _predict(tmp_path / "out", images, "parquet", limit_predict_batches=1)
    writer = _predict(tmp_path / "out", images, "parquet")
    assert writer.summary["num_processed_this_run"] == 9
    _assert_same(_rows(tmp_path / "out" / "predictions.parquet"), expected)
