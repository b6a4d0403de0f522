"""A file in the working directory runs only when the config names it: a stray ``mpi4py.py``, ``torch_xla.py``,
``tabulate.py`` (optional imports of Lightning and torch), ``yaml.py`` or ``numpy.py`` (installed ones shadowed) in
the folder of an ordinary quickstart run is never imported, under the console script and under ``python -m``; a
config naming ``mymodels.Net`` there still works, and so do the helpers that module imports beside it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from robustness.robust_helpers import REPO

STRAY = ("mpi4py", "torch_xla", "tabulate", "yaml", "numpy", "rich", "tensorboardX", "psutil", "mymodels_helper")

NET = """
import torch.nn as nn
from mymodels_helper import WIDTH  # a helper beside the user's module: imported by it, so found


class Net(nn.Module):
    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.fc = nn.Linear(3, num_classes)

    def forward(self, x):
        return self.fc(x.float().mean((2, 3))) * WIDTH
"""


def _plant(folder: Path) -> None:
    for name in STRAY:
        marker = folder / f"IMPORTED_{name}"
        body = f"open({str(marker)!r}, 'w').close()\n"
        if name == "mymodels_helper":
            body += "WIDTH = 1\n"
        else:
            body += "raise ImportError('a stray module')\n"
        (folder / f"{name}.py").write_text(body)


def _quickstart(folder: Path, net: dict | None = None) -> Path:
    config = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    init = config["model"]["init_args"]
    init["weights"] = str(REPO / init["weights"])
    init["class_names"] = str(REPO / init["class_names"])
    if net is not None:
        init["net"] = net
        del init["weights"]
    config["data"]["init_args"]["source"] = str(REPO / config["data"]["init_args"]["source"])
    config["writer"]["output_dir"] = str(folder / "out")
    config["trainer"]["enable_progress_bar"] = False
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("LIT_INFER_ALLOW_IMPORTS",)}
    env["PYTHONPATH"] = str(REPO)  # lit_infer itself, as an installed package would be
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["script", "python -m"])
def test_stray_modules_in_the_working_directory_never_run(tmp_path: Path, how: str) -> None:
    _plant(tmp_path)
    config = _quickstart(tmp_path)
    script = Path(sys.executable).parent / "lit-infer"
    if how == "script" and not script.exists():
        pytest.skip("the lit-infer console script is not installed next to this Python")
    launcher = [str(script)] if how == "script" else [sys.executable, "-m", "lit_infer"]
    done = _run([*launcher, "predict", "--config", str(config)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len((tmp_path / "out" / "predictions.csv").read_text().splitlines()) > 1
    assert sorted(p.name for p in tmp_path.glob("IMPORTED_*")) == []


@pytest.mark.slow
def test_the_module_a_config_names_and_its_helpers_still_load(tmp_path: Path) -> None:
    _plant(tmp_path)
    (tmp_path / "mymodels.py").write_text(NET)
    config = _quickstart(tmp_path, net={"class_path": "mymodels.Net", "init_args": {"num_classes": 4}})
    done = _run([sys.executable, "-m", "lit_infer", "predict", "--config", str(config)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len((tmp_path / "out" / "predictions.csv").read_text().splitlines()) > 1
    assert sorted(p.name for p in tmp_path.glob("IMPORTED_*")) == ["IMPORTED_mymodels_helper"]


def test_the_names_a_command_line_and_its_config_files_name(tmp_path: Path) -> None:
    from lit_infer.cli.paths import PATH_KEYS
    from lit_infer.own_code import named_modules

    config = tmp_path / "c.yaml"
    config.write_text("model:\n  class_path: mymodels.Net\n  init_args: {weights: tabulate.pt, factory: fac.build}\n")
    (tmp_path / "net.yaml").write_text("class_path: netmods.Net\n")
    args = ["-c", str(config), "--model.class_names", "mpi4py.txt", "--data=datamods.Data", "--trainer.devices", "1"]
    args += ["--model.net", str(tmp_path / "net.yaml")]
    assert sorted(named_modules(args, PATH_KEYS)) == ["datamods.Data", "fac.build", "mymodels.Net", "netmods.Net"]
