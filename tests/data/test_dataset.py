"""Units -> samples, and collate: uint8 batches in channels_last memory, failures kept apart, never a neighbour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import identity_value, make_images
from torch.utils.data import DataLoader

from data.source_helpers import ByIndex, by_index
from lit_infer.data import UnitDataset, collate
from lit_infer.data.decode import Decoder
from lit_infer.data.sources import Entries, SourceListing, page_units
from lit_infer.preprocessing import Preprocessing
from lit_infer.records import NO_LABEL, Batch, Failure, Sample

P16 = Preprocessing(crop_size=16, resize_size=16)


def _dataset(
    paths: list[Path], labels: list[int] | None = None, rejected: list[tuple[int, str]] = (), decode: bool = True
) -> ByIndex:
    return by_index(paths, Decoder(P16), labels, rejected, decode)


def test_sample_carries_index_path_label_and_its_own_pixels(tmp_path: Path) -> None:
    paths = make_images(tmp_path, 5)
    ds = _dataset(paths, [0, 1, 0, 1, 0])
    assert len(ds) == 5
    for i in range(5):
        s = ds[i]
        assert isinstance(s, Sample)
        assert s.error is None
        assert (s.index, s.path, s.label) == (i, str(paths[i]), i % 2)
        assert s.image is not None and s.image.dtype == torch.uint8 and tuple(s.image.shape) == (16, 16, 3)
        # make_images encodes the index in the colour: noise in [0, 40) above identity_value(i).
        assert abs(float(s.image.float().mean()) - (identity_value(i) + 19.5)) < 4


def test_unlabelled_dataset_and_numpy_index(tmp_path: Path) -> None:
    ds = _dataset(make_images(tmp_path, 2))
    s = ds[np.int64(1)]  # samplers may hand numpy integers
    assert s.index == 1 and isinstance(s.index, int)
    assert s.label == NO_LABEL


def test_a_bad_file_is_its_own_failure_never_a_neighbour(tmp_path: Path) -> None:
    paths = make_images(tmp_path, 3)
    paths[1].write_bytes(paths[1].read_bytes()[:60])  # truncated PNG
    missing = tmp_path / "gone.png"
    ds = _dataset([*paths, missing])
    bad = ds[1]
    assert bad.image is None
    assert bad.error == Failure(1, str(paths[1]), bad.error.error_type, bad.error.message)
    assert bad.error.error_type in ("OSError", "SyntaxError", "UnidentifiedImageError")
    gone = ds[3]
    assert gone.error is not None and gone.error.error_type == "FileNotFoundError"
    assert gone.error.index == 3 and gone.error.path == str(missing)
    assert ds[0].error is None and ds[2].error is None


def test_rejected_entries_are_failures_without_reading(tmp_path: Path) -> None:
    paths = make_images(tmp_path, 2)
    ds = _dataset(paths, rejected=[(1, "outside the root")])
    s = ds[1]
    assert s.error is not None and s.error.error_type == "RejectedPath" and s.error.message == "outside the root"


def test_collate_separates_failures_and_keeps_uint8_channels_last(tmp_path: Path) -> None:
    paths = make_images(tmp_path, 4)
    paths[2].write_bytes(b"not an image")
    ds = _dataset(paths, [3, 2, 1, 0])
    batch = collate([ds[i] for i in range(4)])
    assert isinstance(batch, Batch)
    assert batch.images.dtype == torch.uint8
    assert tuple(batch.images.shape) == (3, 3, 16, 16)
    assert batch.images.is_contiguous(memory_format=torch.channels_last)
    assert batch.indices.tolist() == [0, 1, 3]
    assert batch.paths == [str(paths[i]) for i in (0, 1, 3)]
    assert batch.labels.tolist() == [3, 2, 0]
    assert [f.index for f in batch.failures] == [2]
    assert len(batch) == 3 and batch.size == 4
    # The NCHW view holds the same pixels as the decoded HWC samples.
    for row, i in enumerate((0, 1, 3)):
        assert torch.equal(batch.images[row], ds[i].image.permute(2, 0, 1))


def test_collate_of_only_failures_is_an_empty_batch(tmp_path: Path) -> None:
    bad = tmp_path / "x.png"
    bad.write_bytes(b"")
    ds = _dataset([bad, bad])
    batch = collate([ds[0], ds[1]])
    assert len(batch) == 0 and batch.size == 2
    assert batch.images.shape[0] == 0 and batch.images.dtype == torch.uint8
    assert [f.index for f in batch.failures] == [0, 1]


@pytest.mark.slow
def test_collate_in_worker_processes_gives_the_same_batches(tmp_path: Path) -> None:
    paths = make_images(tmp_path, 7)
    entries = Entries.of([str(p) for p in paths])
    ds = UnitDataset(SourceListing("folder", page_units("x", 7, 4), entries, num_items=7), Decoder(P16))
    ds.split(set(), {}, 0, 1, 3)
    in_process = list(DataLoader(ds, batch_size=None))
    workers = list(DataLoader(ds, batch_size=None, num_workers=2))
    # Worker 0 reads unit 0 (items 0-3), worker 1 unit 1 (items 4-6); the loader takes their batches in turn.
    assert sorted(b.indices.tolist() for b in workers) == [[0, 1, 2], [3], [4294967296, 4294967297, 4294967298]]
    for a, b in zip(
        sorted(in_process, key=lambda b: b.indices.tolist()),
        sorted(workers, key=lambda b: b.indices.tolist()),
        strict=True,
    ):
        assert torch.equal(a.images, b.images)
        assert a.paths == b.paths
        assert b.images.is_contiguous(memory_format=torch.channels_last)


def test_undecoded_bytes_for_device_decoding(tmp_path: Path) -> None:
    paths = make_images(tmp_path, 2, ext="jpg")  # JPEGs only: the workers decode other formats themselves
    ds = _dataset(paths, decode=False)
    s = ds[0]
    assert s.image is None and s.data == paths[0].read_bytes()
    batch = collate([ds[0], ds[1]])
    assert batch.encoded is not None and batch.encoded.to_list() == [p.read_bytes() for p in paths]
    assert batch.indices.tolist() == [0, 1]
