"""layout: parts on one process: tar shards and Parquet tables (written with tarfile/pyarrow) -> one part per unit,
a manifest and _SUCCESS; ``lit-infer merge`` gives the file a single-file run over the same images writes."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest
from conftest import make_images

from lit_infer.cli import main
from lit_infer.data import Inputs
from lit_infer.errors import RunError
from lit_infer.lifecycle.budget import TooManyErrors
from lit_infer.output.parts import CoverageError
from scale.scale_helpers import csv_rows, manifest, predict, write_parquet, write_shards

N = 23


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_images(tmp_path_factory.mktemp("imgs"), N)


@pytest.fixture(scope="module")
def reference(images: list[Path], tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    """The same images as a plain folder through today's single-file writer: the predictions to agree with."""
    out = tmp_path_factory.mktemp("ref") / "out"
    predict(str(images[0].parent), str(out), layout="single")
    return csv_rows(out / "predictions.csv")


def _same_predictions(rows: list[dict[str, str]], reference: list[dict[str, str]]) -> None:
    assert [r["index"] for r in rows] == [str(i) for i in range(N)]
    strip = [{k: v for k, v in r.items() if k != "path"} for r in rows]
    assert strip == [{k: v for k, v in r.items() if k != "path"} for r in reference]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_tar_shards_to_parts_then_merge(images: list[Path], reference: list, tmp_path: Path, fmt: str) -> None:
    write_shards(images, tmp_path / "shards", [8, 8, 7])
    out = tmp_path / "out"
    predict(str(tmp_path / "shards" / "{000000..000002}.tar"), str(out), fmt=fmt, workers=2)
    m = manifest(out)
    assert (out / "_SUCCESS").exists()
    assert [p["unit"] for p in m["parts"]] == ["000000.tar", "000001.tar", "000002.tar"]
    assert [p["rows"] for p in m["parts"]] == [8, 8, 7]
    assert m["num_predicted"] == N and m["num_failed"] == 0
    assert m["parts"][1]["key_range"][0].endswith("000001.tar/sample000008.png")
    for part in m["parts"]:
        assert (out / part["files"]["table"]).exists()
    assert not (out / ".lit_infer").exists()
    main(["merge", str(out), "--dest", str(tmp_path / "merged")])
    merged = tmp_path / "merged" / f"predictions.{fmt}"
    if fmt == "csv":
        _same_predictions(csv_rows(merged), reference)
        single = tmp_path / "single"
        predict(str(tmp_path / "shards"), str(single), layout="single")
        assert (single / "predictions.csv").read_bytes() == merged.read_bytes()
        assert not (single / ".lit_infer").exists()


def test_parquet_table_hf_struct_and_binary(images: list[Path], reference: list, tmp_path: Path) -> None:
    write_parquet(images[:12], tmp_path / "table" / "a.parquet", hf_struct=True)
    write_parquet(images[12:], tmp_path / "table" / "b.parquet", hf_struct=False)
    out = tmp_path / "out"
    predict(str(tmp_path / "table"), str(out))
    assert [p["rows"] for p in manifest(out)["parts"]] == [12, N - 12]
    main(["merge", str(out)])
    rows = csv_rows(out / "predictions.csv")
    _same_predictions(rows, reference)
    assert rows[0]["path"].endswith("a.parquet#img_00000.png")  # the struct's own path names the row
    assert rows[12]["path"].endswith("b.parquet#0")


