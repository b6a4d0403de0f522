"""Fixtures for the strategy tests: one tiny classifier's weights on disk, folders of real PNG files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import make_images

from lit_infer.nets import TinyCNN
from strategies.strategy_helpers import NET


@pytest.fixture(scope="session")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    net = TinyCNN(**NET["init_args"])
    # Non-trivial BatchNorm statistics, so that a replica or stage that lost them would change the answers.
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], Path]:
    """``folders(n)``: a folder of ``n`` real PNG files (made once per size)."""
    made: dict[int, Path] = {}

    def get(n: int) -> Path:
        if n not in made:
            made[n] = tmp_path_factory.mktemp(f"images{n}")
            make_images(made[n], n)
        return made[n]

    return get
