"""Nothing outside the output folder is read, written or deleted because a summary, a part record or a manifest says
so, and a merge publishes nothing it has not verified: each case a one-line refusal naming the file, exit 2.

Runs over tar shards (read in units): ``layout: parts`` leaves parts, records and a manifest to tamper with;
``layout: single`` a merged file and its summary."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import make_images
from scale.scale_helpers import csv_rows, write_shards

from lit_infer.checksum import sha256_file
from lit_infer.cli import main
from lit_infer.nets import TinyCNN
from robustness.robust_helpers import REPO, cli_env

COUNTS = [8, 8, 7]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("planted")
    images = make_images(root / "images", sum(COUNTS))
    write_shards(images, root / "shards", COUNTS, labels=False)
    torch.manual_seed(0)
    torch.save(TinyCNN(num_classes=2).state_dict(), root / "w.pt")
    return root


def _args(root: Path, out: Path, **writer: Any) -> list[str]:
    config = {
        "model": {
            "class_path": "lit_infer.ImageClassifier",
            "init_args": {
                "net": {"class_path": "lit_infer.nets.TinyCNN", "init_args": {"num_classes": 2}},
                "weights": str(root / "w.pt"),
                "top_k": 1,
                "preprocessing": {"crop_size": 16, "resize_size": 16},
            },
        },
        "data": {
            "class_path": "lit_infer.ImageDataModule",
            "init_args": {"source": str(root / "shards"), "num_workers": 0, "batch_size": 4},
        },
        "writer": {"output_dir": str(out), "fsync": False, **writer},
        "trainer": {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False},
    }
    path = out.parent / f"{out.name}.yaml"
    path.write_text(json.dumps(config))
    return ["predict", "--config", str(path)]


@pytest.fixture(scope="module")
def parts_run(shards: Path) -> Path:
    out = shards / "parts_run"
    main(_args(shards, out, layout="parts"))
    assert (out / "_SUCCESS").exists()
    return out


def _refused(args: list[str], capsys: pytest.CaptureFixture[str], *names: str) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for name in names:
        assert name in err, err
    return err


def _victims(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "victimdir"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    file = tmp_path / "v" / "victim_file2.csv"
    file.parent.mkdir()
    file.write_text("precious")
    return folder, file


def _intact(folder: Path, file: Path) -> None:
    assert (folder / "thesis.tex").read_text() == "years of work"
    assert file.read_text() == "precious"


# ---- writer.overwrite deletes only the run's own recorded files ------------------------------------------------------
def test_overwrite_refuses_a_planted_summary_on_the_unit_path(
    shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    main(_args(shards, out))  # layout single over tar shards: parts merged into one file
    folder, file = _victims(tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    summary["files"] = {"table": "../victimdir", "x": str(file)}
    (out / "summary.json").write_text(json.dumps(summary))
    _refused([*_args(shards, out), "--writer.overwrite", "true"], capsys, "summary.json", "../victimdir")
    _intact(folder, file)
    assert (out / "predictions.csv").exists() and (out / "summary.json").exists()  # nothing deleted


def test_overwrite_removes_a_unit_runs_own_files(shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    main(_args(shards, out))
    (out / "mine.txt").write_text("mine")
    main([*_args(shards, out, format="jsonl"), "--writer.overwrite", "true"])
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "errors.jsonl",
        "mine.txt",
        "predictions.jsonl",
        "report.html",
        "summary.json",
    ]


@pytest.mark.parametrize("target", ["folder", "absolute", "edited"])
def test_overwrite_refuses_a_planted_part_record(
    target: str, shards: Path, parts_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    shutil.copytree(parts_run, out)
    folder, file = _victims(tmp_path)
    record_file = out / "_parts" / "part-000001.json"
    record = json.loads(record_file.read_text())
    if target == "edited":  # the part's own name, but not the bytes the record names
        (out / record["files"]["table"]).write_text("index,path\n")
        name = record["files"]["table"]
    else:
        name = "../victimdir" if target == "folder" else str(file)
        record["files"]["table"] = name
        record["owned"][name] = {"size": 7, "sha256": "0" * 64}
        record_file.write_text(json.dumps(record))
    before = sorted(p.name for p in out.iterdir())
    _refused([*_args(shards, out, layout="parts"), "--writer.overwrite", "true"], capsys, "part-000001.json", name)
    _intact(folder, file)
    assert sorted(p.name for p in out.iterdir()) == before


def test_a_config_work_dir_is_never_removed_wholesale(
    shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "thesis.tex").write_text("years of work")
    _refused(_args(shards, tmp_path / "out", work_dir=str(scratch)), capsys, "writer.work_dir", "thesis.tex")
    assert (scratch / "thesis.tex").read_text() == "years of work"
    empty = tmp_path / "empty"
    main(_args(shards, tmp_path / "out2", work_dir=str(empty)))
    assert not empty.exists() and (tmp_path / "out2" / "predictions.csv").exists()


# ---- a merge verifies every part before it publishes anything --------------------------------------------------------
def _tamper(out: Path, case: str, tmp_path: Path) -> str:
    """Change the finished run in ``out`` as an attacker would; the name the refusal must give."""
    manifest_file = out / "_manifest.json"
    manifest = json.loads(manifest_file.read_text())
    parts = manifest["parts"]
    if case == "extra_key":
        parts[1]["files"]["../victim/ESCAPED"] = "part-000001.csv"
        named = "part-000001"
    elif case == "absolute_table":
        parts[1]["files"]["table"] = str(tmp_path / "victim" / "secret.csv")
        named = "part-000001"
    elif case == "etc_passwd":  # the record too, as consistently as an attacker can
        record = json.loads((out / "_parts" / "part-000002.json").read_text())
        record["files"]["table"] = "/etc/passwd"
        (out / "_parts" / "part-000002.json").write_text(json.dumps(record))
        parts[2] = record
        named = "/etc/passwd"
    elif case == "truncated":
        table = out / parts[1]["files"]["table"]
        table.write_text("\n".join(table.read_text().splitlines()[:-5]) + "\n")
        named = "part-000001.csv"
    elif case == "truncated_rehashed":  # size and SHA-256 recorded anew: the row count still tells
        table = out / parts[1]["files"]["table"]
        table.write_text("\n".join(table.read_text().splitlines()[:-5]) + "\n")
        record_file = out / "_parts" / "part-000001.json"
        record = json.loads(record_file.read_text())
        record["owned"][table.name] = {"size": table.stat().st_size, "sha256": sha256_file(table)}
        record_file.write_text(json.dumps(record))
        parts[1] = record
        named = "part-000001"
    elif case == "dropped":
        del parts[1]
        named = "part-000001"
    elif case == "duplicated":
        parts.append(parts[1])
        named = "part-000001"
    elif case == "deleted":
        (out / parts[1]["files"]["table"]).unlink()
        named = "part-000001.csv"
    else:
        raise AssertionError(case)
    manifest_file.write_text(json.dumps(manifest))
    return named


CASES = [
    "extra_key",
    "absolute_table",
    "etc_passwd",
    "truncated",
    "truncated_rehashed",
    "dropped",
    "duplicated",
    "deleted",
]


@pytest.mark.parametrize("case", CASES)
def test_merge_refuses_a_tampered_run(
    case: str, parts_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    shutil.copytree(parts_run, out)
    (tmp_path / "victim").mkdir()
    named = _tamper(out, case, tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    err = _refused(["merge", str(out)], capsys, named, "nothing was published")
    assert "root:" not in err  # no line of /etc/passwd quoted
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # nothing published or deleted
    assert list((tmp_path / "victim").iterdir()) == []
    assert not (tmp_path / "ESCAPED.npy").exists()


def test_merge_of_an_untouched_run_is_every_input_once(parts_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(parts_run, out)
    main(["merge", str(out)])
    rows = csv_rows(out / "predictions.csv")
    assert [int(r["index"]) for r in rows] == list(range(sum(COUNTS)))


@pytest.mark.slow
def test_merge_refusal_through_the_real_command(parts_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(parts_run, out)
    named = _tamper(out, "truncated", tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "lit_infer", "merge", str(out)],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and named in proc.stderr, proc.stderr
    assert not (out / "predictions.csv").exists()


def test_a_records_folder_linked_elsewhere_is_refused(
    parts_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    shutil.copytree(parts_run, out)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(out / "_parts", elsewhere)
    (out / "_parts").symlink_to(elsewhere)
    _refused(["merge", str(out)], capsys, "_parts", "link")
    assert not (out / "predictions.csv").exists()
