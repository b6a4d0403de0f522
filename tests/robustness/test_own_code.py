"""Your own code by class path or factory from the working directory, without PYTHONPATH, as ``python -m`` finds it;
the import policy still refuses ``os.system`` & co. reached through it, and its hint, when it refuses, works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_images
from jsonargparse._common import parsing_settings

from lit_infer import security
from lit_infer.cli import main
from lit_infer.errors import ConfigError
from lit_infer.models import build_net

NET = """
import torch.nn as nn
from os import system  # a gadget the user's module happens to import


class {cls}(nn.Module):
    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(3, num_classes)

    def forward(self, x):
        return self.fc(x.float().mean((2, 3)))


def build(num_classes: int = 3) -> nn.Module:
    return {cls}(num_classes)
"""


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    saved = {k: parsing_settings[k] for k in security._SETTINGS}
    enforced = security._enforced
    monkeypatch.delenv(security.ENV_VAR, raising=False)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the CLI appends the working directory
    yield
    parsing_settings.update(saved)
    security._enforced = enforced


def _config(folder: Path, model: dict) -> Path:
    make_images(folder / "images", 3)
    config = {
        "model": {"class_path": "lit_infer.ImageClassifier", "init_args": {"top_k": 1, **model}},
        "data": {"class_path": "lit_infer.ImageDataModule", "init_args": {"source": "images", "num_workers": 0}},
        "writer": {"output_dir": "out"},
        "trainer": {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False},
    }
    path = folder / "my.yaml"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.slow
def test_a_class_in_the_working_directory_predicts_with_the_console_script(tmp_path: Path) -> None:
    (tmp_path / "mymodels.py").write_text(NET.format(cls="MyNet"))
    _config(tmp_path, {"net": {"class_path": "mymodels.MyNet", "init_args": {"num_classes": 4}}})
    script = Path(sys.executable).parent / "lit-infer"
    if not script.exists():
        pytest.skip("the lit-infer console script is not installed next to this Python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", security.ENV_VAR)}
    done = subprocess.run(
        [str(script), "predict", "--config", "my.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert len((tmp_path / "out" / "predictions.csv").read_text().splitlines()) == 1 + 3


def test_a_factory_of_your_own_builds_and_a_gadget_through_it_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ownfactory.py").write_text(NET.format(cls="OwnNet"))
    monkeypatch.chdir(tmp_path)
    with security.enforced():
        assert type(build_net(None, "ownfactory.build", {"num_classes": 5})).__name__ == "OwnNet"
        with pytest.raises(ConfigError, match=r"posix\.system.*is denied"):
            build_net(None, "ownfactory.system", {"command": f"touch {tmp_path / 'pwned'}"})
    assert not (tmp_path / "pwned").exists()


def test_a_folder_without_init_is_a_namespace_package_as_for_python_m(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "nsmodels").mkdir()
    (tmp_path / "nsmodels" / "net.py").write_text(NET.format(cls="NsNet"))
    monkeypatch.chdir(tmp_path)
    with security.enforced():
        assert type(build_net(None, "nsmodels.net.NsNet", {})).__name__ == "NsNet"


def test_a_module_shadowing_an_installed_package_unlocks_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("")
    (tmp_path / "json.py").write_text("")
    monkeypatch.chdir(tmp_path)
    with security.enforced():
        assert "torch" not in security.users_entries() and "json" not in security.users_entries()
        with pytest.raises(ConfigError, match="is denied"):
            build_net(None, "torch.utils.collect_env.run", {"command": "true"})


def test_the_hint_for_code_not_found_is_a_fix_that_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "hintmodels.py").write_text(NET.format(cls="HintNet"))
    config = _config(project, {"net": {"class_path": "hintmodels.HintNet"}})
    monkeypatch.chdir(tmp_path)  # one folder above the code
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--config", str(config), "--print_config"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "model.net='hintmodels.HintNet'" in err and "PYTHONPATH" in err and "hintmodels.py" in err
    monkeypatch.setenv("PYTHONPATH", str(project))  # the fix the line names
    monkeypatch.syspath_prepend(str(project))  # what Python does with PYTHONPATH at start-up
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--config", str(config), "--print_config"])
    assert exc.value.code in (0, None)
