"""Every shipped YAML parses; the self-contained ones also instantiate; the examples' Python entry points run."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import runpy
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import make_images

from lit_infer import ImageDataModule, PredictionModule, PredictionWriter
from lit_infer.cli import LitInferCLI

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
SHIPPED = sorted(
    p.relative_to(REPO).as_posix()
    for folder in ("configs", "examples")
    for p in (REPO / folder).rglob("*")
    if p.suffix in (".yaml", ".yml")
)
STRATEGIES = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs" / "strategy").glob("*.y*ml"))


class _ParseOnly(LitInferCLI):
    """Parses and validates the whole config (class paths, types, links) without building anything."""

    def instantiate_classes(self) -> None:
        pass

    def after_instantiate_classes(self) -> None:
        pass


def _parse_only(args: list[str]) -> _ParseOnly:
    return _ParseOnly(args=args, run=False)


def _build_only(args: list[str]) -> LitInferCLI:
    """Builds model, data, writer and trainer exactly as ``lit-infer predict`` would, and stops there."""
    return LitInferCLI(args=args, run=False)


def _config_args(rel: str) -> list[str]:
    """A full config alone; a partial one (a strategy, an override) after the quickstart, as its comment says."""
    content = yaml.safe_load((REPO / rel).read_text(encoding="utf-8")) or {}
    standalone = "model" in content and "data" in content
    return ["--config", rel] if standalone else ["--config", str(QUICKSTART.relative_to(REPO)), "--config", rel]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # shipped configs use paths relative to the repository
    # examples/tta.yaml names a class defined there; its comment says to run it with PYTHONPATH=examples.
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    monkeypatch.setenv("PYTHONPATH", str(REPO / "examples"))


def test_the_shipped_configs_are_found() -> None:
    assert "configs/quickstart.yaml" in SHIPPED
    assert {"configs/task/classify_csv.yaml", "configs/task/embeddings_npy.yaml", "examples/tta.yaml"} <= set(SHIPPED)
    assert any("torchvision" in p for p in SHIPPED) and any(p.endswith("_npy.yaml") for p in SHIPPED)


@pytest.mark.parametrize("rel", SHIPPED)
def test_every_shipped_yaml_parses(rel: str) -> None:
    config = _parse_only(["predict", *_config_args(rel)]).config
    assert config["model"]["class_path"]


def _missing_requirement(init: Any, data: Any) -> str | None:
    """Why a config cannot be built here (an optional package, a file only the user has), or None."""
    factory = init.get("factory")
    if factory and importlib.util.find_spec(factory.split(".")[0]) is None:
        return f"needs {factory.split('.')[0]}"
    weights = init.get("weights")
    if weights and not os.path.exists(weights):
        return f"needs the weights file {weights}"
    source = data["init_args"]["source"] if data else None
    if source and not os.path.exists(source):
        return f"needs the data {source}"
    return None


@pytest.mark.parametrize("rel", SHIPPED)
def test_self_contained_configs_build_with_preprocessing_linked(rel: str) -> None:
    parsed = _parse_only(["predict", *_config_args(rel)]).config
    reason = _missing_requirement(parsed["model"]["init_args"], parsed.get("data"))
    if reason:
        pytest.skip(reason)
    if parsed["trainer"].get("accelerator") not in (None, "cpu", "auto"):
        pytest.skip("needs an accelerator")
    cli = _build_only(["predict", *_config_args(rel)])
    assert isinstance(cli.model, PredictionModule)
    assert isinstance(cli.datamodule, ImageDataModule)
    # Declared once under model:, handed to the data module by the CLI's link.
    assert cli.datamodule.preprocessing == cli.model.preprocessing
    writers = [c for c in cli.trainer.callbacks if isinstance(c, PredictionWriter)]
    assert len(writers) == 1


@pytest.mark.skipif(not STRATEGIES, reason="no configs/strategy/ yet")
@pytest.mark.parametrize("rel", STRATEGIES or ["none"])
def test_quickstart_combines_with_each_strategy(rel: str) -> None:
    cli = _parse_only(["predict", "--config", "configs/quickstart.yaml", "--config", rel])
    trainer = cli.config["trainer"]
    strategy = (yaml.safe_load((REPO / rel).read_text()) or {}).get("trainer", {}).get("strategy")
    if strategy is not None:
        assert trainer["strategy"] == strategy or trainer["strategy"]["class_path"]


def _examples_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run an example with its relative paths, but write its outputs under tmp_path, not the repository."""
    (tmp_path / "examples").symlink_to(REPO / "examples")
    monkeypatch.chdir(tmp_path)


@pytest.mark.slow
def test_python_api_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    _examples_here(tmp_path, monkeypatch)
    runpy.run_path(str(REPO / "examples" / "python_api.py"), run_name="__main__")
    assert "top-1 accuracy: " in capsys.readouterr().out
    summary = json.loads((tmp_path / "outputs" / "python_api" / "summary.json").read_text())
    assert summary["metrics"]["top1_accuracy"] >= 0.9
    assert (tmp_path / "outputs" / "python_api" / "predictions.jsonl").exists()


