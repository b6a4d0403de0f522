"""Shared fixtures: real image files on disk, tiny nets, free ports. Everything runs on CPU unless marked ``gpu``."""

from __future__ import annotations

import functools
import http.server
import logging
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def make_images(
    root: Path, n: int, classes: int = 0, size: tuple[int, int] = (48, 40), seed: int = 0, ext: str = "png"
) -> list[Path]:
    """``n`` random RGB images, named so that sorted order is creation order; in ``classes`` sub-folders if > 0.

    Each image's mean colour encodes its number (see :func:`identity_value`), so a test can prove that a
    prediction came from its own file.
    """
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        folder = root / f"class_{i % classes}" if classes else root
        folder.mkdir(parents=True, exist_ok=True)
        h, w = size[1] + (i % 7), size[0] + (i % 5)
        arr = rng.integers(0, 40, (h, w, 3), dtype=np.uint8) + np.uint8(identity_value(i))
        path = folder / f"img_{i:05d}.{ext}"
        Image.fromarray(arr).save(path, quality=95) if ext in ("jpg", "jpeg") else Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


def identity_value(i: int) -> int:
    return (i * 37) % 200


def quiet_trainer(*callbacks: L.Callback, accelerator: str = "cpu", **kwargs: Any) -> L.Trainer:
    """A one-device Trainer that prints nothing but what the test looks for."""
    return L.Trainer(
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
        **kwargs,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    make_images(root, 23, classes=2)
    return root


@pytest.fixture(autouse=True)
def _quiet_lightning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def s3_server() -> Any:
    """A real S3 API on 127.0.0.1 (moto's server mode, a random free port), for the whole session.

    The standard environment points every client at it: ``AWS_ENDPOINT_URL`` and test credentials, so s3fs in this
    process and in CLI subprocesses reach it exactly as they would reach a real endpoint. Yields the endpoint URL.
    """
    server_mod = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in _S3_ENV}
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    try:
        yield endpoint
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_S3_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


@pytest.fixture
def s3_bucket(s3_server: str) -> str:
    """A fresh, empty bucket on the loopback S3 server; returns ``s3://<name>``."""
    s3fs = pytest.importorskip("s3fs")
    name = f"test-{os.urandom(4).hex()}"
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir(name)
    return f"s3://{name}"


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A plain ``http.server`` on 127.0.0.1 serving ``tmp_path/www``."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass
