"""The package's one SHA-256 of a file: weights for the fingerprint, image content for ``file_identity: content``,
parts and outputs for their commit records (what overwrite and merge check before they touch a file)."""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO


def sha256_file(file: str | os.PathLike | BinaryIO) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks: a path, or a file already open in binary mode (a remote
    object, a descriptor opened without following links)."""
    digest = hashlib.sha256()
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as f:
            return sha256_file(f)
    for block in iter(lambda: file.read(1 << 22), b""):
        digest.update(block)
    return digest.hexdigest()
