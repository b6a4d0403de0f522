"""A folder listed while the run reads it: the walk reads each directory only when it reaches it, pages reach other
processes before the walk ends, the unit size is decided early, a failed listing stops the run by name, and class
sub-folders are torchvision's."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import make_images
from PIL import Image

from lit_infer.cli.errors import explain
from lit_infer.data import ImageDataModule, Inputs
from lit_infer.data.listing import FolderWalk, Listed
from lit_infer.data.pages import PREFIX, FolderPages
from lit_infer.data.units import DECIDED_PAST, DEFAULT_UNIT_SIZE, Unit, default_unit_size
from lit_infer.errors import RunError
from lit_infer.preprocessing import Preprocessing
from lit_infer.records import NO_LABEL

EXTS = (".jpg", ".png")


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def _listed(n: int, start: int = 0) -> Iterator[Listed]:
    for i in range(start, start + n):  # a file a chunk: pages are cut across chunks
        yield Listed([f"x{i:06d}.jpg"], [f"/nowhere/x{i:06d}.jpg"])


def test_a_walk_reads_each_folder_only_when_it_reaches_it(tmp_path: Path) -> None:
    _touch(tmp_path, "a/1.jpg", "a/2.jpg", "b/3.jpg", "c/4.jpg", "c/notes.txt")
    walk = iter(FolderWalk(str(tmp_path), EXTS))
    assert next(walk).names == ["a/1.jpg", "a/2.jpg"]
    # Changed behind the walk's back, below folders it has not opened yet: it sees them as they are when reached.
    shutil.rmtree(tmp_path / "c")
    _touch(tmp_path, "b/0.jpg")
    assert [listed.names for listed in walk] == [["b/0.jpg", "b/3.jpg"]]


def test_pages_reach_another_process_before_the_walk_ends() -> None:
    release = threading.Event()

    def held() -> Iterator[Listed]:
        yield from _listed(6)
        release.wait(60)  # the walk is held in the middle of page 1
        yield from _listed(3, start=6)

    pages = FolderPages("src", held(), 4).start()
    try:
        assert pages.unit(0) == Unit("items-000000000000", "page", "src", 0, 0, 4)
        assert pages.end() is None  # the first page is out, the folder is not listed yet
        with multiprocessing.get_context("fork").Pool(1) as pool:  # a DataLoader worker's way: forked, pickled
            later = pool.apply_async(_paths_of_page, (pages, 1))
            time.sleep(0.5)
            assert not later.ready()  # page 1 is waited for, not guessed
            release.set()
            assert later.get(timeout=60) == [f"/nowhere/x{i:06d}.jpg" for i in range(4, 8)]
        assert [(u.start, u.stop) for u in pages.all_units()] == [(0, 4), (4, 8), (8, 9)]
        assert pages.unit(3) is None and pages.end()["items"] == 9  # type: ignore[index]
    finally:
        release.set()
        pages.close()
    assert not Path(pages.folder).exists()


def _paths_of_page(pages: FolderPages, ordinal: int) -> list[str]:
    unit = pages.unit(ordinal)
    assert unit is not None
    entries = pages.entries(unit)
    return [entries.path(i) for i in range(len(entries))]


def test_the_default_unit_size_is_decided_past_its_bound_not_at_the_end() -> None:
    release = threading.Event()

    def held() -> Iterator[Listed]:
        yield from _listed(DECIDED_PAST + 1)
        release.wait(60)
        yield from _listed(10, start=DECIDED_PAST + 1)

    pages = FolderPages("src", held(), None).start()  # returns while the walk is held
    try:
        assert pages.unit_size == DEFAULT_UNIT_SIZE == default_unit_size(10 * DECIDED_PAST)
        assert pages.unit(0) is not None and pages.end() is None
        release.set()
        assert pages.all_units()[-1].stop == DECIDED_PAST + 11
    finally:
        release.set()
        pages.close()
    small = FolderPages("src", _listed(100), None).start()
    assert small.unit_size == default_unit_size(100) == 64
    assert [(u.start, u.stop) for u in small.all_units()] == [(0, 64), (64, 100)]
    small.close()


def test_a_failed_listing_stops_whoever_waits_for_a_page_naming_the_source() -> None:
    proceed = threading.Event()

    def failing() -> Iterator[Listed]:
        yield from _listed(5)
        proceed.wait(60)
        raise PermissionError("no access to /data/b")

    pages = FolderPages("/data", failing(), 4).start()
    try:
        assert pages.unit(0) is not None  # what was listed before the failure is read
        proceed.set()
        with pytest.raises(RunError, match=r"listing failed \(PermissionError: no access to /data/b\)"):
            pages.unit(1)
    finally:
        proceed.set()
        pages.close()


def test_class_folders_are_torchvision_image_folder_classes(tmp_path: Path) -> None:
    datasets = pytest.importorskip("torchvision.datasets")
    for name in ["dog/b.png", "cat/a.png", "cat/sub/c.png", "zebra/d.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    (tmp_path / "empty").mkdir()  # a class without images: ImageFolder counts it (and refuses it unless allowed)
    reference = datasets.ImageFolder(str(tmp_path), allow_empty=True)
    dm = ImageDataModule(tmp_path, num_workers=0, inputs=Inputs(unit_size=2))
    dm.setup()
    assert dm.class_names == reference.classes == ["cat", "dog", "empty", "zebra"]
    got = [
        (page.path(i), int(page.labels[i]))
        for page in (dm.listing.page(u) for u in dm.listing.all_units())
        for i in range(len(page))
    ]
    assert sorted(got) == sorted(reference.samples)
    _touch(tmp_path, "top.png")  # an image beside the folders: no labels at all, as before
    flat = ImageDataModule(tmp_path, num_workers=0)
    flat.setup()
    assert flat.class_names is None
    assert all((flat.listing.page(u).labels == NO_LABEL).all() for u in flat.listing.all_units())


def test_pages_of_a_process_that_is_gone_are_removed_by_the_next_listing(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = Path(tempfile.gettempdir()) / f"{PREFIX}{int(gone.stdout)}-killed"  # a SIGKILLed run's pages
    left.mkdir()
    (left / "page-000000000000.npz").write_bytes(b"x")
    mine = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))  # a live process's: kept
    try:
        FolderPages("src", _listed(3), 4).start().close()
        assert not left.exists() and mine.exists()
    finally:
        shutil.rmtree(left, ignore_errors=True)
        shutil.rmtree(mine, ignore_errors=True)


def test_a_data_module_predicts_again_after_its_listing_was_closed(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", 5)
    dm = ImageDataModule(tmp_path / "imgs", num_workers=0, batch_size=2, preprocessing=Preprocessing(16, 16))
    counts = []
    for _ in range(2):
        dm.setup()
        counts.append(sum(len(b) for b in dm.predict_dataloader()))
        folder = dm.listing.pages.folder  # type: ignore[union-attr]
        dm.teardown("predict")  # the listing ended: its pages go, and the next predict lists again
        assert not Path(folder).exists()
    assert counts == [5, 5]


class _FailingListing(torch.utils.data.IterableDataset):
    def __iter__(self) -> Iterator[int]:
        def failing() -> Iterator[Listed]:
            yield from _listed(1)
            raise PermissionError("no access to /data/b")

        pages = FolderPages("/data", failing(), 4).start()
        pages.unit(1)  # waits for a page the listing never cuts
        yield 0


def test_a_listing_that_fails_in_a_worker_is_one_line_naming_the_source() -> None:
    with pytest.raises(RunError) as info:  # torch wraps it with the worker's traceback
        next(iter(torch.utils.data.DataLoader(_FailingListing(), batch_size=None, num_workers=1)))
    assert "Original Traceback" in str(info.value)
    lines, status = explain(info.value, [])
    assert status == 2 and len(lines) == 1, lines
    assert lines[0].endswith(
        "data.source='/data': its listing failed (PermissionError: no access to /data/b). Every committed batch is "
        "kept: fix the folder's access and rerun the same command to resume"
    )
