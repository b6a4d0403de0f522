"""Every data option on every source: a folder, a .txt list, a .csv table, tar shards and Parquet, local, on a loopback
S3 (moto's server) and over a local HTTP server, all read by the one dataset. Each option has a visible effect on
each source (pixels, error records, the cache on disk, the fingerprint) or is refused by its key."""

from __future__ import annotations

import functools
import http.server
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import make_images
from scale.scale_helpers import write_parquet, write_shards

from data.source_helpers import listed
from lit_infer.data import Decoding, ImageDataModule, Inputs, Reading
from lit_infer.data.decode import Decoder
from lit_infer.data.options import GROUPS
from lit_infer.errors import ConfigError
from lit_infer.preprocessing import Preprocessing
from lit_infer.records import NO_LABEL

P = Preprocessing(crop_size=16, resize_size=20)
SOURCES = ["folder", "list", "csv", "tar", "parquet"]
N = 9


def make_source(kind: str, root: Path) -> tuple[str, list[bytes]]:
    """``N`` JPEGs as the source ``kind`` under ``root``; returns the source and the images' bytes, in order."""
    images = make_images(root / "imgs", N, classes=3 if kind == "folder" else 0, ext="jpg")
    images = sorted(images, key=lambda p: str(p.relative_to(root / "imgs")))
    data = [p.read_bytes() for p in images]
    if kind == "folder":
        return str(root / "imgs"), data
    if kind == "list":
        (root / "files.txt").write_text("".join(f"imgs/{p.name}\n" for p in images))
        return str(root / "files.txt"), data
    if kind == "csv":
        (root / "t.csv").write_text("path,label\n" + "".join(f"imgs/{p.name},{i % 2}\n" for i, p in enumerate(images)))
        return str(root / "t.csv"), data
    if kind == "tar":
        write_shards(images, root / "shards", [4, 5])
        return str(root / "shards"), data
    write_parquet(images, root / "t.parquet", hf_struct=False)
    return str(root / "t.parquet"), data


# S3 cases take 0.5-3 s each on 2 busy cores (requests to the server): slow, out of the fast loop.
@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], tuple[str, list[bytes]]]:
    """``make_source`` where the test's parameter puts it: on disk, or uploaded as it is to a fresh bucket of the
    loopback S3 server (moto's, in a thread of this process), named by its ``s3://`` URL."""

    def make(kind: str) -> tuple[str, list[bytes]]:
        source, data = make_source(kind, tmp_path / "src")
        if request.param == "local":
            return source, data
        s3fs = pytest.importorskip("s3fs")
        bucket = request.getfixturevalue("s3_bucket")
        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        files = [f for f in sorted((tmp_path / "src").rglob("*")) if f.is_file()]
        fs.pipe({f"{bucket.removeprefix('s3://')}/{f.relative_to(tmp_path).as_posix()}": f.read_bytes() for f in files})
        return f"{bucket}/{Path(source).relative_to(tmp_path).as_posix()}", data

    make.where = request.param  # type: ignore[attr-defined]
    return make


def read_all(dm: ImageDataModule) -> dict[str, Any]:
    """Every sample of a run as the loader gives it: key -> pixels (or the failure's type and message), labels."""
    dm.setup("predict")
    pixels, failures, messages, labels = {}, {}, {}, {}
    for batch in dm.predict_dataloader():
        for row, (path, label) in enumerate(zip(batch.paths, batch.labels.tolist(), strict=True)):
            pixels[path] = batch.images[row].permute(1, 2, 0).clone()
            labels[path] = label
        failures.update({f.path: f.error_type for f in batch.failures})
        messages.update({f.path: f.message for f in batch.failures})
    return {"pixels": pixels, "failures": failures, "messages": messages, "labels": labels}


def _dm(source: str, **kw: Any) -> ImageDataModule:
    return ImageDataModule(source, batch_size=4, num_workers=0, preprocessing=P, **kw)


