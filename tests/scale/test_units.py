"""Units of work without a Trainer: listing, the split between ranks and workers, the readers, parts and merge."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import make_images
from PIL import Image

from lit_infer.data.dataset import UnitDataset
from lit_infer.data.decode import Decoder
from lit_infer.data.shard_readers import UnitReadError, tar_items
from lit_infer.data.sources import SourceListing
from lit_infer.data.storage import Storage
from lit_infer.data.units import (
    ITEM_STRIDE,
    Unit,
    assign,
    expand_braces,
    find_files,
    list_units,
    read_range,
    shard_units,
)
from lit_infer.output.manifest import finalize
from lit_infer.output.merge import merge_parts
from lit_infer.output.parts import CoverageError, PartWriter, done_positions
from lit_infer.records import Predictions, UnitMark
from scale.scale_helpers import P, write_parquet, write_shards


def test_brace_patterns_keep_padding() -> None:
    assert expand_braces("s/{000008..000011}.tar") == [f"s/{i:06d}.tar" for i in range(8, 12)]
    assert expand_braces("a{1..2}/b{0..1}.tar") == ["a1/b0.tar", "a1/b1.tar", "a2/b0.tar", "a2/b1.tar"]


@pytest.mark.parametrize("units, world, workers", [(3, 2, 2), (1, 2, 3), (10, 3, 2), (7, 1, 0), (0, 2, 2)])
def test_every_unit_goes_to_exactly_one_slot(units: int, world: int, workers: int) -> None:
    """Also with fewer units than ranks x workers (webdataset#188): the spare slots get none and simply end."""
    plan = [Unit(f"u{i}", "range", "x", i) for i in range(units)]
    taken = [
        u.ordinal for r in range(world) for w in range(max(1, workers)) for u in assign(plan, r, world, w, workers)
    ]
    assert sorted(taken) == list(range(units))
    if units >= world:  # ranks are served before a second worker of one rank
        assert all(assign(plan, r, world, 0, workers) for r in range(world))


def test_list_ranges_read_only_their_bytes(tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("# header\n" + "".join(f"img_{i}.png\n" + ("\n" if i % 4 == 0 else "") for i in range(11)))
    units = list_units(str(listing), 4)
    assert [(u.start, u.stop) for u in units] == [(0, 4), (4, 8), (8, 11)]
    assert [e for u in units for e in read_range(u)] == [f"img_{i}.png" for i in range(11)]
    listing.write_text("changed.png\n")
    with pytest.raises(OSError, match="changed since"):
        read_range(units[0])


def test_tar_reader_groups_labels_and_reports_truncation(tmp_path: Path) -> None:
    images = make_images(tmp_path / "imgs", 5)
    (shard,) = write_shards(images, tmp_path / "shards", [5])
    items = list(tar_items(str(shard)))
    assert [i.key.rsplit("/", 1)[1] for i in items] == [f"sample{i:06d}.png" for i in range(5)]
    assert [i.label for i in items] == [0, 1, 2, 0, 1]
    assert items[2].data == images[2].read_bytes()
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    got = []
    with pytest.raises(UnitReadError, match="after"):
        got.extend(tar_items(str(shard)))
    assert 0 < len(got) < 5 and [i.position for i in got] == list(range(len(got)))


def _dataset(units: list, batch_size: int = 2, done: dict | None = None) -> UnitDataset:
    dataset = UnitDataset(SourceListing(units[0].kind, units), Decoder(P))
    dataset.split(set(), done or {}, 0, 1, batch_size)
    return dataset


def test_batches_are_slices_of_their_unit_and_resume_skips_done_slices(tmp_path: Path) -> None:
    images = make_images(tmp_path / "imgs", 7)
    shards = write_shards(images, tmp_path / "shards", [5, 2])
    units = shard_units([str(s) for s in shards], "tar", str(tmp_path / "shards"))
    batches = list(_dataset(units))
    assert [b.indices.tolist() for b in batches] == [[0, 1], [2, 3], [4], [ITEM_STRIDE, ITEM_STRIDE + 1]]
    assert [(b.unit.last, b.unit.items) for b in batches] == [(False, 0), (False, 0), (True, 5), (True, 2)]
    # Positions 0-3 committed before a kill: the rerun yields slice [4] only, the same slice as before.
    resumed = list(_dataset(units, done={"000000.tar": np.arange(4)}))
    assert [b.indices.tolist() for b in resumed] == [[4], [ITEM_STRIDE, ITEM_STRIDE + 1]]
    # Every position done but the part not committed: an empty last batch still closes the unit.
    closed = list(_dataset(units[:1], done={"000000.tar": np.arange(5)}))
    assert [(len(b), b.unit.last, b.unit.items) for b in closed] == [(0, True, 5)]


def test_corrupt_member_is_its_own_error_record(tmp_path: Path) -> None:
    shard = tmp_path / "s.tar"
    good = io.BytesIO()
    Image.new("RGB", (20, 18), (10, 200, 30)).save(good, format="PNG")
    with tarfile.open(shard, "w") as tar:
        for name, data in [("a.png", good.getvalue()), ("b.png", b"\x89PNG broken"), ("c.png", good.getvalue())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (batch,) = list(_dataset(shard_units([str(shard)], "tar", str(tmp_path)), batch_size=3))
    assert batch.indices.tolist() == [0, 2]  # never a neighbour's pixels in b's place
    assert [(f.index, f.path.rsplit("/", 1)[1]) for f in batch.failures] == [(1, "b.png")]


def test_parquet_rows_from_hf_struct(tmp_path: Path) -> None:
    images = make_images(tmp_path / "imgs", 5)
    table = write_parquet(images, tmp_path / "t.parquet", row_group_size=2)
    batches = list(_dataset(shard_units([str(table)], "parquet", str(tmp_path)), batch_size=4))
    assert [b.indices.tolist() for b in batches] == [[0, 1, 2, 3], [4]]
    assert batches[0].paths[1].endswith("t.parquet#img_00001.png")
    assert batches[0].labels.tolist() == [0, 1, 2, 0]


def _pred(indices: list[int], score: float) -> Predictions:
    n = len(indices)
    return Predictions(indices, [f"k{i % ITEM_STRIDE}" for i in indices], {"score": np.full(n, score, np.float32)})


def test_part_commit_proves_positions_and_merge_renumbers(tmp_path: Path) -> None:
    out = Storage(tmp_path / "out")
    units = shard_units(["a.tar", "b.tar"], "tar", ".")
    writer = PartWriter(out, str(tmp_path / "stage"), "csv", attempt=1, rank=0, fingerprint="fp", fsync=False)
    writer.append(_pred([0, 1], 0.5), UnitMark("a.tar", 0))
    assert done_positions(str(tmp_path / "stage")) == {0: pytest.approx(np.array([0, 1]))}
    writer.append(_pred([2], 0.25), UnitMark("a.tar", 0, last=True, items=3))
    writer.append(_pred([ITEM_STRIDE + 1, ITEM_STRIDE], 1.0), UnitMark("b.tar", 1, last=True, items=2))
    with pytest.raises(CoverageError, match="1 positions missing"):
        writer.append(_pred([2 * ITEM_STRIDE], 1.0), UnitMark("c.tar", 2, last=True, items=2))
    manifest = finalize(out, units, {"x": 1}, "fp", "csv", {})
    assert [p["rows"] for p in manifest["parts"]] == [3, 2]
    assert (tmp_path / "out" / "_SUCCESS").exists()
    files = merge_parts(out, str(tmp_path / "merged"))
    lines = Path(files["table"]).read_text().splitlines()
    assert lines == ["index,path,score", "0,k0,0.5", "1,k1,0.5", "2,k2,0.25", "3,k0,1.0", "4,k1,1.0"]
    assert json.loads((tmp_path / "out" / "_parts" / "part-000001.json").read_text())["key_range"] == ["k0", "k1"]


def test_finalize_refuses_a_missing_unit(tmp_path: Path) -> None:
    out = Storage(tmp_path / "out")
    units = shard_units(["a.tar", "b.tar"], "tar", ".")
    writer = PartWriter(out, str(tmp_path / "stage"), "csv", attempt=1, rank=0, fingerprint="fp", fsync=False)
    writer.append(_pred([0], 0.5), UnitMark("a.tar", 0, last=True, items=1))
    with pytest.raises(CoverageError, match="1 units have no committed part"):
        finalize(out, units, {}, "fp", "csv", {})
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_find_files_glob_and_folder(tmp_path: Path) -> None:
    for name in ("b.tar", "a.tar", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [Path(f).name for f in find_files(str(tmp_path), (".tar",))] == ["a.tar", "b.tar"]
    assert [Path(f).name for f in find_files(str(tmp_path / "*.tar"), (".tar",))] == ["a.tar", "b.tar"]


def test_list_ranges_split_on_newline_only_and_drop_a_bom(tmp_path: Path) -> None:
    """As a whole-list source reads it: a BOM is no part of the first entry, U+2028 in a name is no line break."""
    listing = tmp_path / "list.txt"
    names = ["a.png", "odd\u2028name.png", "c.png"]
    listing.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(names).encode() + b"\r\n")
    units = list_units(str(listing), 2)
    assert [e for u in units for e in read_range(u)] == names
