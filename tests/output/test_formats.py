"""Output formats: csv, jsonl, parquet and npy sinks, formula escaping, and unknown formats refused."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from lit_infer.errors import ConfigError
from lit_infer.output.formats import FORMATS, Sink, check_format, escape_formula, output_files

SCHEMA = {
    "pred": (np.dtype(np.int64), ()),
    "score": (np.dtype(np.float32), ()),
    "label": (np.dtype("<U8"), ()),
    "topk_label": (np.dtype("<U8"), (2,)),
    "emb": (np.dtype(np.float32), (3,)),
}


def _chunk(indices: list[int]) -> tuple[np.ndarray, list[str], dict[str, np.ndarray]]:
    idx = np.array(indices, dtype=np.int64)
    return (
        idx,
        [f"d/{i}.png" for i in indices],
        {
            "pred": idx * 10,
            "score": np.array([0.1 * i for i in indices], dtype=np.float32),
            "label": np.array([f"c{i}" for i in indices]),
            "topk_label": np.array([[f"c{i}", f"k{i}"] for i in indices]),
            "emb": np.stack([idx, idx + 0.5, -idx], axis=1).astype(np.float32),
        },
    )


def _write(fmt: str, directory: Path, n: int = 5) -> dict[str, str]:
    sink = Sink(fmt, str(directory), "predictions", SCHEMA, n)
    sink.write(*_chunk([0, 1, 2]))
    assert not any(Path(p).exists() for p in sink.files.values())  # nothing final before commit
    sink.write(*_chunk(list(range(3, n))))
    files = sink.commit()
    assert sorted(os.listdir(directory)) == sorted(os.path.basename(p) for p in files.values())  # no temp left
    return files


def test_csv(tmp_path: Path) -> None:
    files = _write("csv", tmp_path)
    with open(files["table"], newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == [
        "index",
        "path",
        "pred",
        "score",
        "label",
        "topk_label_1",
        "topk_label_2",
        "emb_1",
        "emb_2",
        "emb_3",
    ]
    assert rows[2] == ["1", "d/1.png", "10", "0.1", "c1", "c1", "k1", "1.0", "1.5", "-1.0"]
    assert [r[0] for r in rows[1:]] == ["0", "1", "2", "3", "4"]
    # float32 printed at its own precision (0.3, not 0.30000001192092896).
    assert rows[4][3] == "0.3"


def test_jsonl(tmp_path: Path) -> None:
    files = _write("jsonl", tmp_path)
    rows = [json.loads(line) for line in Path(files["table"]).read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(5))
    assert rows[3] == {
        "index": 3,
        "path": "d/3.png",
        "pred": 30,
        "score": 0.3,
        "label": "c3",
        "topk_label": ["c3", "k3"],
        "emb": [3.0, 3.5, -3.0],
    }


def test_parquet(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    files = _write("parquet", tmp_path)
    table = pq.read_table(files["table"]).to_pydict()
    assert table["index"] == list(range(5))
    assert table["path"][4] == "d/4.png"
    assert table["topk_label"][2] == ["c2", "k2"]
    assert table["emb"][1] == [1.0, 1.5, -1.0]
    assert table["score"][3] == pytest.approx(0.3)


def test_npy_arrays_beside_a_table(tmp_path: Path) -> None:
    files = _write("npy", tmp_path)
    assert set(files) == {"table", "emb"}  # numeric vectors become arrays; string vectors stay in the table
    emb = np.load(files["emb"])
    assert emb.dtype == np.float32 and emb.shape == (5, 3)
    assert emb[:, 0].tolist() == [0, 1, 2, 3, 4]
    with open(files["table"], newline="") as f:
        header = next(csv.reader(f))
    assert header == ["index", "path", "pred", "score", "label", "topk_label_1", "topk_label_2"]


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    sink = Sink("npy", str(tmp_path), "predictions", SCHEMA, 5)
    sink.write(*_chunk([0, 1]))
    sink.abort()
    assert os.listdir(tmp_path) == []


def test_formula_cells_are_escaped_in_csv(tmp_path: Path) -> None:
    assert escape_formula("=cmd|' /C calc'!A0") == "'=cmd|' /C calc'!A0"
    assert escape_formula("@SUM(A1)") == "'@SUM(A1)"
    assert escape_formula("normal.png") == "normal.png"
    assert escape_formula(-1.5) == -1.5  # numbers are numbers
    schema = {"label": (np.dtype("<U16"), ())}
    sink = Sink("csv", str(tmp_path), "p", schema, 2)
    sink.write(np.array([0, 1]), ["=HYPERLINK(x).png", "+1.png"], {"label": np.array(["-2+3", "ok"])})
    sink.commit()
    with open(tmp_path / "p.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[1] == ["0", "'=HYPERLINK(x).png", "'-2+3"]
    assert rows[2] == ["1", "'+1.png", "ok"]


def test_output_files_and_check_format(tmp_path: Path) -> None:
    assert output_files("jsonl", "o", "p", SCHEMA) == {"table": os.path.join("o", "p.jsonl")}
    assert set(output_files("npy", "o", "p", SCHEMA)) == {"table", "emb"}
    for fmt in FORMATS:
        if fmt != "parquet":
            check_format(fmt)
    with pytest.raises(ConfigError) as info:
        check_format("xlsx")
    assert info.value.key == "writer.format"
    assert "csv" in str(info.value) and "'xlsx'" in str(info.value)


def test_ragged_columns_are_lists_in_every_table_format_and_refused_by_npy(tmp_path: Path) -> None:
    from lit_infer.ragged import ragged

    schema = {"boxes": (np.dtype(np.float32), (-1, 2)), "labels": (np.dtype(np.int64), (-1,))}
    boxes = ragged([np.array([[0.1, 2.5]], np.float32), np.zeros((0, 2), np.float32)])
    labels = ragged([np.array([3]), np.zeros(0, np.int64)])
    want = [([[0.1, 2.5]], [3]), ([], [])]
    for fmt in ("csv", "jsonl", "parquet"):
        os.makedirs(tmp_path / fmt)
        sink = Sink(fmt, str(tmp_path / fmt), "p", schema, 2)
        sink.write(np.array([0, 1]), ["a", "b"], {"boxes": boxes, "labels": labels})
        table = sink.commit()["table"]
        if fmt == "csv":
            with open(table, newline="") as f:
                rows = [(json.loads(r["boxes"]), json.loads(r["labels"])) for r in csv.DictReader(f)]
        elif fmt == "jsonl":
            rows = [(r["boxes"], r["labels"]) for r in map(json.loads, Path(table).read_text().splitlines())]
        else:
            import pyarrow.parquet as pq

            rows = [(r["boxes"], r["labels"]) for r in pq.read_table(table).to_pylist()]
        rows = [([[round(v, 6) for v in b] for b in bs], ls) for bs, ls in rows]
        assert rows == want, fmt
    with pytest.raises(ConfigError, match=r"writer\.format='npy': column 'boxes' has a varying number"):
        Sink("npy", str(tmp_path), "p", schema, 2)
