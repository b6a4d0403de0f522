"""Inputs rewritten between two attempts of a run: each unit names what it read (its inputs' sizes and modification
times) as a worker starts it, in its stage and its part. A resume refuses a committed unit whose inputs changed,
redoes whole an unfinished one whose inputs changed, and reads as they are now the units not read yet. Nothing is
asked of a file before the first batch."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import make_images
from scale.scale_helpers import csv_rows, predict

from lit_infer.data import Inputs, Reading
from lit_infer.data.identity import MISSING, file_version, inputs_version
from lit_infer.errors import RunError
from lit_infer.output.parts import CoverageError


def _rewrite(path: Path, other: Path, seconds: int = 1) -> tuple[bytes, int]:
    """``path`` gets ``other``'s bytes, dated ``seconds`` later; returns what restores it."""
    original, mtime = path.read_bytes(), path.stat().st_mtime_ns
    path.write_bytes(other.read_bytes())
    os.utime(path, ns=(mtime, mtime + seconds * 10**9))
    return original, mtime


def _source(tmp_path: Path, kind: str) -> tuple[str, list[Path]]:
    images = make_images(tmp_path / "images", 8)
    if kind == "folder":
        return str(tmp_path / "images"), images
    (tmp_path / "list.txt").write_text("".join(f"images/{p.name}\n" for p in images))
    return str(tmp_path / "list.txt"), images


