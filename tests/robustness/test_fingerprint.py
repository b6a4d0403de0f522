"""Resume only what is the same run: the fingerprint covers the inputs' names and every setting that changes a
prediction (each unit's files are checked by their versions: test_changed_inputs.py), and a refusal says what
changed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import make_images

from lit_infer.cli import main
from lit_infer.lifecycle.fingerprint import differences, run_fingerprint
from lit_infer.nets import TinyCNN


def test_differences_name_each_changed_setting() -> None:
    class Part:
        def __init__(self, fp: dict) -> None:
            self.fp = fp

        def fingerprint(self) -> dict:
            return self.fp

    a = run_fingerprint(Part({"top_k": 1}), Part({"decoding": {"max_pixels": 10}}), 0, {"format": "csv"}, {"p": "32"})
    b = run_fingerprint(Part({"top_k": 2}), Part({"decoding": {"max_pixels": 20}}), 0, {"format": "csv"}, {"p": "16"})
    assert differences(a, b) == [
        "data.decoding.max_pixels: 10 -> 20",
        "model.top_k: 1 -> 2",
        "trainer.p: '32' -> '16'",
    ]


def _args(tmp_path: Path, *extra: str) -> list[str]:
    weights = tmp_path / "w.pt"
    if not weights.exists():
        torch.manual_seed(0)
        torch.save(TinyCNN(num_classes=2).state_dict(), weights)
    config = {
        "model": {
            "class_path": "lit_infer.ImageClassifier",
            "init_args": {
                "net": {"class_path": "lit_infer.nets.TinyCNN", "init_args": {"num_classes": 2}},
                "weights": str(weights),
                "top_k": 1,
                "preprocessing": {"crop_size": 16, "resize_size": 16},
            },
        },
        "data": {
            "class_path": "lit_infer.ImageDataModule",
            "init_args": {"source": str(tmp_path / "images"), "num_workers": 0, "batch_size": 4},
        },
        "writer": {"output_dir": str(tmp_path / "out")},
        "trainer": {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False},
    }
    (tmp_path / "c.yaml").write_text(json.dumps(config))
    return ["predict", "--config", str(tmp_path / "c.yaml"), *extra]


def _refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(_args(tmp_path, *extra))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.slow
def test_a_rerun_with_anything_changed_is_refused_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = make_images(tmp_path / "images" / "a", 3) + make_images(tmp_path / "images" / "b", 3, seed=1)
    main(_args(tmp_path))
    table = (tmp_path / "out" / "predictions.csv").read_bytes()
    main(_args(tmp_path))  # the same run: already complete, nothing changes
    assert (tmp_path / "out" / "predictions.csv").read_bytes() == table

    assert "data.decoding.max_pixels: 89478485 -> 1000000" in _refused(
        tmp_path, capsys, "--data.init_args.decoding.max_pixels", "1000000"
    )
    assert "trainer.precision: '32-true' -> 'bf16-mixed'" in _refused(
        tmp_path, capsys, "--trainer.precision", "bf16-mixed"
    )
    err = _refused(tmp_path, capsys, "--data.init_args.inputs.labels_from_folders", "false")
    assert "data.labels" in err
    assert "writer.overwrite" in err and str(tmp_path / "out") in err

    st = os.stat(paths[4])
    paths[4].write_bytes(paths[5].read_bytes())  # another image under the same name
    os.utime(paths[4], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    err = _refused(tmp_path, capsys)  # the finished run's parts are gone: its summary keeps what its units read
    assert err.startswith("lit-infer: error: data.source: the inputs of items-") and "changed since the run in" in err
    assert f"{str(paths[4])!r}" in err and "size and modification time" in err
    assert (tmp_path / "out" / "predictions.csv").read_bytes() == table  # nothing of the earlier run was touched
