"""Strategies wrap the module's own step: under every strategy a subclass's ``predict_step`` runs once per batch,
its ``preprocess``, ``forward`` and ``postprocess`` run, the out-of-memory split and the metrics behave as on one
device, and the rows are the single device's. The two-process cases run the Python API (``lit_infer.predict``)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import lightning as L
import pytest
from conftest import make_images

import lit_infer
from lit_infer import DataParallelStrategy, ImageDataModule, PipelineStrategy, PredictionWriter
from strategies import hook_counting
from strategies.strategy_helpers import REPO, assert_same_rows, read_rows, run

N, BATCH = 10, 4
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("labelled")
    make_images(root, N, classes=2)  # class folders: labels, so the metrics are computed
    return root


def expected_hook_calls(batch_sizes: list[int], fits: int = 1) -> tuple[int, int]:
    """(preprocess, postprocess) calls on one device: the first part of more than ``fits`` images runs out of memory
    once, is halved, and every later batch is cut to that size up front (modules/oom.py)."""
    pre = post = 0
    max_size, oom_left = None, True
    for n in batch_sizes:
        size = n if max_size is None else min(max_size, n)
        parts = [min(size, n - start) for start in range(0, n, size)]
        while parts:
            part = parts.pop(0)
            pre += 1
            if oom_left and part > fits:
                oom_left, max_size = False, (part + 1) // 2
                parts[:0] = [max_size, part - max_size]
                continue
            post += 1
    return pre, post


def _in_process(source: Path, out: Path, weights: Path, strategy: object) -> tuple[dict, dict, int | None]:
    hook_counting.reset()
    module = hook_counting.counting_classifier(str(weights))
    data = ImageDataModule(source, batch_size=BATCH, num_workers=0, preprocessing=module.preprocessing)
    trainer = L.Trainer(
        accelerator="cpu",
        strategy=strategy,
        devices=1 if strategy == "auto" else "auto",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    summary = lit_infer.predict(module, data, trainer=trainer, writer=PredictionWriter(out, fsync=False))
    return summary, dict(hook_counting.COUNTS), module.oom_split.max_size


@pytest.fixture(scope="module")
def single(labelled: Path, weights: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], dict]:
    out = tmp_path_factory.mktemp("single") / "out"
    summary, counts, max_size = _in_process(labelled, out, weights, "auto")
    assert counts["predict_step"] == math.ceil(N / BATCH) and max_size == BATCH // 2
    assert (counts["preprocess"], counts["postprocess"]) == expected_hook_calls([4, 4, 2])
    return read_rows(out), summary["metrics"]


@pytest.mark.parametrize("name", ["dp", "pipeline"])
def test_one_process_strategies_call_the_subclass(name: str, labelled: Path, weights: Path, single, tmp_path) -> None:
    strategy = {
        "dp": DataParallelStrategy(devices=["cpu", "cpu"]),
        "pipeline": PipelineStrategy(devices=["cpu", "cpu"], micro_batches=2),
    }[name]
    summary, counts, max_size = _in_process(labelled, tmp_path / "out", weights, strategy)
    batches = math.ceil(N / BATCH)
    assert counts["predict_step"] == batches  # once per batch: the strategy calls the module's own step
    # The first batch ran out of memory once and was split in halves by the module's own splitter, as on one device.
    assert (counts["preprocess"], counts["postprocess"]) == expected_hook_calls([4, 4, 2]) == (6, 5)
    assert counts["forward"] >= counts["preprocess"]  # dp: once per replica slice; pipeline: once per part
    assert max_size == BATCH // 2
    rows, metrics = single
    assert_same_rows(read_rows(tmp_path / "out"), rows)
    assert summary["metrics"] == pytest.approx(metrics) and summary["metrics"]["num_labeled"] == N


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ddp", "cpu_multiprocess"])
def test_two_process_strategies_call_the_subclass(name: str, labelled: Path, weights: Path, single, tmp_path) -> None:
    out = tmp_path / "out"
    script = REPO / "tests" / "strategies" / "hook_counting.py"
    run([sys.executable, str(script), str(labelled), str(out), str(weights), name], timeout=200)
    # Units of 4 (hook_counting.py), leased by the ranks as they become free: which rank reads which is not fixed,
    # so each rank's calls are checked against the batches it recorded, and the two ranks together read each once.
    batches = [min(BATCH, N - start) for start in range(0, N, BATCH)]
    sizes = []
    for rank in (0, 1):
        counts = json.loads(Path(f"{out}.counts.rank{rank}").read_text())
        mine = counts["sizes"]
        sizes += mine
        assert counts.get("predict_step", 0) == len(mine)
        assert (counts.get("preprocess", 0), counts.get("postprocess", 0)) == expected_hook_calls(mine)  # split each
        assert counts.get("forward", 0) >= counts.get("preprocess", 0)
        if any(n > 1 for n in mine):
            assert counts["oom_max_size"] == BATCH // 2
    assert sorted(sizes) == sorted(batches)
    summaries = [json.loads(Path(f"{out}.summary.rank{r}").read_text()) for r in (0, 1)]
    assert summaries[0] == summaries[1]  # finalize ran on every rank and broadcast one summary
    rows, metrics = single
    assert_same_rows(read_rows(out), rows)
    assert summaries[0]["metrics"] == pytest.approx(metrics) and summaries[0]["world_size"] == 2
