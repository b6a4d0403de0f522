"""Discovery of a source's images: folders, .txt lists, .csv tables, and the errors for a bad source."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from data.source_helpers import discover
from lit_infer.data import ImageDataModule, Inputs, Reading
from lit_infer.errors import ConfigError
from lit_infer.records import NO_LABEL


def _touch_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (10, 20, 30)).save(path, format="PNG")
    return path


def test_folder_is_recursive_sorted_and_filtered(tmp_path: Path) -> None:
    for rel in ["b.png", "a.PNG", "z/c.jpg", "m/n/d.jpeg", "notes.txt", "m/readme.md", "c.bmp"]:
        _touch_image(tmp_path / rel)
    items = discover(tmp_path)
    rel = [os.path.relpath(p, tmp_path) for p in items.paths]
    # Sorted by relative path (case-sensitive, as os sorts it), recursive, non-images left out.
    assert rel == sorted(["a.PNG", "b.png", "c.bmp", os.path.join("m", "n", "d.jpeg"), os.path.join("z", "c.jpg")])
    # Top-level images: no class structure, so no labels.
    assert items.class_names is None
    assert items.labels == [NO_LABEL] * 5

    only_png = discover(tmp_path, extensions=[".png"])
    assert [os.path.basename(p) for p in only_png.paths] == ["a.PNG", "b.png"]


def test_folder_order_is_stable_across_calls(tmp_path: Path) -> None:
    names = [f"img_{i}.png" for i in (10, 2, 1, 33, 4)]
    for name in names:
        _touch_image(tmp_path / name)
    assert discover(tmp_path).paths == discover(tmp_path).paths
    assert [os.path.basename(p) for p in discover(tmp_path).paths] == sorted(names)


def test_class_subfolders_give_labels(image_folder: Path) -> None:
    items = discover(image_folder)
    assert items.class_names == ["class_0", "class_1"]
    assert len(items) == 23
    for path, label in zip(items.paths, items.labels, strict=True):
        assert Path(path).parent.name == f"class_{label}"
    # All of class_0 first, then class_1, each sorted.
    assert items.labels == sorted(items.labels)
    assert items.labels.count(0) == 12 and items.labels.count(1) == 11


def test_class_labels_can_be_turned_off_and_mixed_trees_get_none(image_folder: Path) -> None:
    assert discover(image_folder, labels_from_folders=False).class_names is None
    _touch_image(image_folder / "loose.png")  # an image outside any class folder: not an ImageFolder tree
    items = discover(image_folder)
    assert items.class_names is None
    assert set(items.labels) == {NO_LABEL}
    assert len(items) == 24


def test_txt_list_paths_are_relative_to_the_list(tmp_path: Path) -> None:
    a = _touch_image(tmp_path / "imgs" / "a.png")
    absolute = _touch_image(tmp_path / "elsewhere" / "b.png")
    lst = tmp_path / "lists" / "files.txt"
    lst.parent.mkdir()
    lst.write_text(f"# a comment\n../imgs/a.png\n\n  {absolute}  \n../imgs/a.png\n", encoding="utf-8")
    items = discover(lst)
    assert [os.path.normpath(p) for p in items.paths] == [str(a), str(absolute), str(a)]  # duplicates kept, in order
    assert items.labels == [NO_LABEL] * 3
    assert items.class_names is None


def test_csv_with_relative_paths_and_named_labels(tmp_path: Path) -> None:
    for rel in ["x/1.png", "x/2.png", "y/3.png"]:
        _touch_image(tmp_path / "data" / rel)
    table = tmp_path / "data" / "list.csv"
    table.write_text("path,label,extra\nx/1.png,dog,a\nx/2.png,cat,b\ny/3.png,,c\n", encoding="utf-8")
    items = discover(table)
    assert [os.path.relpath(p, tmp_path / "data") for p in items.paths] == ["x/1.png", "x/2.png", "y/3.png"]
    assert items.class_names == ["cat", "dog"]
    assert items.labels == [1, 0, NO_LABEL]  # an empty label is unknown, not a class


def test_csv_numeric_labels_custom_columns_and_no_label_column(tmp_path: Path) -> None:
    _touch_image(tmp_path / "a.png")
    _touch_image(tmp_path / "b.png")
    table = tmp_path / "t.csv"
    table.write_text("file,cls\na.png,3\nb.png,0\n", encoding="utf-8")
    items = discover(table, path_column="file", label_column="cls")
    assert items.labels == [3, 0]
    assert items.class_names is None
    assert discover(table, path_column="file", label_column=None).labels == [NO_LABEL, NO_LABEL]
    assert discover(table, path_column="file").labels == [NO_LABEL, NO_LABEL]  # the default "label" may be absent


def test_csv_without_the_label_column_named_names_data_label_column(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("path,species\na.png,dog\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        discover(table, label_column="specis")
    assert info.value.key == "data.inputs.label_column" and "\n" not in str(info.value)
    assert "'specis'" in str(info.value) and "species" in str(info.value)  # lists the columns there are


def test_csv_without_the_path_column_names_data_path_column(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("file\na.png\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        discover(table)
    assert info.value.key == "data.inputs.path_column"
    assert "file" in str(info.value)  # lists the columns there are


@pytest.mark.parametrize("kind", ["missing", "empty_folder", "no_images", "empty_list", "unknown_suffix"])
def test_bad_source_names_data_source(tmp_path: Path, kind: str) -> None:
    source = {
        "missing": tmp_path / "does" / "not" / "exist",
        "empty_folder": tmp_path / "empty",
        "no_images": tmp_path / "texts",
        "empty_list": tmp_path / "empty.txt",
        "unknown_suffix": tmp_path / "list.json",
    }[kind]
    if kind == "empty_folder":
        source.mkdir()
    elif kind == "no_images":
        source.mkdir()
        (source / "a.txt").write_text("not an image")
    elif kind == "empty_list":
        source.write_text("# nothing here\n\n")
    elif kind == "unknown_suffix":
        source.write_text("[]")
    with pytest.raises(ConfigError) as info:
        discover(source)
    assert info.value.key == "data.source"
    message = str(info.value)
    assert message.startswith("data.source=")
    assert str(source) in message


def test_datamodule_refuses_a_missing_source_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        ImageDataModule(tmp_path / "missing")
    assert info.value.key == "data.source"
    assert "missing" in str(info.value)


def test_a_list_written_relative_to_the_working_directory_names_data_path_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # lists/files.txt names photos/a.png ... as seen from tmp_path, the working directory: from the list's folder
    # every entry would be "no such file", and the run would end with nothing predicted.
    for name in ("a", "b", "c"):
        _touch_image(tmp_path / "photos" / f"{name}.png")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "files.txt").write_text("photos/a.png\nphotos/b.png\nphotos/c.png\n")
    (tmp_path / "lists" / "table.csv").write_text("path\nphotos/a.png\nphotos/b.png\n")
    monkeypatch.chdir(tmp_path)
    for source in ("lists/files.txt", "lists/table.csv"):
        with pytest.raises(ConfigError) as info:
            discover(source)
        message = str(info.value)
        assert info.value.key == "data.source" and "\n" not in message
        assert "relative to the working directory" in message and "data.reading.path_root=" in message
        assert str(tmp_path) in message and "exist from here, none from there" in message
    # The fix it names: relative entries are read from data.reading.path_root.
    items = discover("lists/files.txt", root=tmp_path)
    assert items.paths == [os.path.join(str(tmp_path), "photos", f"{n}.png") for n in "abc"]
    assert items.rejected == []
    # A list that is right as it is (entries relative to its folder) is not second-guessed.
    (tmp_path / "photos" / "list.txt").write_text("a.png\nb.png\n")
    assert len(discover("photos/list.txt")) == 2


def test_a_list_read_in_units_written_relative_to_the_working_directory_is_refused_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a", "b", "c"):
        _touch_image(tmp_path / "photos" / f"{name}.png")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "files.txt").write_text("photos/a.png\nphotos/b.png\nphotos/c.png\n")
    monkeypatch.chdir(tmp_path)
    dm = ImageDataModule("lists/files.txt", batch_size=2, num_workers=0, inputs=Inputs(unit_size=2))
    with pytest.raises(ConfigError) as info:
        dm.setup("predict")
    assert info.value.key == "data.source" and "data.reading.path_root=" in str(info.value)
    fixed = ImageDataModule(
        "lists/files.txt",
        batch_size=2,
        num_workers=0,
        inputs=Inputs(unit_size=2),
        reading=Reading(path_root=str(tmp_path)),
    )
    fixed.setup("predict")
    batches = list(fixed.predict_dataloader())
    assert sum(len(b) for b in batches) == 3 and not any(
        b.failures for b in batches
    )  # read from data.reading.path_root