@pytest.mark.parametrize("kind", SOURCES)
@pytest.mark.parametrize("exact", [True, False])
def test_pixels_follow_exact_on_every_source(place: Callable, kind: str, exact: bool) -> None:
    source, data = place(kind)
    got = read_all(_dm(source, decoding=Decoding(exact=exact)))
    assert not got["failures"] and len(got["pixels"]) == N
    expected = sorted(Decoder(P, exact=exact).decode(d).sum().item() for d in data)
    assert sorted(t.sum().item() for t in got["pixels"].values()) == expected


@pytest.mark.parametrize("kind", SOURCES)
def test_max_pixels_makes_error_records_on_every_source(place: Callable, kind: str) -> None:
    source, _ = place(kind)
    got = read_all(_dm(source, decoding=Decoding(max_pixels=100)))
    assert (
        not got["pixels"]
        and set(got["failures"].values()) <= {"ImageTooLarge", "DecompressionBombError"}
        and len(got["failures"]) == N
    )


@pytest.mark.parametrize("kind", SOURCES)
def test_cache_dir_second_run_decodes_nothing(
    place: Callable, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, _ = place(kind)
    first = read_all(_dm(source, decoding=Decoding(cache_dir=tmp_path / "cache")))
    assert len(list((tmp_path / "cache").glob("*/*.json"))) >= 2  # settings + one entry per unit
    assert len(list((tmp_path / "cache").glob("*/*.u8"))) >= 1

    def refuse(*_: Any) -> None:
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(Decoder, "decode", refuse)
    again = read_all(_dm(source, decoding=Decoding(cache_dir=tmp_path / "cache")))
    assert not again["failures"] and again["pixels"].keys() == first["pixels"].keys()
    assert all(torch.equal(again["pixels"][k], first["pixels"][k]) for k in first["pixels"])
    assert again["labels"] == first["labels"]


def test_cache_skips_a_unit_with_a_failed_item_and_an_edited_file(tmp_path: Path) -> None:
    source, _ = make_source("folder", tmp_path)
    files = sorted((tmp_path / "imgs").rglob("*.jpg"), key=lambda p: str(p.relative_to(tmp_path / "imgs")))
    files[0].write_bytes(b"not an image")
    read_all(
        _dm(source, decoding=Decoding(cache_dir=tmp_path / "cache"), inputs=Inputs(unit_size=4))
    )  # units of 4: [0-3] [4-7] [8]
    # The unit with the failed item is read again next time (failing again, as its record): not kept.
    assert len(list((tmp_path / "cache").glob("*/*.u8"))) == 2
    os.utime(files[5], ns=(1, 1))  # an edited image: its unit gets a new entry, never stale pixels
    again = read_all(_dm(source, decoding=Decoding(cache_dir=tmp_path / "cache"), inputs=Inputs(unit_size=4)))
    assert len(list((tmp_path / "cache").glob("*/*.u8"))) == 3 and len(again["failures"]) == 1


@pytest.mark.parametrize("kind", SOURCES)
def test_file_identity_content_names_the_bytes_or_is_refused(place: Callable, kind: str, tmp_path: Path) -> None:
    source, _ = place(kind)
    if place.where == "s3" or kind in ("tar", "parquet"):
        # Objects are named by size and ETag, shards by path (a repaired shard is retried by the same run): reading
        # every file once more for its hash is refused by the key, not silently skipped.
        with pytest.raises(ConfigError) as info:
            _dm(source, reading=Reading(file_identity="content")).setup()
        assert info.value.key == "data.reading.file_identity" and "\n" not in str(info.value)
        return
    dm, stat_dm = _dm(source, reading=Reading(file_identity="content")), _dm(source)
    dm.setup()
    stat_dm.setup()

    def versions(d: ImageDataModule) -> list[str]:  # what each unit names as a worker starts it
        return [d.dataset.version(u).tag for u in d.listing.all_units()]  # type: ignore[union-attr]

    before, stat_before = versions(dm), versions(stat_dm)
    assert all(v.startswith("content:") for v in before) and all(v.startswith("stat:") for v in stat_before)
    target = sorted(tmp_path.rglob("*.jpg"))[0]
    stat = target.stat()
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))  # same size, same mtime, other bytes
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert versions(dm) != before and versions(stat_dm) == stat_before
    assert dm.fingerprint()["reading"]["file_identity"] == "content"  # the identity itself is part of the run


