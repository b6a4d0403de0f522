"""A crash between publishing the merged file and recording the run as complete leaves it resumable: the parts stay
until the summary records the run, the rerun merges them again and ends with the same files; no final file ever
exists half-written under its name. And a rerun never mixes in predictions of other parameters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import make_images, quiet_trainer

from lit_infer.callbacks import PredictionWriter
from lit_infer.data import ImageDataModule
from lit_infer.data.storage import Storage
from lit_infer.errors import RunError
from lit_infer.modules import ImageClassifier
from lit_infer.nets import TinyCNN
from lit_infer.preprocessing import Preprocessing

P = Preprocessing(crop_size=16, resize_size=16)


def _run(images: Path, out: Path, seed: int = 0) -> None:
    torch.manual_seed(seed)
    trainer = quiet_trainer(PredictionWriter(out))
    data = ImageDataModule(images, batch_size=4, num_workers=0, preprocessing=P)
    trainer.predict(ImageClassifier(net=TinyCNN(4, 4, 2)), datamodule=data, return_predictions=False)


def test_crash_before_the_summary_is_written_then_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_images(tmp_path / "images", 10)
    _run(tmp_path / "images", tmp_path / "clean")

    write_bytes = Storage.write_bytes

    def crash_on_summary(self: Storage, name: str, data: bytes, durable: bool = True, exclusive: bool = False) -> bool:
        if name == "summary.json":
            raise OSError("disk gone (injected)")
        return write_bytes(self, name, data, durable, exclusive)

    monkeypatch.setattr(Storage, "write_bytes", crash_on_summary)
    with pytest.raises(RunError, match=r"writer\.output_dir=.*injected.*committed so far is kept"):
        _run(tmp_path / "images", tmp_path / "out")
    out = tmp_path / "out"
    assert (out / "predictions.csv").exists() and not (out / "summary.json").exists()
    assert list((out / ".lit_infer" / "parts" / "_parts").glob("part-*.json"))  # kept until the summary records it
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name]  # nothing half-written left behind

    monkeypatch.undo()
    # What a kill -9 between write and rename leaves: temp files, never the final names. The rerun clears them.
    (out / ".summary.json.tmp-999999").write_text("{half")
    (out / ".lit_infer" / "parts" / "_parts" / ".part-000000.json.tmp-999999").write_text("{")
    (out / ".notes.tmp-mine").write_text("the user's")
    _run(tmp_path / "images", out)
    assert sorted(p.name for p in out.iterdir() if ".tmp-" in p.name) == [".notes.tmp-mine"]
    assert (out / "predictions.csv").read_bytes() == (tmp_path / "clean" / "predictions.csv").read_bytes()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_predicted"] == 10 and summary["num_processed_this_run"] == 0
    assert not (out / ".lit_infer").exists()


def test_a_network_without_weights_file_is_fingerprinted_by_its_parameters(tmp_path: Path) -> None:
    make_images(tmp_path / "images", 6)
    _run(tmp_path / "images", tmp_path / "out", seed=0)
    _run(tmp_path / "images", tmp_path / "out", seed=0)  # the same parameters: complete, nothing to do
    with pytest.raises(RunError, match=r"different run.*model"):
        _run(tmp_path / "images", tmp_path / "out", seed=1)  # other parameters would mix other predictions in
