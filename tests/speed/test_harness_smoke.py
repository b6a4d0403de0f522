"""The benchmark harness runs end to end on a tiny folder: every variant, ratios, CPU time and memory columns."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks import harness
from benchmarks.procmem import PeakMemory, tree

VARIANTS = [
    "seed_loop",
    "naive_lightning",
    "lit_infer",
    "lit_infer_fast",
    "lit_infer_cached",
    "decode_only",
    "model_only",
]


@pytest.mark.slow
def test_harness_prints_every_variant_with_ratios(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--model", "small", "--images", "12", "--size", "96x72", "--batch-size", "8", "--workers", "1"]
    argv += ["--repeats", "1", "--variants", ",".join(VARIANTS), "--root", str(tmp_path), "--timeout", "240"]
    harness.main(argv)
    out = capsys.readouterr().out
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| (\w+) \| .*$", out, flags=re.M)}
    assert set(VARIANTS) <= set(rows)
    for name in VARIANTS:
        cells = [c.strip() for c in rows[name].strip("|").split("|")]
        images, ips, peak = int(cells[1]), float(cells[2].replace(",", "")), float(cells[6].replace(",", ""))
        assert images == (16 if name == "model_only" else 12)  # the model ceiling runs whole batches
        assert ips > 0 and peak > 50  # a Python process with torch loaded is never under 50 MB
    assert rows["seed_loop"].split("|")[4].strip() == "1.00x"
    assert rows["naive_lightning"].split("|")[5].strip() == "1.00x"
    # The generated JPEGs are reused by the next run, not made again.
    assert (tmp_path / "jpeg-96x72-12" / ".complete").exists()
    assert len(list((tmp_path / "jpeg-96x72-12").glob("*.jpg"))) == 12


@pytest.mark.slow
def test_peak_memory_sees_the_children(tmp_path: Path) -> None:
    import subprocess
    import sys

    # A parent that starts a child holding ~200 MB: the tree's peak must include the child.
    code = (
        "import subprocess, sys, time; "
        "c = subprocess.Popen([sys.executable, '-c', 'b = bytearray(200 << 20); import time; time.sleep(1.5)']); "
        "c.wait()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    with PeakMemory(proc.pid, interval=0.05) as mem:
        proc.wait(timeout=60)
    assert mem.peak > 200 << 20
    assert mem.peak_anonymous > 200 << 20  # a bytearray: anonymous memory
    assert tree(proc.pid) == [proc.pid]  # ended and reaped: the walk tolerates vanished processes
