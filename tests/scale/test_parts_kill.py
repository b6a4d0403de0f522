"""kill -9 in the middle of a 2-rank ``layout: parts`` run, then the same command: every image once, no committed
unit done again, a staged unit resumed where it stopped, and the merged output byte-identical to an uninterrupted
run's (batches are slices of their unit, whatever is left to do)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import free_port, make_images
from robustness.robust_helpers import DDP, classifier_config, kill_group, run_cli, save_weights, start_cli

from lit_infer.cli import main
from lit_infer.output.parts import done_positions
from scale.scale_helpers import write_shards

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
N = 48


def _records(out: Path) -> dict[str, dict]:
    folder = out / "_parts"
    records = {}
    for path in folder.glob("part-*.json") if folder.exists() else []:
        try:
            records[path.name] = json.loads(path.read_text())
        except ValueError:
            continue  # being written: its rename is atomic, the next poll reads it
    return records


def test_sigkill_ddp_parts_run_then_rerun(tmp_path: Path) -> None:
    images = make_images(tmp_path / "imgs", N, size=(20, 16))
    write_shards(images, tmp_path / "shards", [12, 12, 12, 12])
    weights = save_weights(tmp_path / "w.pt")
    clean = tmp_path / "clean"
    config = classifier_config(
        tmp_path / "clean.json", tmp_path / "shards", clean, weights, unit_size=None, layout="parts", fsync=False
    )
    rc, log = run_cli(["--config", str(config), *DDP], tmp_path / "clean.log", port=free_port())
    assert rc == 0, log

    out = tmp_path / "out"
    config = classifier_config(
        tmp_path / "run.json",
        tmp_path / "shards",
        out,
        weights,
        delay_s=0.2,
        unit_size=None,
        layout="parts",
        fsync=False,
    )
    args = ["--config", str(config), *DDP]
    proc = start_cli(args, tmp_path / "killed.log", port=free_port())
    try:
        deadline = time.monotonic() + 120
        while not (_records(out) and done_positions(str(out / ".lit_infer" / "stages"))):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "killed.log").read_text()
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        kill_group(proc)
    before = _records(out)
    staged = sum(len(p) for p in done_positions(str(out / ".lit_infer" / "stages")).values())
    assert 0 < len(before) < 4 and not (out / "_SUCCESS").exists()

    rc, log = run_cli(args, tmp_path / "resume.log", port=free_port())
    assert rc == 0, log
    assert "resuming" in log
    after = _records(out)
    assert all(after[name] == record for name, record in before.items())  # no committed unit done again
    assert {r["attempt"] for n, r in after.items() if n not in before} == {2}
    summary = json.loads((out / "summary.json").read_text())
    done_before = sum(r["rows"] for r in before.values()) + staged
    assert summary["num_processed_this_run"] == N - done_before  # staged batches were not predicted again

    main(["merge", str(clean)])
    main(["merge", str(out)])
    assert (out / "predictions.csv").read_bytes() == (clean / "predictions.csv").read_bytes()
    assert len((out / "predictions.csv").read_text().splitlines()) == N + 1
