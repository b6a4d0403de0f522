"""A config may import only what a prediction needs: ``class_path: os.system`` and a ``model.factory`` that would run
a command are refused before anything runs; the user's own packages are allowed the documented ways."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from jsonargparse._common import parsing_settings

from lit_infer import security
from lit_infer.cli import main
from lit_infer.errors import ConfigError
from lit_infer.models import import_object


@pytest.fixture(autouse=True)
def _restore_policy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The policy is process-wide (jsonargparse's settings); leave it as found for the tests that follow."""
    saved = {k: parsing_settings[k] for k in security._SETTINGS}
    extra, enforced = list(security._extra_allowed), security._enforced
    monkeypatch.delenv(security.ENV_VAR, raising=False)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    yield
    parsing_settings.update(saved)
    security._extra_allowed[:] = extra
    security._enforced = enforced


def _config(tmp_path: Path, model: dict) -> list[str]:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    config = {
        "model": model,
        "data": {"class_path": "lit_infer.ImageDataModule", "init_args": {"source": str(images)}},
        "writer": {"output_dir": str(tmp_path / "out")},
        "trainer": {"accelerator": "cpu", "devices": 1},
    }
    (tmp_path / "c.yaml").write_text(json.dumps(config))
    return ["predict", "--config", str(tmp_path / "c.yaml")]


def test_class_path_os_system_is_refused_and_never_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    args = _config(tmp_path, {"class_path": "os.system", "init_args": {"command": f"touch {marker}"}})
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code != 0
    assert "os.system" in capsys.readouterr().err
    assert not marker.exists()
    assert not security._enforced  # lifted after the CLI: the process's other parsers are not restricted


@pytest.mark.parametrize(
    "factory", ["os.system", "subprocess.run", "builtins.exec", "torch.hub.load", "posix.system", "nosuchpkg.build"]
)
def test_a_factory_that_could_run_code_is_refused(
    factory: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    kwargs = {"command": f"touch {marker}"} if factory.endswith("system") else {"args": ["touch", str(marker)]}
    model = {"class_path": "lit_infer.ImageClassifier", "init_args": {"factory": factory, "factory_kwargs": kwargs}}
    with pytest.raises(SystemExit) as exc:
        main(_config(tmp_path, model))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "model.factory" in err and len(err.strip().splitlines()) <= 3
    # Code that could run commands gets no "allow it" hint; an unknown package gets the fix that finds it.
    assert (security.ENV_VAR in err) is False
    assert ("PYTHONPATH" in err) == (factory == "nosuchpkg.build")
    assert not marker.exists()


def _user_package(tmp_path: Path, name: str) -> Path:
    pkg = tmp_path / "src" / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from lit_infer.nets import TinyCNN\n\n\nclass MyNet(TinyCNN):\n    pass\n")
    return pkg.parent


def _print_config(tmp_path: Path, class_path: str) -> int:
    model = {"class_path": "lit_infer.ImageClassifier", "init_args": {"net": {"class_path": class_path}}}
    with pytest.raises(SystemExit) as exc:
        main([*_config(tmp_path, model), "--print_config"])  # parses (imports class paths), runs nothing
    return int(exc.value.code or 0)


def test_users_own_package_is_refused_until_allowed_by_env_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(str(_user_package(tmp_path, "userpkg_env")))  # importable, but not from cwd
    assert _print_config(tmp_path, "userpkg_env.MyNet") == 2
    err = capsys.readouterr().err
    assert "model.net='userpkg_env.MyNet'" in err and f"{security.ENV_VAR}=userpkg_env" in err  # the hint...
    assert len(err.strip().splitlines()) == 1
    monkeypatch.setenv(security.ENV_VAR, "userpkg_env, other.pkg")  # ...works
    assert _print_config(tmp_path, "userpkg_env.MyNet") == 0
    assert "userpkg_env.MyNet" in capsys.readouterr().out


def test_modules_on_pythonpath_are_the_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _user_package(tmp_path, "userpkg_pp")
    (src / "os.py").write_text("")  # a standard-library name is never unlocked this way
    monkeypatch.syspath_prepend(str(src))
    monkeypatch.setenv("PYTHONPATH", str(src))
    assert "userpkg_pp" in security.allowed_paths() and "os" not in security.allowed_paths()
    assert _print_config(tmp_path, "userpkg_pp.MyNet") == 0


def test_policy_verdicts() -> None:
    table = security.verdicts()
    assert security.denied_by("torch.nn.Conv2d", table) is None
    assert security.denied_by("lit_infer.nets.TinyCNN", table) is None
    assert security.denied_by("torch.hub.load", table) == "torch"
    assert security.denied_by("os.system", table) == "os"
    assert security.denied_by("somepkg.Thing", table) == "*"
    assert security.denied_by("torch.distributed.run.main", table) == "torch"
    assert security.denied_by("torch.utils.collect_env.run", table) == "torch"
    assert security.denied_by("torchvision.io.write_file", table) == "torchvision"
    assert security.denied_by("timm.models.load_checkpoint", table) == "timm.models.load_checkpoint"
    assert security.denied_by("lightning.pytorch.strategies.DDPStrategy", table) is None
    with pytest.raises(ConfigError, match="allow_imports"):
        security.allow_imports(["not a path"])


@pytest.mark.parametrize("entry", ["os", "torch", "torch.distributed", "timm.models._hub", "subprocess", "json"])
def test_the_environment_cannot_unlock_a_denied_entry(
    entry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(security.ENV_VAR, f"mypkg,{entry}")
    assert _print_config(tmp_path, "lit_infer.nets.TinyCNN") == 2
    err = capsys.readouterr().err
    assert f"{security.ENV_VAR}={entry!r}" in err and "always denied" in err and len(err.strip().splitlines()) == 1


def test_jsonargparse_private_settings_are_where_we_touch_them() -> None:
    """jsonargparse has no public getter for its settings; security restores them through the private dict. An
    upgrade that moves or renames it must fail here, not leave the policy silently installed or lifted."""
    settings = security._jsonargparse_settings()
    assert settings is parsing_settings and all(k in settings for k in security._SETTINGS)
    before = {k: settings[k] for k in security._SETTINGS}
    with security.enforced():
        assert settings["import_paths_enforced"] is True
        assert settings["instantiate_subclass_spec_in_any"] is False
        assert settings["import_path_verdicts"]["torch.nn"] is True
    assert {k: settings[k] for k in security._SETTINGS} == before


def test_an_allowed_path_that_leads_to_a_denied_object_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "src" / "userpkg_alias"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("import os\nrun = os.system\n")
    monkeypatch.syspath_prepend(str(pkg.parent))
    security.install()
    security.allow_imports(["userpkg_alias"])
    with pytest.raises(ConfigError, match=r"posix\.system|os\.system"):
        import_object("userpkg_alias.run", "model.factory")


def test_python_callers_are_not_restricted(tmp_path: Path) -> None:
    security._enforced = False
    assert import_object("os.path.join", "model.factory") is os.path.join
    assert sys.modules["os"]  # imported, as the caller asked
