"""Hostile paths: list entries with ``..``, absolute paths outside a declared root and escaping symlinks are refused
one by one (never read, recorded as errors); a symlink where a shard goes is not followed; CSV cells that a
spreadsheet would run as formulas are escaped, numbers left alone."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import make_images, quiet_trainer
from data.source_helpers import discover

from lit_infer.callbacks import PredictionWriter
from lit_infer.data import ImageDataModule, Inputs
from lit_infer.data.sources import check_paths
from lit_infer.data.storage import Storage
from lit_infer.errors import ConfigError
from lit_infer.modules import ImageClassifier
from lit_infer.nets import TinyCNN
from lit_infer.output.formats import escape_formula
from lit_infer.output.parts import PartWriter, stage_name
from lit_infer.preprocessing import Preprocessing
from lit_infer.records import Predictions, UnitMark

P = Preprocessing(crop_size=16, resize_size=16)


def _layout(tmp_path: Path) -> Path:
    """lists/{a.png, b.png, inside_link.png -> a.png, escape_link.png -> ../secret/s.png}, secret/s.png."""
    lists = tmp_path / "lists"
    images = make_images(lists, 2)
    secret = make_images(tmp_path / "secret", 1, seed=5)[0]
    (lists / "inside_link.png").symlink_to(images[0])
    (lists / "escape_link.png").symlink_to(secret)
    entries = [
        "img_00000.png",  # 0 fine
        "../secret/img_00000.png",  # 1 '..'
        "inside_link.png",  # 2 a symlink that stays inside: fine
        "escape_link.png",  # 3 a symlink out of the list's folder
        str(secret),  # 4 absolute: fine unless a root is declared
        "sub/../img_00001.png",  # 5 '..' even when it would land inside
        "img_00001.png",  # 6 fine
    ]
    (lists / "files.txt").write_text("\n".join(entries) + "\n")
    return lists / "files.txt"


def test_list_entries_escaping_the_root_are_rejected_one_by_one(tmp_path: Path) -> None:
    lst = _layout(tmp_path)
    items = discover(lst)
    assert len(items) == 7  # every entry keeps its index
    assert [i for i, _ in items.rejected] == [1, 3, 5]
    assert "'..'" in dict(items.rejected)[1] and "outside" in dict(items.rejected)[3]
    declared = discover(lst, root=tmp_path / "lists")
    assert [i for i, _ in declared.rejected] == [1, 3, 4, 5]  # the absolute path is outside the declared root
    wider = discover(lst, root=tmp_path)
    assert [i for i, _ in wider.rejected] == [1, 5]  # '..' stays refused; the rest lies inside tmp_path
    assert discover(lst, path_policy="allow").rejected == []
    with pytest.raises(ConfigError, match=r"data\.reading\.path_policy"):
        check_paths(["a.png"], tmp_path, None, "sometimes")  # type: ignore[arg-type]


def test_symlinks_in_a_folder_source_are_read_unless_a_root_fences_them(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    inside = make_images(folder, 2)
    secret = make_images(tmp_path / "secret", 1, seed=3)[0]
    (folder / "a_escape.png").symlink_to(secret)
    (folder / "b_inside.png").symlink_to(inside[1])
    (folder / "linked_dir").symlink_to(tmp_path / "secret", target_is_directory=True)  # never walked
    items = discover(folder)
    names = [Path(p).name for p in items.paths]
    assert names == ["a_escape.png", "b_inside.png", "img_00000.png", "img_00001.png"]
    assert items.rejected == []  # the folder the user named: its links are read, as ImageFolder reads them
    assert [i for i, _ in discover(folder, root=folder).rejected] == [0]  # a declared root fences them in
    assert discover(folder, root=tmp_path).rejected == []  # a declared root that holds the target
    assert discover(folder, path_policy="allow", root=folder).rejected == []


def test_a_folder_of_symlinks_to_a_dataset_elsewhere_is_predicted(tmp_path: Path) -> None:
    """A curated subset: every image a symlink into another folder. Every one is predicted, none is an error; a link
    to a FIFO is still refused from its stat, never opened."""
    dataset = make_images(tmp_path / "dataset", 6, classes=2)
    subset = tmp_path / "subset"
    for image in dataset[::2]:
        (subset / image.parent.name).mkdir(parents=True, exist_ok=True)
        (subset / image.parent.name / image.name).symlink_to(image)
    os.mkfifo(tmp_path / "dataset" / "pipe.png")
    (subset / "class_0" / "zz_pipe.png").symlink_to(tmp_path / "dataset" / "pipe.png")
    module = ImageClassifier(net=TinyCNN(2, 4, 2), class_names=["class_0", "class_1"])
    data = ImageDataModule(subset, batch_size=2, num_workers=0, preprocessing=P)
    writer = PredictionWriter(tmp_path / "out")
    quiet_trainer(writer).predict(module, datamodule=data, return_predictions=False)
    rows = list(csv.DictReader((tmp_path / "out" / "predictions.csv").open()))
    assert sorted(Path(r["path"]).name for r in rows) == sorted(p.name for p in dataset[::2])
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert [(Path(e["path"]).name, e["error_type"]) for e in errors] == [("zz_pipe.png", "NotARegularFile")]


def test_rejected_entries_are_error_records_and_never_read(tmp_path: Path) -> None:
    lst = _layout(tmp_path)
    module = ImageClassifier(net=TinyCNN(4, 4, 2))
    data = ImageDataModule(lst, batch_size=3, num_workers=0, preprocessing=P)
    trainer = quiet_trainer(PredictionWriter(tmp_path / "out"))
    trainer.predict(module, datamodule=data, return_predictions=False)
    rows = list(csv.DictReader((tmp_path / "out" / "predictions.csv").open()))
    assert [int(r["index"]) for r in rows] == [0, 2, 4, 6]
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert [(e["index"], e["error_type"]) for e in errors] == [
        (1, "RejectedPath"),
        (3, "RejectedPath"),
        (5, "RejectedPath"),
    ]
    assert errors[0]["path"].endswith("../secret/img_00000.png")  # as the list named it


def test_a_symlink_planted_where_a_stage_goes_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    work = tmp_path / "work"
    work.mkdir()
    (work / stage_name(0, 1, 0)).symlink_to(victim)
    writer = PartWriter(Storage(str(tmp_path / "out")), str(work), "csv", 1, 0, "digest", fsync=False)
    with pytest.raises(OSError):
        writer.append(Predictions([0], ["a.png"], {"pred": np.zeros(1)}), UnitMark("u", 0))
    assert victim.read_text() == "precious"


def test_formula_looking_cells_are_escaped_in_csv_and_numbers_are_not(tmp_path: Path) -> None:
    names = ["=HYPERLINK(evil)", "+cmd", "-2+3", "@SUM(A1)"]
    for i, name in enumerate(names):
        make_images(tmp_path / "images" / name, 2, seed=i)
    (tmp_path / "images" / "=HYPERLINK(evil)" / "=1+1.png").write_bytes(
        (tmp_path / "images" / "+cmd" / "img_00000.png").read_bytes()
    )
    net = TinyCNN(4, 4, 2)
    net.classifier.bias.data.fill_(-100.0)  # every logit negative: numbers that start with '-'
    module = ImageClassifier(net=net, score="logits", top_k=2)
    data = ImageDataModule(
        tmp_path / "images", batch_size=4, num_workers=0, preprocessing=P, inputs=Inputs(labels_from_folders=True)
    )
    trainer = quiet_trainer(PredictionWriter(tmp_path / "out"))
    trainer.predict(module, datamodule=data, return_predictions=False)
    rows = list(csv.DictReader((tmp_path / "out" / "predictions.csv").open()))
    labels = {r["label"] for r in rows} | {r["topk_label_2"] for r in rows}
    assert labels <= {"'" + n for n in names} and labels & {"'" + n for n in names}
    assert all(not r["label"].startswith(("=", "+", "-", "@")) for r in rows)
    scores = [float(r["score"]) for r in rows] + [float(r["topk_score_2"]) for r in rows]
    assert any(s < 0 for s in scores)  # negative numbers stay numbers, unescaped
    assert all(not r["score"].startswith("'") for r in rows)
    for dangerous in ("=1", "+1", "-x", "@x", "\tx", "\rx"):
        assert escape_formula(dangerous) == "'" + dangerous
    assert escape_formula(-1.5) == -1.5 and escape_formula("a=b") == "a=b"
