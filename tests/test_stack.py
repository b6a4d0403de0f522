"""torchvision and timm are in the tested stack: the pins sit inside the declared ranges, each is the release made for
the pinned torch, and a torchvision that cannot load beside torch ends a run in one line with the fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, str]:
    lines = (REPO / "constraints.txt").read_text().splitlines()
    return dict(line.split("==") for line in lines if "==" in line and not line.startswith("#"))


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_every_pin_is_inside_the_declared_ranges() -> None:
    project = _project()
    declared = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    pins = _pins()
    checked = set()
    for req in map(Requirement, declared):
        if req.name in pins:
            assert req.specifier.contains(pins[req.name]), f"{req} excludes the pinned {pins[req.name]}"
            checked.add(req.name)
    assert {"torch", "torchvision", "timm", "lightning"} <= checked


def test_torchvision_and_timm_are_extras_matched_to_torch() -> None:
    project = _project()
    extras = {name: [Requirement(r) for r in reqs] for name, reqs in project["optional-dependencies"].items()}
    assert [r.name for r in extras["torchvision"]] == ["torchvision"]
    assert {"timm", "torchvision"} <= {r.name for r in extras["timm"]}  # timm's transforms are torchvision's
    assert "torchvision" not in {Requirement(r).name for r in project["dependencies"]}  # optional for users

    def floor(req: Requirement) -> Version:
        return Version(next(s.version for s in req.specifier if s.operator == ">="))

    torch_floor = floor(next(map(Requirement, (r for r in project["dependencies"] if r.startswith("torch")))))
    tv_floor = floor(extras["torchvision"][0])
    # torchvision 0.(m+15) is the release made for torch 2.m: the floors pair up, and so do the pins.
    assert tv_floor.minor == torch_floor.minor + 15, (tv_floor, torch_floor)
    pins = _pins()
    assert Version(pins["torchvision"]).minor == Version(pins["torch"]).minor + 15


def test_the_pinned_torchvision_and_timm_load_here() -> None:
    import timm
    import torch
    import torchvision

    assert torchvision.__version__.split("+")[0] == _pins()["torchvision"]
    assert timm.__version__ == _pins()["timm"]
    # The compiled ops load beside this torch (the failure a mismatched build shows is right here).
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]


@pytest.mark.slow
def test_a_torchvision_that_cannot_load_ends_in_one_line_with_the_fix(tmp_path: Path) -> None:
    # What a CUDA build of torchvision beside another torch raises at import.
    fake = tmp_path / "site" / "torchvision"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(REPO)])}
    env.pop("LIT_INFER_DEBUG", None)
    args = ["predict", "--config", "configs/quickstart.yaml", "--writer.output_dir", str(tmp_path / "out")]
    proc = subprocess.run(
        [sys.executable, "-m", "lit_infer", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("lit-infer: error: torchvision (")
    assert "operator torchvision::nms does not exist" in lines[0]
    assert "torchvision 0.29" in lines[0] and "pip install" in lines[0] and "pip uninstall torchvision" in lines[0]
    assert not (tmp_path / "out").exists()