def test_inputs_version_sees_size_mtime_content_and_missing(tmp_path: Path) -> None:
    paths = [str(p) for p in make_images(tmp_path, 3)]
    stat, content = inputs_version(paths), inputs_version(paths, "content")
    assert inputs_version(paths) == stat and stat.tag.startswith("stat:3:") and content.tag.startswith("content:3:")
    st = os.stat(paths[1])
    os.utime(paths[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same bytes, touched
    touched = inputs_version(paths)
    assert (
        touched.tag != stat.tag and touched.newest == paths[1] and inputs_version(paths, "content").tag == content.tag
    )
    data = bytearray(Path(paths[1]).read_bytes())
    data[-5] ^= 1  # same size, the date restored: only the content shows it
    Path(paths[1]).write_bytes(bytes(data))
    os.utime(paths[1], ns=(st.st_atime_ns, st.st_mtime_ns))
    assert inputs_version(paths).tag == stat.tag and inputs_version(paths, "content").tag != content.tag
    os.remove(paths[2])
    gone = inputs_version(paths)
    assert gone.tag != stat.tag and gone == inputs_version(paths)  # a missing file is a version of its own
    os.mkfifo(paths[2])
    assert file_version(paths[2], "content") == (MISSING, 0.0)  # a FIFO is never opened to hash it (it would block)
    assert file_version(paths[2])[0] != MISSING  # its stat is fine


@pytest.mark.parametrize("kind", ["folder", "list"])
def test_a_committed_unit_whose_input_changed_refuses_the_resume(tmp_path: Path, kind: str) -> None:
    source, images = _source(tmp_path, kind)
    out = str(tmp_path / "out")
    with pytest.raises(CoverageError):  # unit 0 (images 0-3) committed, unit 1 not read
        predict(source, out, layout="single", limit_batches=1, inputs=Inputs(unit_size=4))
    _rewrite(images[6], images[7])  # not read yet: read as it is now
    original, mtime = _rewrite(images[2], images[3])
    with pytest.raises(RunError) as info:
        predict(source, out, layout="single", inputs=Inputs(unit_size=4))
    message = str(info.value)
    assert message.startswith("data.source: the inputs of ") and f"{str(images[2])!r}" in message, message
    assert "size and modification time" in message and "--writer.overwrite=true" in message and "\n" not in message
    images[2].write_bytes(original)
    os.utime(images[2], ns=(mtime, mtime))  # as it was when read: the run resumes
    writer = predict(source, out, layout="single", inputs=Inputs(unit_size=4))
    assert writer.summary["num_processed_this_run"] == 4 and len(csv_rows(tmp_path / "out" / "predictions.csv")) == 8


def test_a_file_added_ahead_of_a_committed_page_refuses_the_resume(tmp_path: Path) -> None:
    """A folder is cut into pages as it is listed: a file that comes sorted ahead of a committed page makes that
    page hold other files than it did, which its version (names and stats) tells."""
    source, images = _source(tmp_path, "folder")
    out = str(tmp_path / "out")
    with pytest.raises(CoverageError):  # page 0 (img 0-3) committed, page 1 not read
        predict(source, out, layout="single", limit_batches=1, inputs=Inputs(unit_size=4))
    added = images[0].with_name("img_00000a.png")  # sorted between img_00000 and img_00001
    shutil.copy(images[5], added)
    with pytest.raises(RunError, match=r"^data\.source: the inputs of items-000000000000 changed") as info:
        predict(source, out, layout="single", inputs=Inputs(unit_size=4))
    assert "\n" not in str(info.value)
    added.unlink()
    writer = predict(source, out, layout="single", inputs=Inputs(unit_size=4))  # as it was: resumed
    assert writer.summary["num_processed_this_run"] == 4


def test_a_committed_page_past_the_folders_end_now_refuses_the_resume(tmp_path: Path) -> None:
    images = make_images(tmp_path / "images", 12)
    out = str(tmp_path / "out")
    with pytest.raises(CoverageError):  # pages 0 and 1 committed, page 2 not read
        predict(str(tmp_path / "images"), out, layout="single", limit_batches=2, inputs=Inputs(unit_size=4))
    for image in images[4:]:
        image.unlink()
    with pytest.raises(RunError, match=r"^data\.source: unit 1, committed by an earlier attempt, is past") as info:
        predict(str(tmp_path / "images"), out, layout="single", inputs=Inputs(unit_size=4))
    assert "\n" not in str(info.value)


def test_an_unfinished_unit_whose_input_changed_is_redone_whole(tmp_path: Path) -> None:
    source, images = _source(tmp_path, "folder")
    fresh = tmp_path / "fresh"
    out = str(tmp_path / "out")
    with pytest.raises(CoverageError):  # one batch of 2 staged of unit 0 (4 inputs): nothing committed
        predict(source, out, layout="single", limit_batches=1, batch_size=2, inputs=Inputs(unit_size=4))
    _rewrite(images[1], images[5])  # a staged input
    writer = predict(source, out, layout="single", batch_size=2, inputs=Inputs(unit_size=4))
    assert writer.summary["num_processed_this_run"] == 8  # not 6: the staged rows of the old bytes are dropped
    predict(source, str(fresh), layout="single", batch_size=2, inputs=Inputs(unit_size=4))
    assert csv_rows(tmp_path / "out" / "predictions.csv") == csv_rows(fresh / "predictions.csv")
    shutil.rmtree(fresh)


def test_an_unfinished_unit_with_the_same_inputs_is_continued(tmp_path: Path) -> None:
    source, images = _source(tmp_path, "folder")
    out = str(tmp_path / "out")
    with pytest.raises(CoverageError):
        predict(source, out, layout="single", limit_batches=1, batch_size=2, inputs=Inputs(unit_size=4))
    _rewrite(images[5], images[6])  # only an input of the unit not read yet
    writer = predict(source, out, layout="single", batch_size=2, inputs=Inputs(unit_size=4))
    assert writer.summary["num_processed_this_run"] == 6


def test_content_identity_sees_a_rewrite_that_keeps_size_and_date(tmp_path: Path) -> None:
    source, images = _source(tmp_path, "folder")
    out = str(tmp_path / "out")
    reading = Reading(file_identity="content")
    with pytest.raises(CoverageError):
        predict(source, out, layout="single", limit_batches=1, inputs=Inputs(unit_size=4), reading=reading)
    st = images[0].stat()
    data = bytearray(images[0].read_bytes())
    data[-5] ^= 1
    images[0].write_bytes(bytes(data))
    os.utime(images[0], ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(RunError, match=r"the inputs of items-000000000000 changed .*\(content; "):
        predict(source, out, layout="single", inputs=Inputs(unit_size=4), reading=reading)
