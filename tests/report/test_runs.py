"""Real runs through the CLI: the report of the quickstart, of a 2-rank DDP run and of a parts run agrees with
torchmetrics on the predictions the run wrote, and with its summary.json."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from lit_infer.report.build import context
from lit_infer.report.reading import read_run
from tests.report.conftest import REPO, lit_infer, quickstart
from tests.report.test_figures import reference

CLASSES = ["circle", "cross", "square", "triangle"]


def written(output_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every class's score and the target of each row of the run's predictions.csv."""
    with open(output_dir / "predictions.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    scores = np.asarray([[float(r[f"scores_{c + 1}"]) for c in range(len(CLASSES))] for r in rows], np.float32)
    return scores, np.asarray([int(r["target"]) for r in rows])


def check_figures(output_dir: Path) -> dict:
    scores, target = written(output_dir)
    want = reference(scores, target, len(CLASSES))
    ctx = context(read_run(str(output_dir)))
    section = ctx["labelled"]
    summary = json.loads((output_dir / "summary.json").read_text(encoding="utf-8"))
    for name, key in (("top1", "top1_accuracy"), ("macro", "macro_accuracy")):
        assert section[name] == pytest.approx(float(want[name]), abs=1e-6)
        assert section[name] == pytest.approx(summary["metrics"][key], abs=1e-6)
    assert section["top5"] is None  # 4 classes: top-5 is 1.0 by construction and not shown
    assert section["calibration"]["ece"] == pytest.approx(float(want["ece"]), abs=1e-6)
    np.testing.assert_allclose(section["confusion"], want["confusion"], atol=1e-6)
    for key in ("precision", "recall", "f1"):
        np.testing.assert_allclose([r[key] for r in section["classes"]], want[key], atol=1e-6)
    assert [r["name"] for r in section["classes"]] == CLASSES
    return ctx


@pytest.mark.slow
def test_the_quickstart_report_agrees_with_torchmetrics_and_the_summary(quickstart_run: Path) -> None:
    ctx = check_figures(quickstart_run)
    assert [(r["rank"], r["images"]) for r in ctx["speed"]["ranks"]] == [(0, 160)]
    rows = dict(ctx["run_rows"])
    assert "--config configs/quickstart.yaml" in rows["command line"] and rows["precision"] == "32-true"
    assert "crop_size 64" in rows["preprocessing"] and rows["exact pixels"].startswith("yes")
    assert "quickstart.yaml" not in (ctx["config"] or "") and "TinyCNN" in ctx["config"]  # the resolved config
    html = (quickstart_run / "report.html").read_text(encoding="utf-8")
    assert all(name in html for name in CLASSES) and "<polyline" in html


@pytest.mark.slow
def test_a_two_rank_ddp_run_reports_both_ranks_and_the_same_figures(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    quickstart(out, "--config", "configs/strategy/ddp.yaml")
    ctx = check_figures(out)
    ranks = ctx["speed"]["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and sum(r["images"] for r in ranks) == 160
    assert "DDPStrategy, 2 process(es)" in dict(ctx["run_rows"])["strategy"]


@pytest.mark.slow
def test_lit_infer_report_rebuilds_the_report_of_a_parts_run(tmp_path: Path) -> None:
    images = sorted((REPO / "examples/quickstart/data/heldout").glob("*/*.jpg"))[::3]
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{p}\n" for p in images), encoding="utf-8")
    out = tmp_path / "parts"
    quickstart(out, "--data.init_args.source", str(listing), "--writer.layout", "parts")
    (out / "report.html").unlink()
    done = lit_infer("report", str(out))
    assert f"report: {out / 'report.html'}" in done.stderr
    lit_infer("merge", str(out), "--dest", str(tmp_path / "merged"))
    with open(tmp_path / "merged" / "predictions.csv", newline="", encoding="utf-8") as f:
        merged = [r for r in csv.DictReader(f)]
    ctx = context(read_run(str(out)))
    section = ctx["unlabelled"]  # a list has no labels
    counts = np.bincount([int(r["pred"]) for r in merged], minlength=4)
    assert section["classes_predicted"] == int((counts > 0).sum())
    scores = sorted(float(r["score"]) for r in merged)
    assert [m["score"] for m in section["least"]] == pytest.approx(scores[:24])
    assert all(m["src"] for m in section["least"])  # thumbnails from the inputs
    assert "part-000000.csv" not in " ".join(ctx["problems"])


@pytest.mark.slow
def test_an_embeddings_run_is_projected_and_coloured_by_class_folder(tmp_path: Path) -> None:
    out = tmp_path / "emb"
    lit_infer(
        "predict",
        "--config",
        "configs/quickstart.yaml",
        "--model",
        "lit_infer.FeatureExtractor",
        "--model.init_args.net",
        '{"class_path": "lit_infer.nets.TinyCNN", "init_args": {"num_classes": 4, "width": 16, "depth": 3}}',
        "--model.init_args.weights",
        "examples/quickstart/tinycnn_shapes.pt",
        "--data.init_args.inputs.labels_from_folders",
        "true",
        "--writer.format",
        "npy",
        "--writer.output_dir",
        str(out),
        "--trainer.enable_progress_bar",
        "false",
    )
    embeddings = context(read_run(str(out)))["embeddings"]
    assert embeddings["n"] == 160 and embeddings["coloured_by"] == "class folder"
    assert all(f">{name}</text>" in embeddings["plot"] for name in CLASSES)
