"""PredictionWriter in a real Trainer.predict: every format, order, failures, summary, resume, refusal, defaults."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from conftest import make_images

from lit_infer import ImageClassifier, ImageDataModule, PredictionWriter, Preprocessing, RunError
from lit_infer.errors import ConfigError
from lit_infer.lifecycle.plan import WORK_DIR
from lit_infer.nets import TinyCNN
from lit_infer.records import Predictions

P = Preprocessing(crop_size=16, resize_size=16)


def _module(**kwargs: Any) -> ImageClassifier:
    torch.manual_seed(0)
    return ImageClassifier(net=TinyCNN(num_classes=3, width=4, depth=1), preprocessing=P, **kwargs)


def _predict(
    source: Path, writer: PredictionWriter, module: ImageClassifier | None = None, callbacks: list | None = None
) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        callbacks=[writer, *(callbacks or [])],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    data = ImageDataModule(source, batch_size=4, num_workers=0, preprocessing=P)
    trainer.predict(module or _module(top_k=2), datamodule=data, return_predictions=False)
    return trainer


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    paths = make_images(tmp_path / "imgs", 14)
    paths[5].write_bytes(b"\x89PNG broken")
    paths[9].write_bytes(b"")
    return tmp_path / "imgs"


def _table(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    if path.suffix == ".parquet":
        pq = pytest.importorskip("pyarrow.parquet")
        d = pq.read_table(path).to_pydict()
        return [dict(zip(d, values, strict=True)) for values in zip(*d.values(), strict=True)]
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "npy"])
def test_every_input_once_in_order_with_failures_apart(corpus: Path, tmp_path: Path, fmt: str) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / "out"
    module = _module(top_k=2, save_scores=True)
    writer = PredictionWriter(out, format=fmt)  # type: ignore[arg-type]
    _predict(corpus, writer, module)
    table = out / f"predictions.{ {'npy': 'csv'}.get(fmt, fmt) }"
    rows = _table(table)
    good = [i for i in range(14) if i not in (5, 9)]
    assert [int(r["index"]) for r in rows] == good
    assert [os.path.basename(r["path"]) for r in rows] == [f"img_{i:05d}.png" for i in good]
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [e["index"] for e in errors] == [5, 9]
    assert all(e["path"].endswith(f"img_{e['index']:05d}.png") and e["error_type"] for e in errors)
    if fmt == "npy":
        scores = np.load(out / "scores.npy")
        assert scores.shape == (12, 3)
        np.testing.assert_allclose(scores.sum(1), 1.0, rtol=1e-5)
    else:
        assert {"pred", "score"} <= set(rows[0])

    summary = json.loads((out / "summary.json").read_text())
    for key in ("num_predicted", "num_failed", "images_per_second", "wall_seconds", "metrics"):
        assert key in summary
    assert (summary["num_items"], summary["num_predicted"], summary["num_failed"]) == (14, 12, 2)
    assert summary["images_per_second"] > 0
    # The whole command (this pytest process, start-up included) is longer than the predict loop: a lower rate.
    assert summary["command_seconds"] > summary["wall_seconds"]
    assert summary["images_per_second"] < summary["num_processed_this_run"] / summary["wall_seconds"]
    assert summary["exact_pixels"] is True
    assert writer.summary == summary
    assert not (out / WORK_DIR).exists()  # shards removed after the merge
    assert not [n for n in os.listdir(out) if ".tmp-" in n]


def test_default_output_dir_is_outputs_and_the_source_name(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "cwd"
    run_dir.mkdir()
    monkeypatch.chdir(run_dir)
    writer = PredictionWriter()
    with caplog.at_level("INFO"):
        _predict(image_folder, writer, _module(top_k=2, class_names=["class_0", "class_1", "class_2"]))
    out = run_dir / "outputs" / "images"
    assert writer.output_dir == os.path.join("outputs", "images")
    assert len(_table(out / "predictions.csv")) == 23
    assert os.path.join("outputs", "images", "predictions.csv") in caplog.text  # says where
    # Class folders named as the model's classes give labels: metrics present.
    assert set(json.loads((out / "summary.json").read_text())["metrics"]) >= {"top1_accuracy", "macro_accuracy"}


def test_a_finished_run_is_not_redone_and_a_different_one_is_refused(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _predict(corpus, PredictionWriter(out))
    first = (out / "predictions.csv").read_bytes()
    mtime = (out / "predictions.csv").stat().st_mtime_ns

    again = PredictionWriter(out)
    _predict(corpus, again)
    assert (out / "predictions.csv").stat().st_mtime_ns == mtime
    assert again.summary["num_predicted"] == 12

    with pytest.raises(RunError, match="overwrite"):
        _predict(corpus, PredictionWriter(out), _module(top_k=1))  # other output options
    assert (out / "predictions.csv").read_bytes() == first

    (out / "my_notes.txt").write_text("mine")
    _predict(corpus, PredictionWriter(out, overwrite=True), _module(top_k=1))
    assert (out / "my_notes.txt").read_text() == "mine"  # overwrite removes only what a run wrote
    assert "topk_pred_1" not in _table(out / "predictions.csv")[0]


class _Crash(L.Callback):
    """Dies after a given batch has been committed, as a killed job would (but in-process)."""

    def __init__(self, after: int) -> None:
        self.after = after

    def on_predict_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, *args: Any
    ) -> None:
        if batch_idx + 1 >= self.after:  # the writer, an earlier callback, has committed this batch already
            raise KeyboardInterrupt


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_same_output(corpus: Path, tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    _predict(corpus, PredictionWriter(clean))
    out = tmp_path / "out"
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        _predict(corpus, PredictionWriter(out), callbacks=[_Crash(after=2)])
    assert not (out / "predictions.csv").exists()
    assert (out / WORK_DIR).is_dir()
    resumed = PredictionWriter(out)
    _predict(corpus, resumed)
    assert (out / "predictions.csv").read_bytes() == (clean / "predictions.csv").read_bytes()
    assert (out / "errors.jsonl").read_bytes() == (clean / "errors.jsonl").read_bytes()
    assert resumed.summary["num_processed_this_run"] == 14 - 8  # two batches of 4 were already committed


class _CountCommits(L.Callback):
    """Records, at the end of each batch, how many inputs the writer has committed."""

    def __init__(self, writer: PredictionWriter) -> None:
        self.writer, self.committed = writer, []

    def on_predict_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.committed.append(self.writer._seen)


class _InFlight(Predictions):
    """Predictions as a GPU hands them over (none here): in flight until their columns are read."""

    def __init__(self, pred: Predictions) -> None:
        super().__init__(pred.indices, pred.paths, pred.columns, pred.failures)
        self.read = False

    @property
    def in_flight(self) -> bool:
        return not self.read

    @property
    def columns(self) -> dict[str, np.ndarray]:
        self.read = True
        return super().columns


class _GPULikeClassifier(ImageClassifier):
    def postprocess(self, outputs: Any, batch: Any) -> Predictions:
        return _InFlight(super().postprocess(outputs, batch))


@pytest.mark.slow
def test_one_batch_in_flight_and_the_last_committed_at_the_end(corpus: Path, tmp_path: Path) -> None:
    # Outputs in flight from a GPU: batch k is committed once batch k + 1 has been handed over (the GPU runs k + 1
    # while k travels to the host), the last one before the merge. Outputs on the host are committed at once.
    for name, module, expected in (("out1", _module(top_k=2), [4, 8, 12, 14]), ("out0", _gpu_like(), [0, 4, 8, 12])):
        writer = PredictionWriter(tmp_path / name)
        counter = _CountCommits(writer)
        _predict(corpus, writer, module, callbacks=[counter])
        assert counter.committed == expected  # 14 inputs in batches of 4
        assert (writer.summary["num_predicted"], writer.summary["num_failed"]) == (12, 2)
    clean, in_flight = (tmp_path / name / "predictions.csv" for name in ("out1", "out0"))
    assert clean.read_bytes() == in_flight.read_bytes()


def test_a_stop_commits_the_batch_in_flight(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        _predict(corpus, PredictionWriter(out), _gpu_like(), callbacks=[_Crash(after=2)])
    resumed = PredictionWriter(out)
    _predict(corpus, resumed, _gpu_like())
    assert resumed.summary["num_processed_this_run"] == 14 - 8  # both batches committed, the second on the way out


def _gpu_like() -> ImageClassifier:
    torch.manual_seed(0)
    return _GPULikeClassifier(net=TinyCNN(num_classes=3, width=4, depth=1), preprocessing=P, top_k=2)


def test_bad_writer_options_name_their_key() -> None:
    with pytest.raises(ConfigError) as info:
        PredictionWriter(format="xlsx")  # type: ignore[arg-type]
    assert info.value.key == "writer.format"
    with pytest.raises(ConfigError) as info:
        PredictionWriter(filename="sub/dir")
    assert info.value.key == "writer.filename"


def test_a_step_that_does_not_return_predictions_is_refused(corpus: Path, tmp_path: Path) -> None:
    class Raw(ImageClassifier):
        def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
            return {"x": 1}

    with pytest.raises(RunError, match=r"returned a dict of 1 .* Return lit_infer\.Predictions, a tensor"):
        _predict(corpus, PredictionWriter(tmp_path / "o"), Raw(net=TinyCNN(3, 4, 1), preprocessing=P))


def test_a_batch_where_every_image_failed_still_counts(tmp_path: Path) -> None:
    paths = make_images(tmp_path / "imgs", 10)
    for p in paths[4:8]:  # the whole second batch of 4
        p.write_bytes(b"")
    out = tmp_path / "out"
    writer = PredictionWriter(out, format="jsonl")
    _predict(tmp_path / "imgs", writer)
    rows = _table(out / "predictions.jsonl")
    assert [r["index"] for r in rows] == [0, 1, 2, 3, 8, 9]
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [e["index"] for e in errors] == [4, 5, 6, 7]
    assert (writer.summary["num_predicted"], writer.summary["num_failed"]) == (6, 4)
