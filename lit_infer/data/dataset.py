"""Index -> Sample. A file that cannot be read or decoded becomes a Sample carrying its error, never a neighbour."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from lit_infer.data.decode import Decoder
from lit_infer.data.gpu_decode import nvjpeg_can_take
from lit_infer.records import NO_LABEL, Batch, EncodedFiles, Failure, Sample


class ImageDataset(Dataset[Sample]):
    """Images by dataset index.

    Paths are kept in one numpy byte array, not a list of Python strings: DataLoader workers read them without
    touching reference counts, so copy-on-write does not slowly duplicate the list into every worker.
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: Sequence[int] | None,
        decoder: Decoder,
        rejected: Sequence[tuple[int, str]] = (),
        decode: bool = True,
    ) -> None:
        self._paths = np.array([p.encode("utf-8", "surrogateescape") for p in paths], dtype=np.bytes_)
        self._labels = np.asarray(labels if labels is not None else [NO_LABEL] * len(paths), dtype=np.int64)
        self.decoder = decoder
        self.rejected = dict(rejected)
        """Index -> reason, for entries refused before reading (a path escaping the root, say)."""
        self.decode = decode
        """False: return the bytes of files the device can decode (GPU decoding), decode only the others."""

    def __len__(self) -> int:
        return len(self._paths)

    def path(self, index: int) -> str:
        return self._paths[index].decode("utf-8", "surrogateescape")

    def __getitem__(self, index: int) -> Sample:
        index = int(index)
        path = self.path(index)
        label = int(self._labels[index])
        if index in self.rejected:
            return Sample(index, path, label=label, error=Failure(index, path, "RejectedPath", self.rejected[index]))
        try:
            if self.decode:
                return Sample(index, path, image=self.decoder(path), label=label)
            data = self.decoder.read(path)
            if nvjpeg_can_take(data, self.decoder.max_pixels):
                return Sample(index, path, label=label, data=data)
            # Not for nvJPEG (a PNG, a CMYK or rotated JPEG): decoded here, in the worker, as with decode=cpu.
            return Sample(index, path, image=self.decoder.decode(data), label=label)
        except Exception as exc:  # any decoder failure is this item's error record, never the run's end
            return Sample(index, path, label=label, error=Failure.from_exception(index, path, exc))


def collate(samples: list[Sample]) -> Batch:
    """Stack decoded images into N x H x W x C uint8 (shared memory inside a worker) and view it as N x C x H x W.

    With device decoding, ``encoded`` packs every item's bytes in order, none for those decoded here (whose pixels
    are ``images``, in the same order); a batch with nothing left to decode on the device is a plain one.
    """
    good = [s for s in samples if s.error is None]
    failures = [s.error for s in samples if s.error is not None]
    indices = torch.tensor([s.index for s in good], dtype=torch.int64)
    labels = torch.tensor([s.label for s in good], dtype=torch.int64)
    paths = [s.path for s in good]
    in_worker = get_worker_info() is not None
    encoded = EncodedFiles.pack([s.data for s in good], in_worker) if any(s.data is not None for s in good) else None
    decoded = [s.image for s in good if s.image is not None]
    if not decoded:
        return Batch(torch.empty(0, 3, 0, 0, dtype=torch.uint8), indices, paths, labels, failures, encoded)
    if len({d.shape for d in decoded}) > 1:  # whole images at their own sizes (crop_mode: none): a list, unstacked
        return Batch([d.permute(2, 0, 1) for d in decoded], indices, paths, labels, failures, encoded)
    first = decoded[0]
    out = None
    if in_worker:
        # Write the stack straight into shared memory, as the default collate does: one copy fewer per batch.
        storage = first._typed_storage()._new_shared(len(decoded) * first.numel(), device=first.device)
        out = first.new(storage).resize_(len(decoded), *first.shape)
    images = torch.stack(decoded, out=out)
    return Batch(images.permute(0, 3, 1, 2), indices, paths, labels, failures, encoded)
