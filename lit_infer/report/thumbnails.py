"""Thumbnails for the report's galleries: small base64 JPEGs made from the inputs, where they can still be read.

Each is at most :data:`SIZE` pixels on its longer side (a few KB). Only local regular files are opened (never a
URL, a FIFO or a device), with Pillow's decompression-bomb limit; an input that cannot be read gets no picture.
"""

from __future__ import annotations

import base64
import io
import os
import stat
from collections.abc import Iterable

SIZE = 128
QUALITY = 80


def candidates(path: str, cwd: str | None, source: str | None) -> Iterable[str]:
    """Where the input may be now: as written, from the run's working folder, or under the data source's folder."""
    yield path
    if os.path.isabs(path):
        return
    if cwd:
        yield os.path.join(cwd, path)
    if source and os.path.isabs(source):
        # A path written relative to the run's folder starts with the source as typed: find where it joins.
        parts, src = path.split("/"), source.rstrip("/").split("/")
        for k in range(min(len(parts) - 1, len(src)), 0, -1):
            if src[-k:] == parts[:k]:
                yield "/".join([*src[:-k], *parts])
                break


def thumbnail(path: str, cwd: str | None = None, source: str | None = None) -> str | None:
    """A ``data:image/jpeg;base64,...`` URI of the input at ``path``, or ``None`` when it cannot be read."""
    if "://" in path:
        return None
    from PIL import Image, ImageOps

    for candidate in candidates(path, cwd, source):
        try:
            if not stat.S_ISREG(os.stat(candidate).st_mode):
                continue
            with Image.open(candidate) as image:
                image.draft("RGB", (SIZE * 2, SIZE * 2))  # a JPEG decodes at a fraction of its size: fast
                image = ImageOps.exif_transpose(image).convert("RGB")
                image.thumbnail((SIZE, SIZE))
                buffer = io.BytesIO()
                image.save(buffer, "JPEG", quality=QUALITY)
        except Exception:  # a broken, vanished or hostile file: no picture, the report still comes
            continue
        return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return None
