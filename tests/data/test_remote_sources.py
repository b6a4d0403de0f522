"""Remote like local: a folder of loose images behind an ``http.server`` on loopback or in a moto S3 bucket is read
as the same folder on disk is (same order, same bytes, same predictions), its listing followed page after page, and
its objects named by size and ETag in the resume fingerprint. What cannot run here (gs://) is refused in one line."""

from __future__ import annotations

import csv
import importlib.util
import shutil
import time
from pathlib import Path
from urllib.parse import unquote

import pytest
from conftest import make_images
from scale.scale_helpers import predict

from data.source_helpers import listed
from lit_infer.data.sources import list_source
from lit_infer.errors import ConfigError, RunError

ODD = ["class_0/x-1.jpg", "class_0/x=1.jpg", "class_1/a b#c.jpg", "class_2/ü.jpg"]
"""Names an index page percent-encodes (``x=1`` -> ``x%3D1``, which sorts before ``x-1``): read in the order of the
names themselves, as on disk."""


def _folder(root: Path) -> Path:
    """Nine JPEGs in three class sub-folders, and four more whose names an HTTP index page spells differently."""
    images = make_images(root, 9 + len(ODD), classes=3, ext="jpg")
    for source, name in zip(images[9:], ODD, strict=True):
        shutil.move(source, root / name)
    return root


def _rows(out: Path, prefix: str) -> list[dict[str, str]]:
    """The predictions of a single-layout run, each path made relative to the source (URLs decoded)."""
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        assert row["path"].startswith(prefix), row["path"]
        row["path"] = unquote(row["path"][len(prefix) :])
    return rows


@pytest.mark.slow
def test_an_http_folder_predicts_like_the_same_folder_on_disk(http_root: tuple[Path, str], tmp_path: Path) -> None:
    pytest.importorskip("aiohttp")
    root, url = http_root
    local = _folder(root / "imgs")
    predict(str(local), str(tmp_path / "local"), layout="single")
    predict(f"{url}/imgs", str(tmp_path / "http"), layout="single")
    expected = _rows(tmp_path / "local", f"{local}/")
    got = _rows(tmp_path / "http", f"{url}/imgs/")
    assert got == expected  # every image once, in the same order, with the same prediction and label
    assert len({r["path"] for r in got}) == len(got) == 9 + len(ODD)
    assert [r["path"] for r in got].index("class_0/x-1.jpg") < [r["path"] for r in got].index("class_0/x=1.jpg")

    listing = list_source(f"{url}/imgs", None)
    assert listing.class_names == ["class_0", "class_1", "class_2"]
    paths, versions = listed(listing)
    for path in paths:  # the bytes each URL serves are the file's
        assert (local / unquote(path[len(f"{url}/imgs/") :])).read_bytes() == _get(path)
    # An index page names no sizes: each object's size and ETag are asked by the worker that reads its unit.
    assert len(paths) == 9 + len(ODD) and versions == [None] * len(paths)


