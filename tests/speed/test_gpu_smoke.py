"""The GPU smoke script's own logic, on its CPU configurations: real CLI processes over one odd corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import gpu_smoke


@pytest.mark.slow
def test_cpu_configurations_cover_every_input_once(tmp_path: Path) -> None:
    assert gpu_smoke.main(["--out", str(tmp_path), "--device", "cpu", "--images", "6"]) == 0
    result = json.loads((tmp_path / "smoke.json").read_text())
    assert result["ok"] and [r["run"] for r in result["runs"]] == [
        "single",
        "ddp_yaml",
        "dp",
        "pipeline",
        "parts",
        "detect_cpu",
    ]
    assert all(r["errors"] == ["odd_garbage.jpg", "odd_truncated.jpg"] for r in result["runs"])
