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
    peaks = []  # [(peak at 1,000, peak at 6,000)] per harness run
    for _ in range(2):
        harness.main([*argv, "--root", str(tmp_path), "--timeout", "280"])
        out = capsys.readouterr().out
        found = [
            float(m.group(2).replace(",", "")) for m in re.finditer(r"^\| ([\d,]+) \| ([\d,]+) \|", out, flags=re.M)
        ]
        assert len(found) == 2, out
        peaks.append(found)
    # The spec's 10% is checked by the harness at 2,000 vs 20,000 (BENCHMARKS.md). Over these short runs one peak of
    # the 0.1 s poller swings by up to 140 MB (a transient at start-up or teardown), so each count keeps the lower
    # peak of two runs: a leak is in both. 200 MB: a leak of 40 kB per input (a quarter of one decoded 224x224 image)
    # over the 5,000 extra inputs would exceed it.
    small, large = min(p[0] for p in peaks), min(p[1] for p in peaks)
    assert large - small <= 200, peaks
