"""Atomic files: the final name holds a whole file or nothing; a symlink there is replaced, never followed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lit_infer.atomic import atomic_open, read_json, remove_stale_temps, replace, temp_name, write_json


def test_success_renames_into_place_and_leaves_no_temp(tmp_path: Path) -> None:
    final = tmp_path / "out.csv"
    with atomic_open(str(final), "w", encoding="utf-8") as f:
        f.write("a,b\n")
        assert not final.exists()  # nothing under the final name while writing
        assert Path(temp_name(str(final))).exists()
    assert final.read_text() == "a,b\n"
    assert os.listdir(tmp_path) == ["out.csv"]


def test_an_error_keeps_the_old_file_and_removes_the_temp(tmp_path: Path) -> None:
    final = tmp_path / "out.csv"
    final.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(str(final), "w", durable=False) as f:
        f.write("half of the new")
        raise RuntimeError("killed")
    assert final.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.csv"]


def test_a_symlink_at_the_final_name_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "summary.json"
    os.symlink(victim, link)
    write_json(str(link), {"a": 1})
    assert victim.read_text() == "keep me"
    assert not link.is_symlink()
    assert read_json(str(link)) == {"a": 1}


def test_write_json_is_sorted_and_readable(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    write_json(str(path), {"b": [1, 2], "a": "x"}, durable=False)
    assert path.read_text().startswith('{\n  "a": "x"')
    assert read_json(str(path)) == {"a": "x", "b": [1, 2]}


def test_replace_and_temp_name(tmp_path: Path) -> None:
    tmp = temp_name(str(tmp_path / "f.bin"))
    assert os.path.dirname(tmp) == str(tmp_path) and os.path.basename(tmp).startswith(".f.bin.tmp-")
    Path(tmp).write_bytes(b"x")
    replace(tmp, str(tmp_path / "f.bin"))
    assert (tmp_path / "f.bin").read_bytes() == b"x" and not Path(tmp).exists()


def test_exclusive_keeps_the_first_file_published(tmp_path: Path) -> None:
    final = str(tmp_path / "images.u8")
    with atomic_open(final, "wb", exclusive=True) as f:
        f.write(b"first")
    with atomic_open(final, "wb", exclusive=True) as f:  # a second rank racing to create the same file
        f.write(b"second")
    assert Path(final).read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["images.u8"]


def test_stale_temps_are_removed_and_a_shared_folder_keeps_live_writers_temps(tmp_path: Path) -> None:
    dead = tmp_path / ".out.csv.tmp-999999999"  # no such process
    live = tmp_path / f".cache.u8.tmp-{os.getpid()}"
    user = tmp_path / ".notes.tmp-draft"  # not one of ours: the suffix is no pid
    for p in (dead, live, user):
        p.write_text("x")
    remove_stale_temps(str(tmp_path), shared=True)
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, user.name])
    remove_stale_temps(str(tmp_path))
    assert os.listdir(tmp_path) == [user.name]
