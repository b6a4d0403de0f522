"""Units leased through a real TCPStore (torch.distributed's, as a process group hosts it) and committed at most once:
every unit to exactly one taker however the takers interleave, a fresh counter per attempt, a second commit of one
unit dropped in favour of the first."""

from __future__ import annotations

import json
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist
from conftest import make_images

from lit_infer.data.dataset import UnitDataset
from lit_infer.data.decode import Decoder
from lit_infer.data.leases import UnitLeases
from lit_infer.data.sources import Entries, SourceListing, page_units
from lit_infer.data.storage import Storage
from lit_infer.data.units import ITEM_STRIDE, shard_units
from lit_infer.output.manifest import finalize
from lit_infer.output.merge import merge_parts
from lit_infer.output.parts import PartWriter, staged_files
from lit_infer.records import Predictions, UnitMark
from scale.scale_helpers import P


@pytest.fixture
def store() -> dist.TCPStore:
    return dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)


def test_every_unit_to_exactly_one_taker_however_they_interleave(store: dist.TCPStore) -> None:
    taken: list[list[int]] = [[] for _ in range(6)]

    def take(k: int) -> None:
        leases = UnitLeases("127.0.0.1", store.port, "run-a", 500)  # each taker its own client, as a worker has
        while (i := leases.next()) is not None:
            taken[k].append(i)

    threads = [threading.Thread(target=take, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = sorted(i for mine in taken for i in mine)
    assert every == list(range(500))
    assert sum(1 for mine in taken if mine) > 1  # shared, not one taker's alone
    assert UnitLeases("127.0.0.1", store.port, "run-a", 500).next() is None  # all gone: the takers end


def test_a_new_attempt_leases_every_pending_unit_again(store: dist.TCPStore) -> None:
    """The lease of a dead attempt expires with it: the next attempt's run id is a fresh counter."""
    first = UnitLeases("127.0.0.1", store.port, "attempt-1", 3)
    assert [first.next(), first.next()] == [0, 1]  # leased, never committed: the attempt died here
    second = UnitLeases("127.0.0.1", store.port, "attempt-2", 3)
    assert [second.next(), second.next(), second.next(), second.next()] == [0, 1, 2, None]
    assert UnitLeases("127.0.0.1", store.port, "none-left", 0).next() is None


def test_a_pickled_lease_opens_its_own_connection(store: dist.TCPStore) -> None:
    """What a DataLoader worker receives: no socket of its rank's, a client of its own on first use."""
    leases = UnitLeases("127.0.0.1", store.port, "run-b", 4)
    assert leases.next() == 0
    copy = pickle.loads(pickle.dumps(leases))
    assert copy._store is None
    assert [copy.next(), leases.next(), copy.next(), leases.next()] == [1, 2, 3, None]


def test_two_ranks_datasets_read_every_item_once(store: dist.TCPStore, tmp_path: Path) -> None:
    """Two ranks' datasets over one leased plan, taking units in turn: together every item once, whole units."""
    paths = make_images(tmp_path, 11)
    source = SourceListing("folder", page_units("x", 11, 2), Entries.of([str(p) for p in paths]), num_items=11)
    ranks = []
    for rank in (0, 1):
        ds = _dataset(source)
        ds.split(set(), {}, rank, 2, 2, 0, UnitLeases("127.0.0.1", store.port, "run-c", len(source.units)))
        ranks.append(iter(ds))
    seen: dict[int, list[int]] = {0: [], 1: []}
    live = {0, 1}
    while live:
        for rank in sorted(live):
            batch = next(ranks[rank], None)
            if batch is None:
                live.discard(rank)
            else:
                seen[rank] += batch.indices.tolist()
    every = sorted(seen[0] + seen[1])
    assert every == sorted(u * ITEM_STRIDE + p for u in range(6) for p in range(2 if u < 5 else 1))
    assert seen[0] and seen[1]
    assert _dataset(source).expected_items() is not None  # a fixed share is counted in advance
    leased = _dataset(source)
    leased.split(set(), {}, 0, 2, 2, 0, UnitLeases("127.0.0.1", store.port, "run-d", 6))
    assert leased.expected_items() is None  # a leased share is not


def _dataset(source: SourceListing) -> UnitDataset:
    return UnitDataset(source, Decoder(P))


def _pred(indices: list[int], score: float) -> Predictions:
    n = len(indices)
    return Predictions(indices, [f"k{i % ITEM_STRIDE}" for i in indices], {"score": np.full(n, score, np.float32)})


def test_a_unit_redone_elsewhere_is_committed_once(tmp_path: Path) -> None:
    """An expired lease redone by a later attempt while the earlier holder still commits: the first record stands,
    the second committer drops its rows and its stages, and the merge has each row once."""
    out = Storage(tmp_path / "out")
    stage = str(tmp_path / "stage")
    first = PartWriter(out, stage, "csv", attempt=1, rank=2, fingerprint="fp", fsync=False)
    second = PartWriter(out, stage, "csv", attempt=2, rank=0, fingerprint="fp", fsync=False)
    second.append(_pred([0, 1], 0.5), UnitMark("a.tar", 0))  # both read the whole unit
    first.append(_pred([0, 1, 2], 0.5), UnitMark("a.tar", 0, last=True, items=3))
    # The first committed from its own stage alone; the second's (a later attempt's) is no part of that commit.
    assert [Path(p).name for p in staged_files(stage)[0]] == ["u000000.a002.r00000.bin"]
    second.append(_pred([2], 0.5), UnitMark("a.tar", 0, last=True, items=3))
    record = json.loads((tmp_path / "out" / "_parts" / "part-000000.json").read_text())
    assert (record["attempt"], record["rank"]) == (1, 2) and second.committed[-1] == record
    assert staged_files(stage) == {}  # the second's rows went with its drop
    first.append(_pred([ITEM_STRIDE], 1.0), UnitMark("b.tar", 1, last=True, items=1))
    finalize(out, shard_units(["a.tar", "b.tar"], "tar", "."), {}, "fp", "csv", {})
    rows = Path(merge_parts(out, str(tmp_path / "merged"))["table"]).read_text().splitlines()
    assert rows == ["index,path,score", "0,k0,0.5", "1,k1,0.5", "2,k2,0.5", "3,k0,1.0"]


def test_an_exclusive_write_says_who_won(tmp_path: Path) -> None:
    out = Storage(tmp_path)
    assert out.write_bytes("r.json", b"first", durable=False, exclusive=True)
    assert not out.write_bytes("r.json", b"second", durable=False, exclusive=True)
    assert not out.write_bytes("r.json", b"first", durable=False, exclusive=True)  # the same bytes: still not its
    assert (tmp_path / "r.json").read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # no temp file left behind


def test_an_exclusive_put_on_s3_says_who_won(s3_bucket: str) -> None:
    """A conditional PUT (If-None-Match) on a real S3 API (moto's server)."""
    out = Storage(f"{s3_bucket}/run")
    assert out.write_bytes("_parts/r.json", b"first", exclusive=True)
    assert not out.write_bytes("_parts/r.json", b"second", exclusive=True)
    assert out.read_bytes("_parts/r.json") == b"first"


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_slow_rank_takes_fewer_units_and_the_parts_are_one_process_s(tmp_path: Path) -> None:
    """Three gloo ranks, rank 1 three times slower (benchmarks/slow_rank.py, shorter): it commits fewer units than
    each other rank, and the part files are byte for byte those of one process, whoever did what."""
    from argparse import Namespace

    from benchmarks.slow_rank import REPO, config, make_images, parts, run

    # 0.05 s per image: the leasing lasts ~5 s, so ranks that reach it a second or two apart on a loaded machine
    # (each forks its decoding worker after the rendezvous) still split the units by speed. The one-process run's
    # sleeps change no output byte: it needs none.
    a = Namespace(seconds_per_image=0.05, factor=3.0, batch_size=8, workers=1, unit_size=8)
    images = make_images(tmp_path / "images", 240)
    slowed = run(REPO, config(tmp_path / "slow.json", images, tmp_path / "slow", a, slow_rank=1), tmp_path / "slow")
    unslept = Namespace(**{**vars(a), "seconds_per_image": 0.0})
    one = config(tmp_path / "one.json", images, tmp_path / "one", unslept, slow_rank=-1, ranks=1)
    assert run(REPO, one, tmp_path / "one")["units_per_rank"][0] == 30
    fast = min(slowed["units_per_rank"][0], slowed["units_per_rank"][2])
    assert sum(slowed["units_per_rank"]) == 30 and slowed["units_per_rank"][1] < fast, slowed
    assert parts(tmp_path / "slow") == parts(tmp_path / "one")
