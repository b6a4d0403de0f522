"""Each rank lists a folder source itself while it reads: ranks that found different files (the folder changed
meanwhile) are refused alike before anything is merged. Two real gloo processes compare their listings."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import free_port

from lit_infer.data.listing import Listed
from lit_infer.data.pages import FolderPages
from lit_infer.data.sources import SourceListing
from lit_infer.errors import RankZeroRefused, RunError
from lit_infer.lifecycle.finalize import check_ranks_listed_alike


def _rank(rank: int, port: int, counts: list[int], out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    names = [f"x{i}.jpg" for i in range(counts[rank])]
    pages = FolderPages("/photos", iter([Listed(names, [f"/photos/{n}" for n in names])]), 4).start()
    trainer = SimpleNamespace(world_size=2, is_global_zero=rank == 0)
    try:
        check_ranks_listed_alike(trainer, SourceListing("folder", [], pages=pages))  # type: ignore[arg-type]
        said = {"refused": None}
    except RunError as exc:
        said = {"refused": type(exc).__name__, "message": str(exc)}
    finally:
        pages.close()
        dist.destroy_process_group()
    Path(out, f"rank{rank}.json").write_text(json.dumps(said))


@pytest.mark.slow
@pytest.mark.parametrize("counts", [[6, 6], [6, 7]])
def test_ranks_that_listed_other_files_are_refused_before_the_merge(tmp_path: Path, counts: list[int]) -> None:
    mp.start_processes(_rank, args=(free_port(), counts, str(tmp_path)), nprocs=2, start_method="spawn")
    said = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    if counts[0] == counts[1]:
        assert said == [{"refused": None}, {"refused": None}]
        return
    assert [s["refused"] for s in said] == [RunError.__name__, RankZeroRefused.__name__]  # rank 0 alone prints it
    assert said[0]["message"].startswith("data.source='/photos' changed while the run listed it")
    assert "\n" not in said[0]["message"]
