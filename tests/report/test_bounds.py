"""The report is bounded, survives what is missing or hostile, and never fails the run that makes it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from lit_infer.callbacks.timings import MAX_ROWS, BatchTimings
from lit_infer.report import report_at_end, write_report
from lit_infer.report.build import context
from lit_infer.report.reading import inside, read_run
from lit_infer.report.speed import speed
from tests.report.conftest import write_run

BOUND = 1_000_000


@pytest.mark.slow
def test_many_classes_give_the_most_confused_pairs_and_a_bounded_file(run_dir: Path) -> None:
    write_run(run_dir, n=5000, classes=300, images=30, failures=2000)
    path = write_report(str(run_dir))
    size = os.path.getsize(path)
    assert size < BOUND, size
    section = context(read_run(str(run_dir)))["labelled"]
    assert section["confusion_plot"] is None and 0 < len(section["pairs"]) <= 20
    assert len(section["classes"]) == 100 and "lowest F1" in section["classes_note"]
    assert len(section["mistakes"]) == 24


def test_a_hostile_manifest_reads_nothing_outside_the_output_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    (out / "parts").mkdir(parents=True)
    secret = tmp_path / "secret.csv"
    secret.write_text("index,path,pred,score\n0,SECRET-OUTSIDE,1,0.5\n", encoding="utf-8")
    (out / "parts" / "link.csv").symlink_to(secret)
    parts = [
        {"ordinal": 0, "files": {"table": "../secret.csv", "errors": "../secret.csv"}},
        {"ordinal": 1, "files": {"table": str(secret)}},
        {"ordinal": 2, "files": {"table": "parts/link.csv", "x": "parts/../../secret.csv"}},
        "not a part",
    ]
    manifest = {"format": "csv", "parts": parts, "failed_units": [{"unit": "a.tar", "error": "truncated"}]}
    (out / "_manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    summary = {"files": {"manifest": "_manifest.json"}, "num_items": 3, "num_predicted": 0, "num_failed": 1}
    (out / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    html = Path(write_report(str(out))).read_text(encoding="utf-8")
    assert "SECRET-OUTSIDE" not in html
    assert html.count("is missing or not inside the output folder") >= 3
    assert "UnitReadError" in html and "a.tar" in html


@pytest.mark.parametrize(
    "name", ["../x", "/etc/passwd", "a/../../x", "", "a//b", "a\\b", None, 3, "parts/..", "parts/./../../x"]
)
def test_inside_refuses_names_that_leave_the_folder(tmp_path: Path, name: object) -> None:
    assert inside(str(tmp_path), name) is None


def test_a_run_without_timings_run_info_or_jinja2_still_finishes(run_dir: Path, monkeypatch) -> None:
    write_run(run_dir, n=40, classes=3, top_k=3)
    ctx = context(read_run(str(run_dir)))
    assert ctx["speed"] is None and dict(ctx["run_rows"])["command line"] == "not recorded"
    assert report_at_end(str(run_dir)) == f"  report: {run_dir / 'report.html'}"
    monkeypatch.setitem(sys.modules, "jinja2", None)
    line = report_at_end(str(run_dir))
    assert line.count("\n") == 0 and "pip install 'lit_infer[report]'" in line
    (run_dir / "summary.json").write_text("{broken", encoding="utf-8")
    monkeypatch.delitem(sys.modules, "jinja2")
    assert report_at_end(str(run_dir)).startswith("  report: not made (RunError")


def test_timings_stay_bounded_however_many_batches(tmp_path: Path) -> None:
    recorder = BatchTimings()
    recorder.folder, recorder._meta = str(tmp_path), {"rank": 0, "world_size": 1, "attempt": 1}
    for _ in range(3 * MAX_ROWS + 5):
        recorder.on_predict_batch_start(None, None, None, 0)
        recorder.on_predict_batch_end(None, None, None, None, 0)
    assert len(recorder._rows) <= MAX_ROWS and recorder._per_row == 4
    recorder.on_predict_end(None, None)
    record = json.loads((tmp_path / "timings-rank0.json").read_text(encoding="utf-8"))
    assert len(record["rows"]) == len(recorder._rows) + 1  # and the last, partly filled row


def _two_rank_run(run_dir: Path, timings: dict[int, list[list[float]]], **record: object) -> None:
    """A run of two ranks with these per-batch timing rows per rank (rank 2: a stale file of a larger attempt)."""
    write_run(run_dir, n=40, classes=3, top_k=3)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    summary["world_size"] = 2
    (run_dir / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    folder = run_dir / ".lit_infer_report"
    folder.mkdir()
    for rank, rows in timings.items():
        data = {"rank": rank, "world_size": 2, "attempt": 2, "rows": rows, "batches_per_row": 1, **record}
        data.update({"process_started_at": 100.0, "predict_started_at": 103.0 + rank})
        (folder / f"timings-rank{rank}.json").write_text(json.dumps(data), encoding="utf-8")


def test_speed_reads_each_rank_and_leaves_out_stale_files(run_dir: Path) -> None:
    _two_rank_run(run_dir, {rank: [[0.5 * (i + 1), 8, 0.1, 0.4] for i in range(30)] for rank in (0, 1, 2)})
    result = speed(read_run(str(run_dir)))
    assert [r["rank"] for r in result["ranks"]] == [0, 1]
    first = result["ranks"][0]
    assert first["images"] == 240 and first["batches"] == 30 and first["startup"] == 3.5
    assert first["steady"] == pytest.approx(8 * 29 / 14.5, abs=0.1) and first["wait_share"] == 20
    assert result["plot"].count("<polyline") == 2


def test_a_rank_that_read_nothing_has_its_row_and_the_report_is_made(run_dir: Path) -> None:
    # Under leasing a rank may read no unit at all (a run smaller than the group): its timings have no rows.
    _two_rank_run(run_dir, {0: [], 1: [[0.5, 8, 0.1, 0.4], [1.0, 8, 0.1, 0.4]]}, device="cpu")
    idle = speed(read_run(str(run_dir)))["ranks"][0]
    assert idle["images"] == 0 and idle["batches"] == 0 and idle["device"] == "cpu"
    html = Path(write_report(str(run_dir))).read_text(encoding="utf-8")
    assert "<td>0</td><td>" in html and "None" not in html


def test_a_folder_that_cannot_be_written_stops_the_recording_not_the_run(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder", encoding="utf-8")
    recorder = BatchTimings()
    recorder.folder, recorder._meta = str(blocked / "report"), {"rank": 0}
    recorder.on_predict_batch_start(None, None, None, 0)
    recorder.on_predict_batch_end(None, None, None, None, 0)
    recorder.on_predict_end(None, None)
    assert recorder.folder is None and blocked.read_text(encoding="utf-8") == "not a folder"


def test_lit_infer_report_on_a_folder_without_a_run_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    from lit_infer.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["report", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "no summary.json" in err


def test_credentials_in_the_config_or_command_line_never_reach_the_report() -> None:
    from lit_infer.callbacks.timings import redact, redact_argv

    config = "storage_options:\n  key: AKIA1\n  secret: s3cr3t\n  token: null\n  anon: false\nlabel_key: cls\n"
    assert redact(config) == (
        "storage_options:\n  key: '***'\n  secret: '***'\n  token: null\n  anon: false\nlabel_key: cls\n"
    )
    argv = ["lit-infer", "--data.reading.storage_options", '{"key": "AKIA1", "secret": "s\\"x", "anon": false}']
    argv += [
        "--data.reading.storage_options.token",
        "TOK",
        "--writer.storage_options.secret=S2",
        "--data.source",
        "a.txt",
    ]
    shown = " ".join(redact_argv(argv))
    assert not any(s in shown for s in ("AKIA1", 's\\"x', "TOK", "S2")) and "a.txt" in shown and "anon" in shown


def test_a_report_html_lit_infer_did_not_write_is_left_alone(run_dir: Path) -> None:
    write_run(run_dir, n=30, classes=3, top_k=3)
    write_report(str(run_dir))
    write_report(str(run_dir))  # its own report: replaced
    (run_dir / "report.html").write_text("<p>my notes</p>", encoding="utf-8")
    line = report_at_end(str(run_dir))
    assert "is not a report lit_infer wrote" in line and line.count("\n") == 0
    assert (run_dir / "report.html").read_text(encoding="utf-8") == "<p>my notes</p>"
