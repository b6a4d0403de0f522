"""A cache of preprocessed images, one file per unit of work: decode a source once, then every later run reads uint8
pixels at memory speed (many checkpoints evaluated on one validation set).

Layout of ``<cache_dir>/<settings key>/``::

    <unit key>.u8     the unit's decoded images, ``count x crop x crop x 3`` uint8, in the order they were read
    <unit key>.json   written last: the items' positions, keys and labels, and the count

The settings key covers every setting that changes pixels; a unit's key covers what it reads: its kind, location and
range, and the identity of its files (a tar's size and modification time, or ETag; each listed image's size and
modification time), so an edited image or another preprocessing gets a fresh entry, never stale pixels. A unit is
cached only when it was read whole and every item decoded: one with a failed item is read again next time (and
fails again, as its error record), as is one an interrupted run left half read.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np

from lit_infer.atomic import atomic_open, remove_stale_temps, temp_name, write_json

CACHE_VERSION = 2
"""Bump when the decoder's output or this layout changes for the same settings: old caches then stop matching."""


class UnitCache:
    """Where one source's units keep their pixels, for one set of pixel-changing settings. Picklable (workers).

    Args:
        cache_dir: Folder of caches (``data.decoding.cache_dir``).
        settings: Everything besides the files that decides the pixels (preprocessing, decoder options).
        crop_size: Side of the square images stored.
    """

    def __init__(self, cache_dir: str | os.PathLike, settings: dict[str, Any], crop_size: int) -> None:
        described = json.dumps(
            {"version": CACHE_VERSION, "crop_size": crop_size, **settings}, sort_keys=True, default=str
        )
        self.folder = os.path.join(os.fspath(cache_dir), hashlib.sha256(described.encode()).hexdigest()[:24])
        os.makedirs(self.folder, exist_ok=True)
        remove_stale_temps(self.folder, shared=True)  # other runs may be filling this cache right now
        self.shape = (crop_size, crop_size, 3)
        settings_file = os.path.join(self.folder, "settings.json")
        if not os.path.exists(settings_file):  # for a reader of the folder: what its pixels were made with
            write_json(settings_file, json.loads(described))

    def load(self, key: str) -> tuple[list[list[Any]], np.ndarray] | None:
        """The cached items (``[position, item key, label]`` each) and their pixels, or ``None`` if not cached."""
        index = os.path.join(self.folder, f"{key}.json")
        if not os.path.exists(index):
            return None
        with open(index, encoding="utf-8") as f:
            items = json.load(f)["items"]
        if not items:
            return items, np.zeros((0, *self.shape), np.uint8)
        pixels = np.memmap(os.path.join(self.folder, f"{key}.u8"), np.uint8, "r", shape=(len(items), *self.shape))
        return items, pixels

    def fill(self, key: str) -> CacheFill:
        return CacheFill(self, key)


class CacheFill:
    """One unit's entry being written as its items decode: pixels appended to a temp file (memory stays flat),
    published by :meth:`commit` (pixels renamed first, then the index), or dropped by :meth:`abandon`."""

    def __init__(self, cache: UnitCache, key: str) -> None:
        self.cache, self.key = cache, key
        self.pixels = os.path.join(cache.folder, f"{key}.u8")
        self.temp = temp_name(self.pixels)
        self._f: Any = open(self.temp, "wb")  # noqa: SIM115 - closed by commit or abandon
        self.items: list[list[Any]] = []

    def add(self, position: int, item_key: str, label: int, image: np.ndarray) -> None:
        if self._f is None:
            return
        if tuple(image.shape) != self.cache.shape:
            self.abandon()
            return
        self._f.write(np.ascontiguousarray(image, np.uint8).tobytes())
        self.items.append([position, item_key, int(label)])

    def commit(self) -> None:
        if self._f is None:
            return
        self._f.close()
        self._f = None
        os.replace(self.temp, self.pixels)
        with atomic_open(os.path.join(self.cache.folder, f"{self.key}.json"), "w") as f:
            json.dump({"count": len(self.items), "items": self.items}, f)

    def abandon(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
            os.remove(self.temp)