def test_list_in_ranges_keeps_line_numbers(images: list[Path], reference: list, tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("# images\n" + "\n".join(str(p) for p in images) + "\n")
    out = tmp_path / "out"
    predict(
        str(listing), str(out), inputs=Inputs(unit_size=8), workers=2
    )  # ranges of 2 batches: the reference's batches
    m = manifest(out)
    assert [p["index_range"] for p in m["parts"]] == [[0, 7], [8, 15], [16, 22]]
    rows = [r for p in m["parts"] for r in csv_rows(out / p["files"]["table"])]
    _same_predictions(rows, reference)
    assert [r["path"] for r in rows] == [r["path"] for r in reference]


def test_corrupt_member_and_truncated_shard(images: list[Path], tmp_path: Path) -> None:
    shards = write_shards(images, tmp_path / "shards", [8, 8, 7], labels=False)
    with tarfile.open(shards[0], "a") as tar:  # a member that is not an image: its own error record
        info = tarfile.TarInfo("zz_broken.png")
        info.size = 9
        tar.addfile(info, __import__("io").BytesIO(b"\x89PNG nope"))
    data = shards[2].read_bytes()
    shards[2].write_bytes(data[: len(data) // 2])  # cut mid-shard: the items before the cut keep their rows
    out = tmp_path / "out"
    with pytest.raises(TooManyErrors, match="2 of"):
        predict(str(tmp_path / "shards"), str(out), max_errors=0.05)
    m = manifest(out)
    assert not (out / "_SUCCESS").exists()
    assert m["num_failed"] == 2
    assert [u["unit"] for u in m["failed_units"]] == ["000002.tar"]
    broken = [json.loads(line) for line in (out / m["parts"][0]["files"]["errors"]).read_text().splitlines()]
    assert broken[0]["path"].endswith("zz_broken.png") and broken[0]["index"] == 8
    cut = m["parts"][2]
    assert 0 < cut["rows"] < 7 and not cut["complete"]

    write_shards(images, tmp_path / "shards2", [8, 8, 7], labels=False)
    shutil.copy(tmp_path / "shards2" / "000002.tar", shards[2])  # repaired: a rerun retries only that unit
    before = {p: os.stat(out / p).st_mtime_ns for p in ("part-000000.csv", "part-000001.csv")}
    predict(str(tmp_path / "shards"), str(out), max_errors=0.05)
    m = manifest(out)
    assert (out / "_SUCCESS").exists() and m["failed_units"] == [] and m["num_predicted"] == N
    assert before == {p: os.stat(out / p).st_mtime_ns for p in before}


def test_a_relative_list_merged_equals_the_single_file_run(
    images: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Relative entries of a list given by a relative path: the path column is the single run's, not made absolute.
    shutil.copytree(images[0].parent, tmp_path / "imgs")
    (tmp_path / "list.txt").write_text("".join(f"imgs/{p.name}\n" for p in images))
    monkeypatch.chdir(tmp_path)
    predict("list.txt", "single", layout="single")
    predict("list.txt", "parts", inputs=Inputs(unit_size=8))
    main(["merge", "parts", "--dest", "merged"])
    single = (tmp_path / "single" / "predictions.csv").read_bytes()
    assert b"\n0,imgs/img_00000.png," in single or b"\n0,./imgs/img_00000.png," in single
    assert (tmp_path / "merged" / "predictions.csv").read_bytes() == single


def test_single_layout_over_budget_writes_its_outputs_then_fails(images: list[Path], tmp_path: Path) -> None:
    # As a run of shards: the merged file and errors.jsonl, then the error budget (not "no _SUCCESS").
    shards = write_shards(images[:10], tmp_path / "shards", [5, 5], labels=False)
    with tarfile.open(shards[0], "a") as tar:
        info = tarfile.TarInfo("zz_broken.png")
        info.size = 9
        tar.addfile(info, __import__("io").BytesIO(b"\x89PNG nope"))
    out = tmp_path / "out"
    with pytest.raises(TooManyErrors, match=r"errors\.jsonl"):
        predict(str(tmp_path / "shards"), str(out), layout="single", max_errors=0.05)
    assert len(csv_rows(out / "predictions.csv")) == 10
    assert len((out / "errors.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize("kind", ["folder", "list", "csv"])
@pytest.mark.parametrize("fmt", ["csv", "npy"])
def test_a_merged_parts_run_is_the_single_layout_run_byte_for_byte(
    images: list[Path], tmp_path: Path, kind: str, fmt: str
) -> None:
    # One commit protocol: the single layout is the parts merged at the end, so lit-infer merge of a parts run over a
    # folder, list or table gives the same bytes, failures included (a broken image in the middle).
    folder = tmp_path / "imgs"
    shutil.copytree(images[0].parent, folder)
    (folder / "img_00011.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    names = sorted(p.name for p in folder.iterdir())
    source = {"folder": folder, "list": tmp_path / "list.txt", "csv": tmp_path / "table.csv"}[kind]
    if kind == "list":
        source.write_text("".join(f"imgs/{n}\n" for n in names))
    elif kind == "csv":
        source.write_text("path\n" + "".join(f"imgs/{n}\n" for n in names))
    options = {
        "fmt": fmt,
        "inputs": Inputs(unit_size=8),
        "batch_size": 3,
    }  # 3 units; batches of 3 never span two of them
    predict(str(source), str(tmp_path / "single"), layout="single", **options)
    predict(str(source), str(tmp_path / "parts"), layout="parts", **options)
    assert len(manifest(tmp_path / "parts")["parts"]) == 3
    main(["merge", str(tmp_path / "parts"), "--dest", str(tmp_path / "merged")])
    arrays = sorted(p.name for p in (tmp_path / "single").glob("*.npy"))
    assert bool(arrays) == (fmt == "npy")
    for name in ["predictions.csv", "errors.jsonl", *arrays]:
        assert (tmp_path / "merged" / name).read_bytes() == (tmp_path / "single" / name).read_bytes(), name
    assert [json.loads(x)["index"] for x in (tmp_path / "single" / "errors.jsonl").read_text().splitlines()] == [11]
    assert not (tmp_path / "single" / ".lit_infer").exists()


@pytest.mark.parametrize("kind", ["tar", "parquet"])
def test_a_shard_rewritten_after_its_unit_was_committed_refuses_the_resume(
    images: list[Path], tmp_path: Path, kind: str
) -> None:
    # Shards are named by path in the run's fingerprint (one that failed and was repaired is retried by the same
    # run), so what each committed unit read is recorded with its part and checked when the run resumes.
    folder = tmp_path / "shards"
    if kind == "tar":
        shards = write_shards(images[:8], folder, [4, 4])
    else:
        shards = [write_parquet(images[i : i + 4], folder / f"{i // 4:06d}.parquet") for i in (0, 4)]
    out = str(tmp_path / "out")
    with pytest.raises(CoverageError):  # the first unit committed (one batch of 4), the second not read
        predict(str(folder), out, layout="single", limit_batches=1)
    records = [json.loads(p.read_text()) for p in (tmp_path / "out" / ".lit_infer" / "parts" / "_parts").glob("*.json")]
    assert [r["unit"] for r in records] == [shards[0].name] and records[0]["version"].startswith(
        f"{shards[0].stat().st_size}:"
    )
    # The shard not yet read may change: the resume reads it as it is now.
    if kind == "tar":
        write_shards(images[4:8][::-1], tmp_path / "again", [4])[0].replace(shards[1])
    else:
        write_parquet(images[4:8][::-1], shards[1])
    # The committed one may not: its rows came from other bytes.
    original, mtime = shards[0].read_bytes(), shards[0].stat().st_mtime_ns
    shards[0].write_bytes(shards[1].read_bytes())
    os.utime(shards[0], ns=(mtime, mtime + 10**9))
    with pytest.raises(RunError) as info:
        predict(str(folder), out, layout="single")
    message = str(info.value)
    assert message.startswith(f"data.source: the shard {str(shards[0])!r} changed since an earlier attempt") and (
        "--writer.overwrite=true" in message and "\n" not in message
    )
    shards[0].write_bytes(original)
    os.utime(shards[0], ns=(mtime, mtime))  # as it was when read: the run resumes
    writer = predict(str(folder), out, layout="single")
    assert writer.summary["num_processed_this_run"] == 4
    assert len(csv_rows(tmp_path / "out" / "predictions.csv")) == 8
