"""Every figure of the report equals torchmetrics' on the same written predictions, in every output format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from lit_infer.report.build import context, write_report
from lit_infer.report.reading import read_run
from tests.report.conftest import write_run


def reference(probs: np.ndarray, target: np.ndarray, classes: int) -> dict[str, np.ndarray]:
    p, t = torch.from_numpy(probs), torch.from_numpy(target)
    kw = {"num_classes": classes, "ignore_index": -1}
    return {
        "top1": MulticlassAccuracy(top_k=1, average="micro", **kw)(p, t).numpy(),
        "top5": MulticlassAccuracy(top_k=5, average="micro", **kw)(p, t).numpy() if classes > 5 else None,
        "macro": MulticlassAccuracy(average="macro", **kw)(p, t).numpy(),
        "precision": MulticlassPrecision(average=None, **kw)(p, t).numpy(),
        "recall": MulticlassRecall(average=None, **kw)(p, t).numpy(),
        "f1": MulticlassF1Score(average=None, **kw)(p, t).numpy(),
        "confusion": MulticlassConfusionMatrix(normalize="true", **kw)(p, t).numpy(),
        "ece": MulticlassCalibrationError(n_bins=15, norm="l1", **kw)(p, t).numpy(),
    }


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "npy"])
def test_every_figure_equals_torchmetrics_on_the_written_predictions(run_dir: Path, fmt: str) -> None:
    written = write_run(run_dir, fmt=fmt, n=400, classes=7)
    want = reference(written["probs"], written["target"], 7)
    section = context(read_run(str(run_dir)))["labelled"]
    for name in ("top1", "top5", "macro"):
        assert section[name] == pytest.approx(float(want[name]), abs=1e-6), name
    assert section["top5_from"] == "the written top-5 classes"
    assert section["calibration"]["ece"] == pytest.approx(float(want["ece"]), abs=1e-6)
    assert section["calibration"]["bins"] == 15
    np.testing.assert_allclose(section["confusion"], want["confusion"], atol=1e-6)
    rows = section["classes"]
    assert [r["name"] for r in rows] == written["names"]
    for key in ("precision", "recall", "f1"):
        np.testing.assert_allclose([r[key] for r in rows], want[key], atol=1e-6, err_msg=key)
    labelled = written["target"][written["target"] >= 0]
    assert [r["support"] for r in rows] == np.bincount(labelled, minlength=7).tolist()
    assert section["num_labeled"] == len(labelled)
    html = Path(write_report(str(run_dir))).read_text(encoding="utf-8")
    assert f"{float(want['top1']):.4f}" in html and f"{float(want['ece']):.4f}" in html


def test_the_most_confident_mistakes_are_the_wrong_rows_of_highest_score(run_dir: Path) -> None:
    written = write_run(run_dir, n=200, classes=4, top_k=4, images=200)
    cols, target = written["columns"], written["target"]
    wrong = np.flatnonzero((target >= 0) & (cols["pred"] != target))
    expected = wrong[np.argsort(-cols["score"][wrong], kind="stable")][:24]
    mistakes = context(read_run(str(run_dir)))["labelled"]["mistakes"]
    assert [m["path"].rsplit("_", 1)[1] for m in mistakes] == [f"{i:05d}.png" for i in expected]
    assert all(m["src"].startswith("data:image/jpeg;base64,") for m in mistakes)
    first = expected[0]
    assert mistakes[0]["caption"] == f"true class_{target[first]}, predicted class_{cols['pred'][first]}"
    assert mistakes[0]["score"] == pytest.approx(float(cols["score"][first]))


def test_without_labels_the_predicted_classes_and_least_confident_inputs(run_dir: Path) -> None:
    written = write_run(run_dir, n=120, classes=5, labelled=False, images=120)
    ctx = context(read_run(str(run_dir)))
    assert ctx["labelled"] is None
    section = ctx["unlabelled"]
    counts = np.bincount(written["columns"]["pred"], minlength=5)
    assert section["classes_predicted"] == int((counts > 0).sum())
    least = np.argsort(written["columns"]["score"], kind="stable")[:24]
    assert [m["path"].rsplit("_", 1)[1] for m in section["least"]] == [f"{i:05d}.png" for i in least]
    assert ctx["scores_plot"].startswith("<svg")


def test_embeddings_are_projected_and_coloured_by_label(run_dir: Path) -> None:
    write_run(run_dir, fmt="npy", n=150, classes=3, embeddings=True)
    ctx = context(read_run(str(run_dir)))
    assert ctx["embeddings"]["n"] == 150 and ctx["embeddings"]["dim"] == 16
    assert "class_0" in ctx["embeddings"]["plot"] and ctx["embeddings"]["plot"].count("<circle") == 150


def test_failures_are_grouped_by_type_with_counts_and_first_paths(run_dir: Path) -> None:
    write_run(run_dir, n=50, classes=3, top_k=3, failures=10)
    failures = context(read_run(str(run_dir)))["failures"]
    assert [(f["error_type"], f["count"]) for f in failures] == [("UnidentifiedImageError", 6), ("OSError", 4)]
    assert failures[1]["paths"] == ["bad/0.jpg", "bad/3.jpg", "bad/6.jpg", "bad/9.jpg"]
    assert len(failures[0]["paths"]) == 5


def test_class_names_come_from_the_label_column_when_the_run_recorded_none(run_dir: Path) -> None:
    write_run(run_dir, fmt="jsonl", n=60, classes=3, top_k=3)
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    with open(run_dir / "predictions.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({**r, "label": ["cat", "dog", "eel"][r["pred"]]}) + "\n" for r in rows)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    del summary["fingerprint"]  # a run that recorded no fingerprint
    (run_dir / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    section = context(read_run(str(run_dir)))["labelled"]
    assert [r["name"] for r in section["classes"]] == ["cat", "dog", "eel"]


def test_embeddings_without_targets_are_coloured_by_the_class_folder_and_say_so(run_dir: Path) -> None:
    write_run(run_dir, fmt="npy", n=40, classes=2, embeddings=True)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    summary["fingerprint"]["data"]["labels"] = {"class_names": ["inputs", "other"]}  # the inputs' folder
    (run_dir / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    rows = (run_dir / "predictions.csv").read_text(encoding="utf-8").splitlines()
    (run_dir / "predictions.csv").write_text("\n".join(r.rsplit(",", 1)[0] for r in rows) + "\n", encoding="utf-8")
    embeddings = context(read_run(str(run_dir)))["embeddings"]
    assert embeddings["coloured_by"] == "class folder" and ">inputs</text>" in embeddings["plot"]
