"""The shipped detection and segmentation configs, end to end through ``lit-infer predict`` with random local
weights (the pretrained ones cannot be downloaded here)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from strategies.strategy_helpers import REPO, run

from modules.detection_helpers import photos, seeded

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _config(name: str) -> tuple[str, dict]:
    import yaml

    config = yaml.safe_load((REPO / "configs" / "task" / name).read_text())
    return config["model"]["init_args"]["factory"], config["model"]["init_args"]["factory_kwargs"]


def _predict(name: str, weights: Path, source: Path, out: Path, extra: tuple[str, ...] | list[str] = ()) -> None:
    """``lit-infer predict --config configs/task/NAME`` with local weights, data and output, on the CPU."""
    args = ["--model.init_args.weights", str(weights), "--data.init_args.source", str(source)]
    args += ["--writer.output_dir", str(out), "--trainer.accelerator", "cpu", *extra]
    run([sys.executable, "-m", "lit_infer", "predict", "--config", f"configs/task/{name}", *args], timeout=540)


def test_detect_torchvision_yaml(tmp_path: Path) -> None:
    paths = photos(tmp_path / "photos", 3)
    factory, kwargs = _config("detect_torchvision.yaml")
    weights = seeded(factory, {**kwargs, "box_score_thresh": 0.0}, tmp_path / "w.pt")
    out = tmp_path / "out"
    _predict(
        "detect_torchvision.yaml",
        weights,
        tmp_path / "photos",
        out,
        [
            *("--model.init_args.score_threshold", "0", "--model.init_args.factory_kwargs.box_score_thresh", "0"),
            *("--model.init_args.resize", "100", "--model.init_args.max_size", "150"),
        ],
    )
    import pyarrow.parquet as pq

    rows = pq.read_table(out / "predictions.parquet").to_pylist()
    assert [r["path"] for r in rows] == [str(p) for p in paths] and all(len(r["boxes"]) > 0 for r in rows)
    assert [round(r["scale_x"] * r["width"]) for r in rows] == [133, 100, 150]  # of 160x120, 120x160, 200x130
    results = json.loads((out / "coco_results.json").read_text())
    assert len(results) == sum(len(r["boxes"]) for r in rows) and set(results[0]) == {
        "image_id",
        "category_id",
        "bbox",
        "score",
    }


def test_segment_torchvision_yaml(tmp_path: Path) -> None:
    photos(tmp_path / "photos", 3)
    factory, kwargs = _config("segment_torchvision.yaml")
    weights = seeded(factory, kwargs, tmp_path / "w.pt")
    out = tmp_path / "out"
    _predict(
        "segment_torchvision.yaml",
        weights,
        tmp_path / "photos",
        out,
        ["--model.init_args.probability_maps", "[person, car]"],
    )
    with (out / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["mask"] for r in rows] == ["masks/0.png", "masks/1.png", "masks/2.png"]
    assert all((out / r["mask"]).exists() for r in rows) and "pixels_21" in rows[0]
    assert [r["probability_person"] for r in rows] == [
        "probabilities/15/0.png",
        "probabilities/15/1.png",
        "probabilities/15/2.png",
    ]
    assert all((out / r["probability_car"]).exists() for r in rows)
