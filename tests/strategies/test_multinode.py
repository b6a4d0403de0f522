"""Two ``torchrun --nnodes 2`` launches on loopback, one CPU process each: output identical to one process."""

from __future__ import annotations

from pathlib import Path

import pytest

from strategies.strategy_helpers import (
    TORCHRUN,
    assert_same_rows,
    launch_two_nodes,
    predict_in_process,
    read_rows,
    write_config,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed next to python")
@pytest.mark.parametrize("shared_filesystem", [True, False])
def test_two_torchrun_nodes_match_one_process(folders, weights: Path, tmp_path: Path, shared_filesystem: bool) -> None:
    source = folders(23)
    expected = predict_in_process(source, tmp_path / "single", weights, 4, devices=1)
    out = tmp_path / "nodes"
    trainer = {"strategy": "ddp", "num_nodes": 2, "devices": 1}
    config = write_config(tmp_path / "nodes.yaml", source, out, weights, 4, trainer)
    scratch = [tmp_path / "node0", tmp_path / "node1"] if not shared_filesystem else None
    extra = [] if shared_filesystem else ["--writer.shared_filesystem", "false", "--writer.work_dir", "$NODE_SCRATCH/w"]
    launch_two_nodes(config, extra, scratch)
    assert_same_rows(read_rows(out), expected)
    if scratch is not None:
        # Each node's shard lived only on its own disk; rank 0 gathered node 1's over the process group, and both
        # local work folders are gone after the merge.
        assert not (out / ".lit_infer").exists()
        assert [list(p.iterdir()) for p in scratch] == [[], []]