def _get(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


@pytest.mark.slow
def test_an_index_page_that_links_outside_its_folder_is_not_followed(http_root: tuple[Path, str]) -> None:
    pytest.importorskip("aiohttp")
    root, url = http_root
    make_images(root / "outside", 1, ext="jpg")
    make_images(root / "site" / "sub", 1, ext="jpg")
    (root / "site" / "a.jpg").write_bytes((root / "outside" / "img_00000.jpg").read_bytes())
    # A page the server wrote (not http.server's own): links back up, to itself, to a sibling, to another host.
    links = ["../site/", "./", "../outside/img_00000.jpg", "%2E%2E/outside/", "/outside/", "http://example.com/x.jpg"]
    page = "".join(f'<a href="{link}">x</a>' for link in [*links, "a.jpg", "sub/"])
    (root / "site" / "index.html").write_text(f"<html><body>{page}</body></html>")
    (root / "site" / "sub" / "index.html").write_text('<a href="img_00000.jpg">x</a><a href="../../">up</a>')
    listing = list_source(f"{url}/site", None, labels_from_folders=False)
    assert listed(listing)[0] == [f"{url}/site/a.jpg", f"{url}/site/sub/img_00000.jpg"]


@pytest.mark.slow
def test_an_http_folder_of_shards_is_read_whole(http_root: tuple[Path, str]) -> None:
    from scale.scale_helpers import write_shards

    pytest.importorskip("aiohttp")
    root, url = http_root
    write_shards(make_images(root / "imgs", 9, ext="jpg"), root / "shards", [4, 5])
    listing = list_source(f"{url}/shards", None)
    assert listing.kind == "tar" and [u.location for u in listing.units] == [
        f"{url}/shards/000000.tar",
        f"{url}/shards/000001.tar",
    ]


@pytest.mark.slow
def test_a_bucket_prefix_past_one_page_is_listed_in_order(s3_bucket: str) -> None:
    s3fs = pytest.importorskip("s3fs")
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    bucket = s3_bucket.removeprefix("s3://")
    # S3 answers at most 1,000 keys a request: 1,234 objects in two folders take two pages, and the second must be read.
    names = [f"{d}/{i:04d}.jpg" for d in ("b", "a") for i in range(617)]
    fs.pipe({f"{bucket}/src/{n}": b"x" for n in names})
    listing = list_source(f"{s3_bucket}/src", 500, labels_from_folders=False)
    paths, versions = listed(listing)
    assert paths == [f"{s3_bucket}/src/{n}" for n in sorted(names)]
    assert [(u.start, u.stop) for u in listing.all_units()] == [(0, 500), (500, 1000), (1000, 1234)]
    assert all(v is not None and v[0].startswith("1:") for v in versions)  # size and ETag, from the listing's pages


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["folder", "table", "list of URLs"])
def test_a_changed_object_refuses_the_resume_naming_it(s3_bucket: str, tmp_path: Path, kind: str) -> None:
    s3fs = pytest.importorskip("s3fs")
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    bucket = s3_bucket.removeprefix("s3://")
    images = make_images(tmp_path / "imgs", 6, ext="jpg")
    for image in images:
        fs.put_file(str(image), f"{bucket}/src/{image.name}")
    source = {
        "folder": f"{s3_bucket}/src",
        "table": f"{s3_bucket}/src/t.csv",  # relative entries: objects beside the table
        "list of URLs": str(tmp_path / "urls.txt"),  # a local list naming objects
    }[kind]
    fs.pipe_file(f"{bucket}/src/t.csv", ("path\n" + "".join(f"{p.name}\n" for p in images)).encode())
    (tmp_path / "urls.txt").write_text("".join(f"{s3_bucket}/src/{p.name}\n" for p in images))
    out = str(tmp_path / "out")
    predict(source, out, layout="single")
    predict(source, out, layout="single")  # unchanged: complete, nothing to do, no refusal
    time.sleep(1.1)  # S3 times are kept to the second (or finer): the rewritten object is the newest one
    fs.pipe_file(f"{bucket}/src/{images[2].name}", images[4].read_bytes())  # same name, other bytes and ETag
    with pytest.raises(RunError) as info:
        predict(source, out, layout="single")
    message = str(info.value)
    unit = "lines-000000000000" if kind == "list of URLs" else "items-000000000000"  # a list is read in ranges
    assert message.startswith(f"data.source: the inputs of {unit} changed since the run in ")
    assert f"(size and ETag; the one written last: '{s3_bucket}/src/{images[2].name}')" in message
    assert "\n" not in message


def test_gs_without_gcsfs_is_refused_in_one_line_naming_the_extra() -> None:
    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed: no refusal to see")
    with pytest.raises(ConfigError) as info:
        list_source("gs://bucket/images", None)
    assert str(info.value) == (
        "data.source='gs://bucket/images': gs:// needs gcsfs, which is not installed. pip install 'lit_infer[gcs]'"
    )


@pytest.mark.slow
def test_203_loose_jpegs_in_a_bucket_to_parts_in_the_bucket_every_image_once(s3_bucket: str, tmp_path: Path) -> None:
    s3fs = pytest.importorskip("s3fs")
    from lit_infer.cli import main

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    bucket = s3_bucket.removeprefix("s3://")
    images = make_images(tmp_path / "imgs", 203, classes=4, size=(12, 10), ext="jpg")
    fs.pipe({f"{bucket}/imgs/{p.relative_to(tmp_path / 'imgs').as_posix()}": p.read_bytes() for p in images})
    out = f"{s3_bucket}/run"
    predict(f"{s3_bucket}/imgs", out, layout="parts", batch_size=16)
    assert fs.exists(f"{bucket}/run/_SUCCESS") and len(fs.glob(f"{bucket}/run/part-*")) >= 2
    main(["merge", out, "--dest", str(tmp_path / "merged")])
    with open(tmp_path / "merged" / "predictions.csv", newline="") as f:
        paths = [row["path"] for row in csv.DictReader(f)]
    expected = sorted(f"{s3_bucket}/imgs/{p.relative_to(tmp_path / 'imgs').as_posix()}" for p in images)
    assert paths == expected  # every image once, in the listing's order
