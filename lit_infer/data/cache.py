"""A cache of preprocessed images: decode a source once, then every later run reads uint8 pixels at memory speed.

For evaluating many checkpoints on one validation set: the first run decodes with Pillow and writes each image's
``crop x crop x 3`` uint8 pixels into a memory-mapped file; later runs (any model with the same preprocessing) read
them back instead of decoding. Layout of ``<cache_dir>/<key>/``::

    manifest.json   what the key was computed from (source, files, preprocessing), and the array shape
    images.u8       N x crop x crop x 3 uint8, row i = dataset index i (a sparse file until filled)
    status.u8       N bytes: 1 when row i holds a decoded image, 0 otherwise

The key covers the list of paths, each file's size and modification time, and every setting that changes pixels,
so an edited image or another preprocessing gets a fresh cache, never stale pixels. Rows fill as images are
decoded (by any rank and worker: rows are disjoint), so an interrupted first run still leaves what it decoded.
Images that fail to decode are not cached: they are read again and fail again, as error records.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lit_infer.atomic import atomic_open, remove_stale_temps, write_json
from lit_infer.records import Sample

CACHE_VERSION = 1
"""Bump when the decoder's output changes for the same settings: old caches then stop matching."""


def cache_key(paths: Sequence[str], settings: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The cache's key and the manifest it comes from: paths, file sizes and mtimes, and pixel-changing settings."""
    files = hashlib.sha256()
    for path in paths:
        try:
            st = os.stat(path)
            files.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        except OSError:  # missing now: its row is never filled, and a later appearance changes the key
            files.update(f"{path}\0missing\n".encode("utf-8", "surrogateescape"))
    manifest = {"version": CACHE_VERSION, "num_items": len(paths), "files_sha256": files.hexdigest(), **settings}
    key = hashlib.sha256(json.dumps(manifest, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return key, manifest


def _create(path: str, size: int) -> None:
    """Make a zero-filled (sparse) file of ``size`` bytes, atomically: concurrent ranks agree on one file."""
    if os.path.exists(path):
        return
    # Exclusive: if another rank published first, its file is the one (it may already hold rows).
    with atomic_open(path, "wb", exclusive=True) as f:
        f.truncate(size)


class CachedDataset(Dataset[Sample]):
    """Wraps an :class:`~lit_infer.data.dataset.ImageDataset`: rows in the cache are read, the others decoded and stored.

    The memory maps open lazily in each process (DataLoader workers included): the dataset pickles as paths only.

    Args:
        inner: The dataset that decodes.
        cache_dir: Folder of caches (one sub-folder per key).
        settings: Everything besides the files that decides the pixels (preprocessing, decoder options).
        crop_size: Side of the square images stored.
    """

    def __init__(self, inner: Any, cache_dir: str | os.PathLike, settings: dict[str, Any], crop_size: int) -> None:
        self.inner = inner
        paths = [inner.path(i) for i in range(len(inner))]
        key, manifest = cache_key(paths, {**settings, "crop_size": crop_size})
        self.folder = os.path.join(os.fspath(cache_dir), key)
        os.makedirs(self.folder, exist_ok=True)
        self.shape = (len(inner), crop_size, crop_size, 3)
        remove_stale_temps(self.folder, shared=True)  # other runs may be filling this cache right now
        manifest_file = os.path.join(self.folder, "manifest.json")
        if not os.path.exists(manifest_file):
            # Settings as JSON sees them (tuples, paths): the same conversion the key was computed with.
            write_json(manifest_file, json.loads(json.dumps({**manifest, "shape": list(self.shape)}, default=str)))
        _create(os.path.join(self.folder, "images.u8"), int(np.prod(self.shape)))
        _create(os.path.join(self.folder, "status.u8"), len(inner))
        self._images: np.memmap | None = None
        self._status: np.memmap | None = None

    def __len__(self) -> int:
        return len(self.inner)

    def path(self, index: int) -> str:
        return self.inner.path(index)

    @property
    def num_cached(self) -> int:
        self._open()
        assert self._status is not None
        return int(np.count_nonzero(self._status))

    def _open(self) -> None:
        if self._images is None:
            self._images = np.memmap(os.path.join(self.folder, "images.u8"), np.uint8, "r+", shape=self.shape)
            self._status = np.memmap(os.path.join(self.folder, "status.u8"), np.uint8, "r+", shape=(self.shape[0],))

    def __getitem__(self, index: int) -> Sample:
        self._open()
        assert self._images is not None and self._status is not None
        index = int(index)
        if self._status[index]:
            label = int(self.inner._labels[index])
            return Sample(
                index, self.inner.path(index), image=torch.from_numpy(np.array(self._images[index])), label=label
            )
        sample = self.inner[index]
        if sample.image is not None and tuple(sample.image.shape) == self.shape[1:]:
            self._images[index] = sample.image.numpy()
            self._status[index] = 1  # after the pixels: a row marked done always holds them
        return sample

    def __getstate__(self) -> dict[str, Any]:
        # Workers reopen the maps themselves; pickling a memmap would copy the whole array.
        return {**self.__dict__, "_images": None, "_status": None}
