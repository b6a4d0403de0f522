"""Object storage on both ends, against a real S3 API on loopback (moto's server mode): shards and tables read
through s3fs, parts written straight to the bucket, ``lit-infer merge`` from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_images

from lit_infer.cli import main
from lit_infer.data import Inputs
from scale.scale_helpers import csv_rows, predict, write_parquet, write_shards

pytestmark = pytest.mark.slow  # a real S3 server, DataLoader worker processes

s3fs = pytest.importorskip("s3fs")


def _upload(local: Path, url: str) -> None:
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    for path in sorted(local.iterdir()):
        fs.put_file(str(path), f"{url.removeprefix('s3://')}/{path.name}")


def test_tar_shards_from_s3_to_parts_on_s3(s3_bucket: str, tmp_path: Path) -> None:
    images = make_images(tmp_path / "imgs", 11)
    write_shards(images, tmp_path / "shards", [4, 4, 3])
    _upload(tmp_path / "shards", f"{s3_bucket}/shards")
    local = tmp_path / "local"
    predict(str(tmp_path / "shards"), str(local))
    out = f"{s3_bucket}/run"
    predict(f"{s3_bucket}/shards/{{000000..000002}}.tar", out, workers=2)

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    names = sorted(p.rsplit("/", 1)[1] for p in fs.ls(out.removeprefix("s3://")))
    assert {"_SUCCESS", "_manifest.json", "part-000000.csv", "part-000002.csv"} <= set(names)
    manifest = json.loads(fs.cat_file(f"{out.removeprefix('s3://')}/_manifest.json"))
    assert manifest["num_predicted"] == 11 and [p["rows"] for p in manifest["parts"]] == [4, 4, 3]
    main(["merge", out, "--dest", str(tmp_path / "merged")])
    main(["merge", str(local), "--dest", str(tmp_path / "merged_local")])
    rows, expected = (
        csv_rows(tmp_path / "merged" / "predictions.csv"),
        csv_rows(tmp_path / "merged_local" / "predictions.csv"),
    )
    assert [{k: v for k, v in r.items() if k != "path"} for r in rows] == [
        {k: v for k, v in r.items() if k != "path"} for r in expected
    ]
    assert rows[4]["path"] == f"{s3_bucket}/shards/000001.tar/sample000004.png"

    # A second run over the finished output does nothing and keeps the parts as they are.
    before = fs.info(f"{out.removeprefix('s3://')}/part-000001.csv")["ETag"]
    writer = predict(f"{s3_bucket}/shards/{{000000..000002}}.tar", out)
    assert writer.summary["num_processed_this_run"] == 0
    assert fs.info(f"{out.removeprefix('s3://')}/part-000001.csv")["ETag"] == before


def test_parquet_and_list_from_s3(s3_bucket: str, tmp_path: Path) -> None:
    images = make_images(tmp_path / "imgs", 6)
    write_parquet(images, tmp_path / "table" / "t.parquet")
    _upload(tmp_path / "table", f"{s3_bucket}/table")
    _upload(tmp_path / "imgs", f"{s3_bucket}/imgs")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "list.txt").write_text("".join(f"imgs/{p.name}\n" for p in images))
    _upload(tmp_path / "lists", s3_bucket)
    predict(f"{s3_bucket}/table", str(tmp_path / "a"))
    predict(f"{s3_bucket}/list.txt", str(tmp_path / "b"), inputs=Inputs(unit_size=4))
    main(["merge", str(tmp_path / "a")])
    main(["merge", str(tmp_path / "b")])
    a, b = csv_rows(tmp_path / "a" / "predictions.csv"), csv_rows(tmp_path / "b" / "predictions.csv")
    assert len(a) == len(b) == 6
    assert b[5]["path"] == f"{s3_bucket}/imgs/img_00005.png"
    assert [r["pred"] for r in a] == [r["pred"] for r in b]
