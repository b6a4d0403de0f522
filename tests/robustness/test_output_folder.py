"""lit_infer deletes only what it wrote, inside ``output_dir``; one run per output folder at a time; a full or
read-only disk, a damaged record and colliding names are one line, and committed work is kept."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import make_images

from lit_infer.cli import main
from lit_infer.nets import TinyCNN
from lit_infer.output.lock import LOCK_NAME, FolderLock
from robustness.robust_helpers import classifier_config, kill_group, run_cli, save_weights, start_cli, wait_for_commits


def _args(tmp_path: Path, out: Path | str, n: int = 6, **writer: object) -> list[str]:
    weights = tmp_path / "w.pt"
    if not weights.exists():
        torch.manual_seed(0)
        torch.save(TinyCNN(num_classes=2).state_dict(), weights)
        make_images(tmp_path / "images", n)
    config = {
        "model": {
            "class_path": "lit_infer.ImageClassifier",
            "init_args": {
                "net": {"class_path": "lit_infer.nets.TinyCNN", "init_args": {"num_classes": 2}},
                "weights": str(weights),
                "top_k": 1,
                "preprocessing": {"crop_size": 16, "resize_size": 16},
            },
        },
        "data": {
            "class_path": "lit_infer.ImageDataModule",
            "init_args": {"source": str(tmp_path / "images"), "num_workers": 0, "batch_size": 2},
        },
        "writer": {"output_dir": str(out), **writer},
        "trainer": {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False},
    }
    (tmp_path / "c.yaml").write_text(json.dumps(config))
    return ["predict", "--config", str(tmp_path / "c.yaml")]


def _fails(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) <= 3, err
    return err


@pytest.mark.parametrize("planted", ["../victim/keep.txt", "thesis.csv", "link.csv", "absolute"])
def test_overwrite_never_deletes_what_a_planted_summary_names(
    planted: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    main(_args(tmp_path, out))
    victim = tmp_path / "victim" / "keep.txt"
    victim.parent.mkdir()
    victim.write_text("precious")
    (out / "thesis.csv").write_text("mine")
    (out / "link.csv").symlink_to(victim)
    summary = json.loads((out / "summary.json").read_text())
    name = str(victim) if planted == "absolute" else planted
    summary["files"]["x"] = name
    summary["owned"][name] = {"size": 8, "sha256": "0" * 64}
    (out / "summary.json").write_text(json.dumps(summary))
    before = sorted(p.name for p in out.iterdir())
    err = _fails([*_args(tmp_path, out), "--writer.overwrite", "true"], capsys)
    assert "summary.json" in err and repr(name) in err and "nothing was deleted" in err
    assert victim.read_text() == "precious" and (out / "thesis.csv").read_text() == "mine"
    assert (out / "link.csv").is_symlink() and sorted(p.name for p in out.iterdir()) == before


def test_overwrite_removes_the_earlier_runs_own_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    main(_args(tmp_path, out, format="jsonl"))
    main([*_args(tmp_path, out, format="csv"), "--writer.overwrite", "true"])
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [LOCK_NAME, ".lit_infer_report", "errors.jsonl", "predictions.csv", "report.html", "summary.json"]
    )


@pytest.mark.slow
def test_a_work_dir_with_other_files_or_equal_to_the_output_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scratch = tmp_path / "s"
    scratch.mkdir()
    (scratch / "thesis.tex").write_text("years of work")
    err = _fails(_args(tmp_path, tmp_path / "out", work_dir=str(scratch)), capsys)
    assert "writer.work_dir=" in err and "thesis.tex" in err
    assert (scratch / "thesis.tex").read_text() == "years of work"
    err = _fails(_args(tmp_path, tmp_path / "out", work_dir=str(tmp_path / "out")), capsys)
    assert "writer.work_dir=" in err and "output folder itself" in err
    empty = tmp_path / "scratch"
    main(_args(tmp_path, tmp_path / "out2", work_dir=str(empty)))
    assert not empty.exists()  # only lit_infer's files were in it: gone, and the folder with them


@pytest.mark.parametrize(("filename", "fmt"), [("errors", "jsonl"), ("part-000", "csv"), (".hidden", "csv")])
def test_output_names_cannot_collide(
    filename: str, fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _fails(_args(tmp_path, tmp_path / "out", filename=filename, format=fmt), capsys)
    assert f"writer.filename={filename!r}" in err


@pytest.mark.parametrize("case", ["empty", "file"])
def test_output_dir_empty_or_a_file_is_one_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "a_file"
    target.write_text("x")
    err = _fails(_args(tmp_path, "" if case == "empty" else target), capsys)  # type: ignore[arg-type]
    assert "writer.output_dir=" in err
    assert target.read_text() == "x"


def test_a_damaged_summary_is_one_line_and_overwrite_recovers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    main(_args(tmp_path, out))
    summary = out / "summary.json"
    summary.write_text(summary.read_text()[:40])
    err = _fails(_args(tmp_path, out), capsys)
    assert "summary.json" in err and "damaged" in err and "writer.overwrite" in err
    main([*_args(tmp_path, out), "--writer.overwrite", "true"])
    assert json.loads(summary.read_text())["num_items"] == 6


def test_a_finished_rerun_leaves_no_work_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    main(_args(tmp_path, out))
    main(_args(tmp_path, out))
    assert not (out / ".lit_infer").exists()


@pytest.mark.slow
def test_a_held_folder_is_refused_naming_the_holder_and_freed_when_it_dies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    held = FolderLock(str(out))
    held.acquire()
    try:
        err = _fails(_args(tmp_path, out), capsys)
    finally:
        held.release()
    assert f"writer.output_dir={str(out)!r} is in use" in err and f"pid {os.getpid()}" in err
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing read or written
    code = f"from lit_infer.output.lock import FolderLock; FolderLock({str(out)!r}).acquire(); print('held', flush=True); import time; time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
    assert "is in use" in _fails(_args(tmp_path, out), capsys)
    holder.kill()  # kill -9: the kernel drops its lock
    holder.wait()
    main(_args(tmp_path, out))
    assert len((out / "predictions.csv").read_text().splitlines()) == 1 + 6


@pytest.mark.slow
def test_two_runs_into_one_folder_one_is_refused_and_the_other_finishes(tmp_path: Path) -> None:
    images = tmp_path / "images"
    make_images(images, 24)
    out = tmp_path / "out"
    config = classifier_config(tmp_path / "c.json", images, out, save_weights(tmp_path / "w.pt"), delay_s=0.2)
    first = start_cli(["--config", str(config)], tmp_path / "first.log")
    try:
        wait_for_commits(first, out, 2)
        os.kill(first.pid, signal.SIGSTOP)  # mid-run, holding the folder, for as long as the second run takes
        rc, log = run_cli(["--config", str(config)], tmp_path / "second.log")
        os.kill(first.pid, signal.SIGCONT)
        assert rc == 2 and f"pid {first.pid}" in log and "is in use" in log, log
        assert first.wait(timeout=120) == 0, (tmp_path / "first.log").read_text()[-2000:]
    finally:
        kill_group(first)
    assert len((out / "predictions.csv").read_text().splitlines()) == 1 + 24


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode()[-200:]}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.slow
def test_a_full_disk_says_so_keeps_committed_work_and_the_rerun_finishes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _args(tmp_path, tmp_path / "disk" / "out", n=40)
    with _tmpfs(tmp_path / "disk", "64k") as disk:
        filler = disk / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as f:
            f.write(b"\0" * 64 * 1024)  # fill it up ...
        filler.write_bytes(b"\0" * (len(filler.read_bytes()) - 28 * 1024))  # ... but for 28 kB (a page per file)
        err = _fails(args, capsys)
        assert "the disk is full" in err and "committed so far is kept" in err
        committed = sorted((disk / "out" / ".lit_infer" / "stages").glob("u*.json"))
        assert committed
        filler.unlink()
        main(args)
        assert len((disk / "out" / "predictions.csv").read_text().splitlines()) == 1 + 40


@pytest.mark.slow
def test_a_read_only_output_folder_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with _tmpfs(tmp_path / "ro", "1m") as disk:
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        err = _fails(_args(tmp_path, disk / "out"), capsys)
    assert "read-only" in err and "writer.output_dir=" in err
