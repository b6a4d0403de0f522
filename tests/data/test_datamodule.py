"""ImageDataModule: the source listed in setup, loader settings, resume skipping, and user errors naming their key."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_images

from lit_infer.data import Decoding, ImageDataModule, Inputs, Loader, Reading
from lit_infer.data.units import ITEM_STRIDE
from lit_infer.errors import ConfigError
from lit_infer.plan import Plan
from lit_infer.preprocessing import Preprocessing
from lit_infer.system import available_cores

P16 = Preprocessing(crop_size=16, resize_size=16)


def test_setup_discovers_and_loader_yields_every_index_in_order(tmp_path: Path) -> None:
    make_images(tmp_path, 11)
    dm = ImageDataModule(tmp_path, batch_size=4, num_workers=0, preprocessing=P16)
    dm.setup("predict")
    assert dm.listing.num_items == 11 and dm.describe() == "a folder of 11 images"
    batches = list(dm.predict_dataloader())
    assert [len(b) for b in batches] == [4, 4, 3]
    assert np.concatenate([b.indices.numpy() for b in batches]).tolist() == list(range(11))
    assert [b.unit.last for b in batches] == [False, False, True]  # one unit of 11: its last batch says so
    assert all(b.images.shape[1:] == (3, 16, 16) and b.images.dtype == torch.uint8 for b in batches)


def test_class_names_and_fingerprint(image_folder: Path) -> None:
    dm = ImageDataModule(image_folder, num_workers=0, preprocessing=P16)
    assert dm.class_names is None  # before setup
    dm.setup()
    assert dm.class_names == ["class_0", "class_1"]
    fp = dm.fingerprint()
    assert (
        dm.listing.num_items == 23
        and fp["num_items"] is None
        and fp["preprocessing"]["crop_size"] == 16
        and "files" not in fp
    )
    other = ImageDataModule(image_folder, num_workers=0, preprocessing=Preprocessing(crop_size=8, resize_size=8))
    other.setup()
    assert other.fingerprint() != fp
    again = ImageDataModule(image_folder, num_workers=0, preprocessing=P16, batch_size=3)
    again.setup()
    assert again.fingerprint() == fp  # the batch size does not change any output


def test_resume_leaves_out_committed_units_and_staged_positions(tmp_path: Path) -> None:
    make_images(tmp_path, 10)
    dm = ImageDataModule(tmp_path, batch_size=3, num_workers=0, preprocessing=P16, inputs=Inputs(unit_size=4))
    dm.setup()
    assert [(u.start, u.stop) for u in dm.listing.all_units()] == [(0, 4), (4, 8), (8, 10)]
    # Every layout: committed units and staged positions are left out; items are indexed by unit.
    plan = Plan(1, {}, False, "out", "work", done_units={0}, done_positions={1: np.array([1])})
    dm.use_plan(plan)
    seen = np.concatenate([b.indices.numpy() for b in dm.predict_dataloader()]).tolist()
    assert seen == [ITEM_STRIDE + 0, ITEM_STRIDE + 2, ITEM_STRIDE + 3, 2 * ITEM_STRIDE, 2 * ITEM_STRIDE + 1]


def test_worker_defaults(tmp_path: Path) -> None:
    make_images(tmp_path, 3)
    dm = ImageDataModule(tmp_path, preprocessing=P16)
    dm.setup()
    loader = dm.predict_dataloader()
    # Tuned defaults may change; what must hold: workers by default, within this process's cores, kept alive.
    assert 1 <= loader.num_workers <= max(1, available_cores())
    assert loader.persistent_workers and loader.prefetch_factor >= 2
    assert loader.pin_memory is False  # no trainer on CUDA
    explicit = ImageDataModule(tmp_path, num_workers=0, loader=Loader(pin_memory=True), preprocessing=P16)
    explicit.setup()
    loader = explicit.predict_dataloader()
    assert loader.num_workers == 0 and loader.prefetch_factor is None and not loader.persistent_workers


@pytest.mark.slow
def test_two_workers_deliver_each_index_once(tmp_path: Path) -> None:
    make_images(tmp_path, 13)
    dm = ImageDataModule(tmp_path, batch_size=4, num_workers=2, preprocessing=P16)
    dm.setup()
    seen = np.concatenate([b.indices.numpy() for b in dm.predict_dataloader()]).tolist()
    assert sorted(seen) == list(range(13))


@pytest.mark.parametrize(
    ("build", "key"),
    [
        (lambda p: ImageDataModule(p, batch_size=0), "data.batch_size"),
        (lambda p: ImageDataModule(p, num_workers=-1), "data.num_workers"),
        (lambda p: Decoding(decode="tpu"), "data.decoding.decode"),
        (lambda p: Decoding(cache_dir=str(p), decode="gpu"), "data.decoding.cache_dir"),
        (lambda p: Inputs(unit_size=0), "data.inputs.unit_size"),
        (lambda p: Reading(path_policy="maybe"), "data.reading.path_policy"),
        (lambda p: Reading(file_identity="mtime"), "data.reading.file_identity"),
        (lambda p: Loader(model_threads=0), "data.loader.model_threads"),
    ],
)
def test_bad_options_name_their_key_as_typed(tmp_path: Path, build: Callable[[Path], object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(tmp_path)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}=")


def test_the_groups_are_frozen_typed_and_take_a_yaml_list() -> None:
    inputs = Inputs(extensions=[".png"])  # type: ignore[arg-type]
    assert inputs.extensions == (".png",) and inputs == Inputs(extensions=(".png",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        inputs.unit_size = 4  # type: ignore[misc]
    with pytest.raises(TypeError, match=r"^data.decoding takes a lit_infer.Decoding, not \{'exact': False\}"):
        ImageDataModule(".", decoding={"exact": False})  # type: ignore[arg-type]


def test_empty_folder_fails_in_setup_naming_data_source(tmp_path: Path) -> None:
    dm = ImageDataModule(tmp_path)
    with pytest.raises(ConfigError) as info:
        dm.setup()
    assert info.value.key == "data.source"
