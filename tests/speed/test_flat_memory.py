"""Flat memory: the peak memory of lit_infer's whole process tree does not grow with the number of images."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks import harness


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_number_of_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--flat-memory", "--flat-counts", "1000", "6000", "--batch-size", "32", "--workers", "2"]
    harness.main([*argv, "--root", str(tmp_path), "--timeout", "280"])
    out = capsys.readouterr().out
    peaks = [float(m.group(2).replace(",", "")) for m in re.finditer(r"^\| ([\d,]+) \| ([\d,]+) \|", out, flags=re.M)]
    assert len(peaks) == 2, out
    # The spec's 10% is checked by the harness at 2,000 vs 20,000 (BENCHMARKS.md). Over these short runs the 0.1 s
    # poller's peak swings by about 15% either way (60-70 MB), so this quicker test bounds the growth at 200 MB:
    # a leak of 40 kB per input (a quarter of one decoded 224x224 image) over the 5,000 extra inputs would exceed it.
    assert peaks[1] - peaks[0] <= 200, out
