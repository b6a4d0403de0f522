"""The one batch splitter: consecutive parts, order kept, failures once, encoded items with their bytes."""

from __future__ import annotations

import pytest
import torch

from lit_infer.data.batches import sizes_of_at_most, split_batch
from lit_infer.records import Batch, EncodedFiles


def test_sizes_of_at_most_cover_every_item() -> None:
    assert sizes_of_at_most(5, 2) == [2, 2, 1]
    assert sizes_of_at_most(4, 8) == [4]
    assert sizes_of_at_most(0, 3) == [0]  # an all-failed batch still yields one part, carrying its failures


def test_split_batch_keeps_order_and_failures() -> None:
    images = torch.arange(5 * 3 * 2 * 2, dtype=torch.uint8).view(5, 3, 2, 2)
    batch = Batch(images, torch.arange(10, 15), [f"p{i}" for i in range(5)], torch.zeros(5, dtype=torch.long), ["f"])
    parts = split_batch(batch, [3, 2])
    assert [p.paths for p in parts] == [["p0", "p1", "p2"], ["p3", "p4"]]
    assert torch.equal(torch.cat([p.images for p in parts]), images)
    assert [p.indices.tolist() for p in parts] == [[10, 11, 12], [13, 14]]
    assert [p.failures for p in parts] == [["f"], []]


def test_split_of_a_batch_still_encoded_for_the_device_keeps_pixels_with_their_items() -> None:
    # Items 1, 3 and 4 were decoded by the workers (rows 0, 1, 2 of ``images``); 0 and 2 are still bytes.
    images = torch.arange(3, dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 3, 2, 2)
    encoded = EncodedFiles.pack([b"a", None, b"c", None, None])
    batch = Batch(images, torch.arange(5), [f"p{i}" for i in range(5)], torch.zeros(5), [], encoded)
    parts = split_batch(batch, sizes_of_at_most(5, 2))
    assert [p.encoded.to_list() for p in parts] == [[b"a", None], [b"c", None], [None]]
    assert [p.images[:, 0, 0, 0].tolist() for p in parts] == [[0], [1], [2]]


def test_sizes_must_add_up() -> None:
    batch = Batch(torch.zeros(2, 3, 1, 1, dtype=torch.uint8), torch.arange(2), ["a", "b"], torch.zeros(2))
    with pytest.raises(AssertionError, match="do not add up"):
        split_batch(batch, [1])