@pytest.mark.slow
def test_tta_example_runs_and_is_as_accurate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _examples_here(tmp_path, monkeypatch)
    monkeypatch.setattr(sys, "argv", ["tta_classifier.py"])
    runpy.run_path(str(REPO / "examples" / "tta_classifier.py"), run_name="__main__")
    summary = json.loads((tmp_path / "outputs" / "tta" / "summary.json").read_text())
    assert summary["num_predicted"] > 0
    assert summary["metrics"]["top1_accuracy"] >= 0.9
    # score is the averaged probability of the top class: in (0, 1], not a log-probability
    with open(tmp_path / "outputs" / "tta" / summary["files"]["table"], newline="") as f:
        scores = [float(row["score"]) for row in csv.DictReader(f)]
    assert scores and all(0.25 <= s <= 1.0 for s in scores), scores[:5]


# Every shipped config runs end to end, as `lit-infer predict` in its own process (DDP launches more). Where a config
# names files only its user has (pretrained weights, photos/, a bucket), the run gets local stand-ins: random weights
# saved in the format it names, a few tiny generated images, moto's S3 server. Where it needs a GPU, its CPU variant
# runs, with the reason beside the overrides. Nothing else is changed.
_PHOTOS = 5
_GPU_ONLY = {
    "configs/strategy/ddp_gpu.yaml": (
        "nccl needs GPUs: the same DDP launch over gloo on 2 CPU processes",
        ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.precision", "32-true"],
    ),
    "configs/strategy/multinode.yaml": (
        "two torchrun 'nodes' on loopback, one CPU process each (the config's 2 x 8 GPUs scaled down)",
        ["--trainer.accelerator", "cpu", "--trainer.devices", "1"],
    ),
    "configs/task/fast_gpu.yaml": (
        "nvJPEG needs a GPU, and inductor compiles ResNet-50 for minutes on 2 cores: decode cpu, no compile, batch 4",
        [
            "--trainer.accelerator", "cpu", "--trainer.benchmark", "false", "--data.init_args.decoding.decode", "cpu",
            "--model.init_args.compile", "false", "--data.init_args.batch_size", "4",
        ],
    ),
}  # fmt: skip


def _random_weights(rel: str, model: dict[str, Any], tmp_path: Path) -> list[str]:
    """The config's own network with random weights, saved where and how its ``weights`` would be."""
    import torch

    from lit_infer.models import build_net

    init = model["init_args"]
    net = build_net(None, init["factory"], init.get("factory_kwargs"))
    path = tmp_path / Path(init["weights"]).name
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    else:
        torch.save(net.state_dict(), path)
    return ["--model.init_args.weights", str(path)]


@pytest.mark.slow
@pytest.mark.parametrize("rel", SHIPPED)
def test_every_shipped_config_runs_end_to_end(rel: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from strategies.strategy_helpers import cli_env, launch_two_nodes, run_cli

    parsed = _parse_only(["predict", *_config_args(rel)]).config
    init, source = parsed["model"]["init_args"], parsed["data"]["init_args"]["source"]
    out = str(tmp_path / "out")
    extra = ["--writer.output_dir", out]
    expected = None
    if init.get("weights") and not os.path.exists(init["weights"]):
        extra += _random_weights(rel, parsed["model"], tmp_path)
    if not os.path.exists(source) and "://" not in source:
        make_images(tmp_path / "photos", _PHOTOS, ext="jpg")
        extra += ["--data.init_args.source", str(tmp_path / "photos"), "--data.init_args.batch_size", "2"]
        expected = _PHOTOS
    if "://" in source:  # object storage on both ends: moto's S3 server, two shards in, parts out
        bucket = request.getfixturevalue("s3_bucket")
        _shards_on_s3(tmp_path, bucket)
        out = f"{bucket}/run"
        extra += ["--data.init_args.source", f"{bucket}/shards/{{000000..000001}}.tar", "--writer.output_dir", out]
    reason, cpu_variant = _GPU_ONLY.get(rel, ("", []))
    extra += cpu_variant
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "examples"), env["PYTHONPATH"]])  # examples/tta.yaml's class
    if rel == "configs/strategy/multinode.yaml":
        launch_two_nodes(QUICKSTART, ["--config", rel, *extra], env=env)
    else:
        run_cli([*_config_args(rel), *extra], timeout=280, env=env)
    summary = _summary(out)
    assert summary["num_failed"] == 0, (reason, summary)
    assert summary["num_predicted"] == (expected or _expected_items(parsed, source)), (reason, summary)


def _summary(out: str) -> dict[str, Any]:
    if out.startswith("s3://"):
        import s3fs

        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        return json.loads(fs.cat_file(f"{out.removeprefix('s3://')}/_manifest.json"))
    return json.loads((Path(out) / "summary.json").read_text())


def _expected_items(parsed: Any, source: str) -> int:
    if "://" in source:
        return 2 * _PHOTOS
    if source.endswith(".csv"):
        return len((REPO / source).read_text().strip().splitlines()) - 1
    return sum(1 for p in (REPO / source).rglob("*") if p.suffix == ".jpg")


def _shards_on_s3(tmp_path: Path, bucket: str) -> None:
    import s3fs
    from scale.scale_helpers import write_shards

    images = make_images(tmp_path / "shard_images", 2 * _PHOTOS)
    write_shards(images, tmp_path / "shards", [_PHOTOS, _PHOTOS], labels=False)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    for path in sorted((tmp_path / "shards").iterdir()):
        fs.put_file(str(path), f"{bucket.removeprefix('s3://')}/shards/{path.name}")
