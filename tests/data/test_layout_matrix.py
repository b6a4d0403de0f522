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
