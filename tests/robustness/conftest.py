"""The robustness tests share one clean, uninterrupted run: every interrupted run must end byte-identical to it."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_images

from robustness.robust_helpers import N_IMAGES, classifier_config, run_cli, save_weights


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Images, weights and the output of one clean, uninterrupted run to compare everything with."""
    root = tmp_path_factory.mktemp("resume")
    images = root / "images"
    make_images(images, N_IMAGES, size=(40, 36))
    weights = save_weights(root / "weights.pt")
    clean = root / "clean"
    config = classifier_config(root / "clean.yaml", images, clean, weights)
    rc, log = run_cli(["--config", str(config)], root / "clean.log")
    assert rc == 0, log
    return {"root": root, "images": images, "weights": weights, "clean": clean}