def _dm_fingerprint(source: str, **kw: Any) -> dict[str, Any]:
    dm = _dm(source, **kw)
    dm.setup()
    return dm.fingerprint()


@pytest.mark.parametrize("kind", SOURCES)
def test_labels_come_from_their_source(place: Callable, kind: str) -> None:
    source, _ = place(kind)
    dm = _dm(source)
    got = read_all(dm)
    labels = sorted(got["labels"].values())
    expected = {
        "folder": sorted(i % 3 for i in range(N)),  # class_0..class_2 sub-folders
        "list": [NO_LABEL] * N,
        "csv": sorted(i % 2 for i in range(N)),
        "tar": sorted(i % 3 for i in range(N)),  # the .cls members
        "parquet": sorted(i % 3 for i in range(N)),  # the label column
    }[kind]
    assert labels == expected
    assert dm.class_names == (["class_0", "class_1", "class_2"] if kind == "folder" else None)


@pytest.mark.parametrize("kind", SOURCES)
def test_decode_gpu_hands_jpeg_bytes_to_the_device(place: Callable, kind: str) -> None:
    source, data = place(kind)
    dm = _dm(source, decoding=Decoding(decode="gpu"))
    dm.setup()
    encoded = [b.encoded.to_list() for b in dm.predict_dataloader() if b.encoded is not None]
    assert sorted(d for batch in encoded for d in batch) == sorted(data)


@pytest.mark.parametrize(
    ("kind", "option", "value"),
    [
        ("tar", "inputs.unit_size", 4),
        ("parquet", "reading.path_root", "/"),
        ("list", "inputs.labels_from_folders", True),
        ("csv", "inputs.image_column", "image"),
        ("folder", "inputs.path_column", "file"),
        ("list", "inputs.extensions", [".png"]),
    ],
)
def test_an_option_that_means_nothing_for_a_source_is_refused_by_key(
    tmp_path: Path, kind: str, option: str, value: Any
) -> None:
    source, _ = make_source(kind, tmp_path)
    with pytest.raises(ConfigError) as info:
        group, _, name = option.partition(".")
        _dm(source, **{group: GROUPS[group](**{name: value})}).setup()  # a folder of shards is known once listed
    assert info.value.key == f"data.{option}" and "\n" not in str(info.value)


def test_folder_is_paged_in_sorted_order(tmp_path: Path) -> None:
    for rel in ["b.jpg", "a/z.jpg", "a.jpg", "a-b/y.jpg", "c/d/e.jpg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    dm = _dm(str(tmp_path), inputs=Inputs(unit_size=2, labels_from_folders=False))
    dm.setup()
    units = dm.listing.all_units()  # cut as the folder is listed: waits for its end
    pages = [dm.listing.page(u) for u in units]
    rel = [Path(p.path(i)).relative_to(tmp_path).as_posix() for p in pages for i in range(len(p))]
    assert rel == sorted(rel) == ["a-b/y.jpg", "a.jpg", "a/z.jpg", "b.jpg", "c/d/e.jpg"]
    assert [(u.start, u.stop) for u in units] == [(0, 2), (2, 4), (4, 5)]
    assert dm.describe() == "a folder of 5 images (3 units)"


# ---- remote ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["folder", "tar"])
def test_s3_folder_and_shards_read_like_local(tmp_path: Path, s3_bucket: str, kind: str) -> None:
    s3fs = pytest.importorskip("s3fs")
    source, _ = make_source(kind, tmp_path)
    local = read_all(_dm(source))
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    for path in sorted(Path(source).rglob("*")):
        if path.is_file():
            fs.put_file(str(path), f"{s3_bucket.removeprefix('s3://')}/src/{path.relative_to(source).as_posix()}")
    dm = _dm(f"{s3_bucket}/src", decoding=Decoding(cache_dir=tmp_path / "cache"))
    remote = read_all(dm)
    assert not remote["failures"] and len(remote["pixels"]) == N
    assert sorted(t.sum().item() for t in remote["pixels"].values()) == sorted(
        t.sum().item() for t in local["pixels"].values()
    )
    assert sorted(remote["labels"].values()) == sorted(local["labels"].values())
    assert all(k.startswith(f"{s3_bucket}/src/") for k in remote["pixels"])
    if kind == "folder":  # names the objects by the sizes and ETags the listing gave: no HEAD per object
        assert all(v is not None for v in listed(dm.listing)[1])  # type: ignore[arg-type]
        assert all(dm.dataset.version(u).tag.startswith("stat:") for u in dm.listing.all_units())  # type: ignore[union-attr]
    with pytest.raises(ConfigError) as info:
        _dm(f"{s3_bucket}/src", reading=Reading(file_identity="content")).setup()
    assert info.value.key == "data.reading.file_identity"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tar", "parquet", "list"])
def test_shards_parquet_and_lists_over_http_keep_their_scheme(http_root: tuple[Path, str], kind: str) -> None:
    pytest.importorskip("aiohttp")
    root, url = http_root
    _source, data = make_source(kind, root)
    remote = {
        "tar": f"{url}/shards/{{000000..000001}}.tar",
        "parquet": f"{url}/t.parquet",
        "list": f"{url}/files.txt",
    }[kind]
    got = read_all(_dm(remote))
    assert not got["failures"] and len(got["pixels"]) == N
    assert all(k.startswith(url) for k in got["pixels"])
    expected = sorted(Decoder(P).decode(d).sum().item() for d in data)
    assert sorted(t.sum().item() for t in got["pixels"].values()) == expected
    if kind == "parquet":
        assert _dm(remote).listing is None  # listed in setup only
        dm = _dm(remote)
        dm.setup()
        assert dm.listing.num_items == N and dm.describe() == f"1 Parquet file ({N} rows)"


class _FaultyHandler(http.server.SimpleHTTPRequestHandler):
    """``http.server`` serving a folder, whose GETs of image, tar and Parquet files fail (503) the first
    ``server.fail`` times per file, or stall ``server.stall`` seconds (until the test ends at the latest): a flaky
    or stuck store, for real. ``server.stalled`` lists the stalled GETs."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        server: Any = self.server
        if self.path.endswith((".jpg", ".tar", ".parquet")):
            failed = server.failed.get(self.path, 0)
            if failed < server.fail:
                server.failed[self.path] = failed + 1
                self.send_error(503)
                return
            if server.stall:
                server.stalled.append(self.path)
                server.released.wait(server.stall)
        super().do_GET()


@pytest.fixture
def faulty_http(tmp_path: Path) -> Iterator[tuple[Path, str, Any]]:
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_FaultyHandler, directory=str(root)))
    server.fail, server.failed, server.stall = 0, {}, 0.0  # type: ignore[attr-defined]
    server.stalled, server.released = [], threading.Event()  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.released.set()  # type: ignore[attr-defined]  # stalled handlers end with the test, not after it
        server.shutdown()
        server.server_close()


def _over_http(kind: str, root: Path, url: str) -> str:
    source, _ = make_source(kind, root)
    return url + "/" + Path(source).relative_to(root).as_posix()


@pytest.mark.slow
@pytest.mark.parametrize("kind", SOURCES)
@pytest.mark.parametrize("retries", [0, 2])
def test_io_retries_outlast_a_flaky_store_on_every_source(faulty_http: Any, kind: str, retries: int) -> None:
    pytest.importorskip("aiohttp")
    root, url, server = faulty_http
    dm = _dm(_over_http(kind, root, url), reading=Reading(io_retries=retries))
    dm.setup()  # listed (Parquet footers read) before the store turns flaky
    server.fail = 1  # every file's first GET answers 503
    got = read_all(dm)
    if retries:
        assert not got["failures"] and len(got["pixels"]) == N
    else:  # no retry: each image fails, or each shard, as its own record; nothing crashes
        expected = {"ClientResponseError"} if kind in ("folder", "list", "csv") else {"UnitReadError"}
        assert not got["pixels"] and set(got["failures"].values()) == expected
        assert len(got["failures"]) == (N if kind in ("folder", "list", "csv") else len(dm.listing.units))


@pytest.mark.slow
@pytest.mark.timeout(120)  # without the timeout applied, the nine stalls of 60 s would run on for 9 minutes
@pytest.mark.parametrize("kind", SOURCES)
def test_read_timeout_bounds_a_stuck_store_on_every_source(faulty_http: Any, kind: str) -> None:
    pytest.importorskip("aiohttp")
    root, url, server = faulty_http
    dm = _dm(_over_http(kind, root, url), reading=Reading(read_timeout=0.3, io_retries=0))
    dm.setup()
    server.stall = 60.0  # a store that answers after a minute: far past any load's delay, and past the ceiling below
    started = time.perf_counter()
    got = read_all(dm)
    seconds = time.perf_counter() - started
    # What the run recorded: every stalled input (an image, or a shard's or Parquet file's whole unit) is one error
    # record of a read timeout, and the store saw one GET per input (no retry, none read twice).
    per_item = kind in ("folder", "list", "csv")
    inputs = N if per_item else len(dm.listing.units)
    assert not got["pixels"] and len(got["failures"]) == inputs == len(server.stalled), (got, server.stalled)
    assert set(got["failures"].values()) == ({"ReadTimeout"} if per_item else {"UnitReadError"})
    assert all("read_timeout=0.3 s" in m for m in got["messages"].values()), got["messages"]
    # 0.3 s per input plus start-up (about 3 s here): 30 s leaves room for a loaded machine, and a single stall
    # waited out (60 s) is past it.
    assert seconds < 30, seconds


def test_describe_in_plain_words(tmp_path: Path) -> None:
    source, _ = make_source("tar", tmp_path)
    dm = _dm(source)
    dm.setup()
    assert dm.describe() == "2 tar shards"
    listed, _ = make_source("list", tmp_path / "l")
    dm = _dm(listed)
    dm.setup()
    assert dm.describe() == f"a list of {N} images"
    assert np.all(dm.data_info().num_items == N)


@pytest.mark.parametrize("kind", SOURCES)
def test_progress_total_is_known_before_reading_except_for_tar(place: Callable, kind: str) -> None:
    source, _ = place(kind)
    dm = _dm(source)
    dm.setup()
    dm.predict_dataloader()
    assert dm.dataset.expected_items() == (None if kind == "tar" else N)
    # Two ranks: each expects its own share, and the shares add up.
    if kind != "tar":
        shares = []
        for rank in (0, 1):
            dm.dataset.split(set(), {}, rank, 2, 4, 0)
            shares.append(dm.dataset.expected_items())
        assert sum(shares) == N


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("list", {"n": N, "total": N, "unit": "img"}),
        ("parquet", {"n": N, "total": N, "unit": "img"}),  # from the footers
        ("tar", {"n": 2, "total": 2, "unit": "shard"}),  # images unknown before reading: the shards, with an ETA
    ],
)
def test_the_bar_counts_against_a_known_total(tmp_path: Path, kind: str, expected: dict[str, Any]) -> None:
    import lightning as L

    from lit_infer import ImageClassifier, PredictionWriter
    from lit_infer.callbacks import ImagesPerSecondBar
    from lit_infer.nets import TinyCNN

    source, _ = make_source(kind, tmp_path)
    bar, seen = ImagesPerSecondBar(), {}

    class _Peek(L.Callback):
        def on_predict_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
            b = bar.predict_progress_bar
            seen.update(n=b.n, total=b.total, unit=b.unit)

    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, callbacks=[bar, _Peek(), PredictionWriter(tmp_path / "out")]
    )
    module = ImageClassifier(net=TinyCNN(3, 4, 1), preprocessing=P)
    trainer.predict(module, datamodule=_dm(source), return_predictions=False)
    assert seen == expected  # images or shards, never "0/?" batches


@pytest.mark.parametrize("kind", ["folder", "tar"])
def test_file_url_reads_like_the_path(tmp_path: Path, kind: str) -> None:
    source, _ = make_source(kind, tmp_path)
    by_path, by_url = read_all(_dm(source)), read_all(_dm(f"file://{source}"))
    assert sorted(t.sum().item() for t in by_url["pixels"].values()) == sorted(
        t.sum().item() for t in by_path["pixels"].values()
    )
    assert not by_url["failures"] and len(by_url["pixels"]) == N
