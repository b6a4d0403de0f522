"""The issue's traceback cases, each one line naming the key and the fix, exit 2."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from conftest import make_images

from lit_infer.cli import main


def _lying_safetensors(path: Path) -> Path:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1000000], "data_offsets": [0, 4000000]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)  # says 4 MB of data, holds 16 bytes
    return path


CASES = {
    "crop_size 0": (["--model.init_args.preprocessing.crop_size", "0"], "model.preprocessing.crop_size=0"),
    "crop larger than resize": (
        ["--model.init_args.preprocessing.crop_size", "64", "--model.init_args.preprocessing.resize_size", "32"],
        "model.preprocessing.resize_size=32",
    ),
    "std 0": (["--model.init_args.preprocessing.std", "[0, 1, 1]"], "model.preprocessing.std="),
    "lying safetensors": (["--model.init_args.weights", "LIE"], "model.weights="),
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("safetensors")
    make_images(tmp_path / "images", 1)
    extra, expected = CASES[case]
    extra = [str(_lying_safetensors(tmp_path / "w.safetensors")) if a == "LIE" else a for a in extra]
    args = ["predict", "--model.net", "lit_infer.nets.TinyCNN", "--data.source", str(tmp_path / "images")]
    with pytest.raises(SystemExit) as exc:
        main([*args, "--writer.output_dir", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
