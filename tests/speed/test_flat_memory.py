"""Flat memory: the peak memory of lit_infer's whole process tree does not grow with the number of images."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks import harness
from benchmarks.procmem import peak_growth


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_number_of_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--flat-memory", "--flat-counts", "1000", "6000", "--batch-size", "32", "--workers", "2"]
    harness.main([*argv, "--root", str(tmp_path), "--timeout", "280"])
    out = capsys.readouterr().out
    rows = re.findall(r"^\| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \| [\d,]+ \|$", out, flags=re.M)
    assert len(rows) == 2, out
    small, large = ({"peak_mb": _mb(peak), "anonymous_mb": _mb(anonymous)} for _, peak, anonymous in rows)
    grew, measure = peak_growth(small, large)
    # The spec's 10% is checked by the harness at 2,000 vs 20,000 (BENCHMARKS.md).
    if measure == "anonymous_mb":
        # The anonymous and shared-memory PSS, where a leak grows, with glibc's mmap threshold held (the harness's
        # FIXED_MALLOC): 477-483 MB at 1,000 and 486-492 MB at 6,000 here, +8 to +15 MB. 40 MB: a leak of 8 kB per
        # input (5% of one decoded 224x224 image) over the 5,000 extra inputs exceeds it.
        assert grew <= 40, out
    else:  # a kernel without Pss_Anon: the whole PSS, which swings by up to ~170 MB as other processes come and go
        assert grew <= 250, out


def _mb(text: str) -> float:
    return float(text.replace(",", ""))
