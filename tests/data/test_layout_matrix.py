"""Every source in both layouts and every format: ``layout: parts``, merged by ``lit-infer merge``, holds what
``layout: single`` holds, row for row; a source in a moto S3 bucket predicts what the same source on disk does, and
its parts go straight to the bucket, every image once. Runs in process (Trainer, no launcher), slow for their time."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scale.scale_helpers import predict

from data.test_source_matrix import SOURCES, N, make_source
from lit_infer.cli import main
from lit_infer.data import Decoding

FORMATS = ["csv", "jsonl", "parquet", "npy"]


def _merge(out: str, *args: str) -> None:
    try:
        main(["merge", out, *args])
    except SystemExit as exc:  # a refusal: exit 2 with its one line
        raise AssertionError(f"lit-infer merge {out} exited {exc.code}") from None


def _table(folder: Path, fmt: str) -> list[dict[str, Any]]:
    """The rows of a finished single-layout folder (or a merged parts folder), in order, whatever the format."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(folder / "predictions.parquet").to_pylist()
    if fmt == "jsonl":
        return [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    rows: list[dict[str, Any]] = list(csv.DictReader(io.StringIO((folder / "predictions.csv").read_text())))
    if fmt == "npy":  # the table keeps index and path; the tensors are arrays beside it, rows in the same order
        for name in ("topk_pred", "topk_score"):
            array = np.load(folder / f"{name}.npy")
            assert len(array) == len(rows)
            for row, value in zip(rows, array, strict=True):
                row[name] = value.tolist()
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("kind", SOURCES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_parts_merged_hold_what_single_holds(tmp_path: Path, kind: str, fmt: str) -> None:
    source, _ = make_source(kind, tmp_path)
    predict(source, str(tmp_path / "single"), layout="single", fmt=fmt)
    predict(source, str(tmp_path / "parts"), layout="parts", fmt=fmt)
    _merge(str(tmp_path / "parts"))
    single, merged = _table(tmp_path / "single", fmt), _table(tmp_path / "parts", fmt)
    assert len(single) == N and len({r["path"] for r in single}) == N  # every input once
    assert merged == single
    if fmt in ("csv", "jsonl"):  # the text formats, byte for byte
        name = f"predictions.{fmt}"
        assert (tmp_path / "parts" / name).read_bytes() == (tmp_path / "single" / name).read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("kind", SOURCES)
@pytest.mark.parametrize("layout", ["single", "parts"])
def test_a_second_run_reads_the_cache_and_writes_the_same_bytes(
    tmp_path: Path, kind: str, layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lit_infer.data.decode import Decoder

    source, _ = make_source(kind, tmp_path)
    cache = str(tmp_path / "cache")
    predict(source, str(tmp_path / "first"), layout=layout, decoding=Decoding(cache_dir=cache))
    assert list((tmp_path / "cache").glob("*/*.u8"))

    def refuse(*_: Any) -> None:
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(Decoder, "decode", refuse)  # in process (no workers): the second run must not decode
    predict(source, str(tmp_path / "second"), layout=layout, decoding=Decoding(cache_dir=cache))
    pattern = "predictions.csv" if layout == "single" else "part-*.csv"
    first, second = (sorted((tmp_path / run).glob(pattern)) for run in ("first", "second"))
    assert [p.name for p in first] == [p.name for p in second] and first
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, second, strict=True))
    assert len(_table(tmp_path / "second", "csv") if layout == "single" else _parts_rows(tmp_path / "second")) == N


def _parts_rows(out: Path) -> list[dict[str, Any]]:
    _merge(str(out))
    return _table(out, "csv")


def _upload(tmp_path: Path, bucket: str) -> Any:
    s3fs = pytest.importorskip("s3fs")
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    files = [f for f in sorted((tmp_path / "src").rglob("*")) if f.is_file()]
    fs.pipe({f"{bucket.removeprefix('s3://')}/{f.relative_to(tmp_path).as_posix()}": f.read_bytes() for f in files})
    return fs


def _key(path: str) -> str:
    """A row's input, wherever its source lies: the path below the source's folder (a tar member, a Parquet row)."""
    return path.split("/src/", 1)[-1]


@pytest.mark.slow
@pytest.mark.parametrize("kind", SOURCES)
def test_a_source_in_s3_predicts_like_on_disk_in_both_layouts(tmp_path: Path, s3_bucket: str, kind: str) -> None:
    source, _ = make_source(kind, tmp_path / "src")
    fs = _upload(tmp_path, s3_bucket)
    remote = f"{s3_bucket}/{Path(source).relative_to(tmp_path).as_posix()}"
    predict(source, str(tmp_path / "local"), layout="single")
    expected = [{**r, "index": None, "path": _key(r["path"])} for r in _table(tmp_path / "local", "csv")]
    predict(remote, str(tmp_path / "single"), layout="single")
    out = f"{s3_bucket}/out"  # parts straight to the bucket
    predict(remote, out, layout="parts")
    assert fs.exists(f"{out.removeprefix('s3://')}/_SUCCESS")
    _merge(out, "--dest", str(tmp_path / "merged"))  # a bucket's parts merged into a local file
    for folder in ("single", "merged"):
        got = _table(tmp_path / folder, "csv")
        assert all(r["path"].startswith(f"{s3_bucket}/src/") for r in got), got[0]
        assert [{**r, "index": None, "path": _key(r["path"])} for r in got] == expected, folder


TWO_RANKS = """\
model:
  class_path: lit_infer.ImageClassifier
  init_args:
    net: {class_path: lit_infer.nets.TinyCNN, init_args: {num_classes: 3, width: 4, depth: 1}}
    preprocessing: {crop_size: 16, resize_size: 16}
data: {class_path: lit_infer.ImageDataModule, init_args: {source: '@SOURCE@', batch_size: 2, num_workers: 0}}
trainer: {accelerator: cpu, devices: 2, strategy: ddp}
writer: {output_dir: '@OUT@', layout: '@LAYOUT@', shared_filesystem: false}
seed_everything: 0
"""
"""Seeded: a net without weights gets the same parameters on both ranks (else their parts are another run's)."""


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", SOURCES)
def test_two_ranks_without_a_shared_filesystem(tmp_path: Path, s3_bucket: str, kind: str) -> None:
    """Two gloo ranks with ``writer.shared_filesystem: false``: into a local folder, every input once (gathered
    over the process group) or one line naming the key; into a bucket every rank sees, parts, every input once."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    source, _ = make_source(kind, tmp_path / "src")
    fs = _upload(tmp_path, s3_bucket)  # only for its client: the bucket holds the parts below

    def run(out: str, layout: str) -> subprocess.CompletedProcess[str]:
        config = TWO_RANKS.replace("@SOURCE@", source).replace("@OUT@", out).replace("@LAYOUT@", layout)
        (tmp_path / "two.yaml").write_text(config)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
        command = [sys.executable, "-m", "lit_infer", "predict", "--config", str(tmp_path / "two.yaml")]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, check=False)

    local = run(str(tmp_path / "local"), "single")
    if local.returncode == 2:
        lines = [line for line in local.stderr.strip().splitlines() if "Seed set to 0" not in line]
        assert len(lines) == 1 and lines[0].startswith("lit-infer: error: writer.shared_filesystem=False"), lines
    else:
        assert local.returncode == 0, local.stderr
        paths = [r["path"] for r in _table(tmp_path / "local", "csv")]
        assert len(paths) == len(set(paths)) == N
    bucket = run(f"{s3_bucket}/two", "parts")
    assert bucket.returncode == 0, bucket.stderr
    assert fs.exists(f"{s3_bucket.removeprefix('s3://')}/two/_SUCCESS")
    _merge(f"{s3_bucket}/two", "--dest", str(tmp_path / "merged"))
    paths = [r["path"] for r in _table(tmp_path / "merged", "csv")]
    assert len(paths) == len(set(paths)) == N


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_refusal_decided_on_rank_zero_is_one_line_under_two_ranks(tmp_path: Path) -> None:
    """``layout: parts`` into a local folder that the other rank's node does not see: refused by rank 0 as it plans,
    received by rank 1, and printed once (not once per rank); nothing written."""
    import os
    import subprocess
    import sys

    source, _ = make_source("list", tmp_path / "src")
    config = TWO_RANKS.replace("@SOURCE@", source).replace("@OUT@", str(tmp_path / "out")).replace("@LAYOUT@", "parts")
    (tmp_path / "two.yaml").write_text(config)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    command = [sys.executable, "-m", "lit_infer", "predict", "--config", str(tmp_path / "two.yaml")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, check=False)
    lines = [line for line in done.stderr.strip().splitlines() if "Seed set to 0" not in line]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("lit-infer: error: writer.shared_filesystem=False: writer.layout=parts"), lines
    assert not list((tmp_path / "out").glob("part-*"))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ranks_that_build_different_networks_are_refused_in_one_line(tmp_path: Path) -> None:
    """A network without weights and without a seed is another network on each rank: refused before anything is
    written, once, naming what differs and the fix (not a merge's traceback at the end)."""
    import os
    import subprocess
    import sys

    source, _ = make_source("list", tmp_path / "src")
    config = TWO_RANKS.replace("@SOURCE@", source).replace("@OUT@", str(tmp_path / "out")).replace("@LAYOUT@", "single")
    config = config.replace("shared_filesystem: false", "shared_filesystem: true").replace("seed_everything: 0\n", "")
    (tmp_path / "two.yaml").write_text(config)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    command = [sys.executable, "-m", "lit_infer", "predict", "--config", str(tmp_path / "two.yaml")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, check=False)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("lit-infer: error: rank 1 builds another run than rank 0 (model."), lines
    assert "seed_everything" in lines[0] and not (tmp_path / "out" / "predictions.csv").exists()
