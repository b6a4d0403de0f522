"""A run stopped part-way and run again ends byte-identical to a clean run of the same strategy: one process
(``single``, ``dp`` over two CPU replicas, ``pipeline`` over two CPU stages) and two gloo processes
(``cpu_multiprocess`` through the CLI). ``ddp``: tests/robustness/test_resume_kill.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import pytest

from lit_infer import ImageDataModule, Inputs, PipelineStrategy, PredictionWriter
from lit_infer.output.parts import CoverageError
from strategies.strategy_helpers import classifier, cli_env, run_cli, write_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

N, BATCH, UNIT = 23, 3, 8
"""Units of 8, 8 and 7 inputs: 9 batches of at most 3, none spanning two units."""


def _predict(source: Path, out: Path, weights: Path, **trainer: Any) -> None:
    module = classifier(weights)
    data = ImageDataModule(
        source, batch_size=BATCH, num_workers=0, preprocessing=module.preprocessing, inputs=Inputs(unit_size=UNIT)
    )
    trainer.setdefault("accelerator", "cpu")
    run = L.Trainer(
        callbacks=[PredictionWriter(out, fsync=False)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer,
    )
    run.predict(module, datamodule=data, return_predictions=False)


def _strategy(name: str) -> dict[str, Any]:
    if name == "dp":
        return {"strategy": "dp", "devices": 2}
    if name == "pipeline":
        return {"strategy": PipelineStrategy(devices=["cpu", "cpu"], micro_batches=2)}
    return {"devices": 1}


@pytest.mark.parametrize("name", ["single", "dp", "pipeline"])
def test_a_stopped_run_resumes_byte_identical_in_one_process(folders, weights: Path, tmp_path: Path, name: str) -> None:
    source = folders(N)
    _predict(source, tmp_path / "clean", weights, **_strategy(name))
    out = tmp_path / "out"
    with pytest.raises(CoverageError, match="units have no committed part"):  # 4 of 9 batches: nothing merged
        _predict(source, out, weights, limit_predict_batches=4, **_strategy(name))
    assert not (out / "predictions.csv").exists()
    _predict(source, out, weights, **_strategy(name))
    for file in ("predictions.csv", "summary.json"):
        assert (out / file).exists()
    assert (out / "predictions.csv").read_bytes() == (tmp_path / "clean" / "predictions.csv").read_bytes()
    # Committed before the stop: unit 0 whole (3 + 3 + 2) and the first batch of unit 1 (3).
    assert json.loads((out / "summary.json").read_text())["num_processed_this_run"] == N - (UNIT + BATCH)
    assert not (out / ".lit_infer").exists()


def test_cpu_multiprocess_stopped_then_resumed_is_byte_identical(folders, weights: Path, tmp_path: Path) -> None:
    source = tmp_path / "images"
    shutil.copytree(folders(N), source)  # its own copy: one of its inputs is touched below
    strategy = {"class_path": "lit_infer.CPUMultiprocessStrategy", "init_args": {"num_processes": 2}}
    trainer = {"strategy": strategy}
    clean = write_config(tmp_path / "clean.yaml", source, tmp_path / "clean", weights, BATCH, trainer)
    run_cli(["--config", str(clean), "--data.inputs.unit_size", str(UNIT)])
    config = write_config(tmp_path / "run.yaml", source, tmp_path / "out", weights, BATCH, trainer)
    args = ["--config", str(config), "--data.inputs.unit_size", str(UNIT), "--writer.overwrite", "false"]
    stopped = subprocess.run(
        [sys.executable, "-m", "lit_infer", "predict", *args, "--trainer.limit_predict_batches", "2"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert stopped.returncode != 0 and not (tmp_path / "out" / "predictions.csv").exists(), stopped.stderr[-2000:]
    # Each stage records what its unit read. Unit 0's first input is touched (the same bytes, a later date): that
    # unit is redone whole; the other staged units are continued where they stopped.
    stages = {p: json.loads(p.read_text()) for p in (tmp_path / "out" / ".lit_infer" / "stages").glob("u*.json")}
    assert any(p.name.startswith("u000000.") for p in stages), sorted(p.name for p in stages)
    assert all(s["version"].startswith("stat:") for s in stages.values())
    kept = sum(s["rows"] + s["failures"] for p, s in stages.items() if not p.name.startswith("u000000."))
    assert kept > 0, stages  # another unit was staged too: its rows are kept, not redone
    first = sorted(source.rglob("*.png"))[0]
    st = first.stat()
    os.utime(first, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    run_cli(args)
    out = tmp_path / "out"
    assert (out / "predictions.csv").read_bytes() == (tmp_path / "clean" / "predictions.csv").read_bytes()
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["world_size"], summary["strategy"]) == (2, "CPUMultiprocessStrategy")
    assert summary["num_processed_this_run"] == N - kept  # unit 0 whole again, the others continued
