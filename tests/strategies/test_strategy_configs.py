"""Every shipped strategy config parses together with the quickstart, and names a registered strategy."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from lightning.pytorch.strategies import StrategyRegistry

import lit_infer  # noqa: F401  (registers the strategies)
from lit_infer.cli import LitInferCLI

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs" / "strategy").glob("*.yaml"))


def test_the_strategy_configs_exist() -> None:
    names = {p.stem for p in CONFIGS}
    assert {"ddp", "dp", "cpu_multiprocess", "pipeline", "multinode", "ddp_gpu"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_strategy_config_parses_with_the_quickstart(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(REPO)
    args = ["predict", "--config", "configs/quickstart.yaml", "--config", str(config), "--print_config"]
    with pytest.raises(SystemExit) as exc:
        LitInferCLI(args=args)
    assert exc.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    # Every trainer setting the strategy file gives survives into the resolved config, strategy first (a name, or a
    # class path with its init_args), and the quickstart's model and data are still there underneath.
    wanted = yaml.safe_load(config.read_text())["trainer"]
    assert wanted.get("strategy") is not None
    for key, value in wanted.items():
        got = printed["trainer"][key]
        if isinstance(value, dict):
            assert got["class_path"] == value["class_path"], key
            assert {k: got["init_args"][k] for k in value.get("init_args", {})} == value.get("init_args", {}), key
        else:
            assert got == value, key
    assert printed["model"]["init_args"]["net"]["class_path"] == "lit_infer.nets.TinyCNN"
    assert printed["data"]["init_args"]["source"] == "examples/quickstart/data/heldout"


def test_strategies_are_registered_by_name() -> None:
    for name in ("dp", "cpu_multiprocess", "pipeline"):
        assert name in StrategyRegistry
