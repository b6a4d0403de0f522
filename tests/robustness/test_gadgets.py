"""A config builds networks and nothing else: every gadget below (process launchers, file writers, loaders, hubs,
``eval``-likes found by reading torch's, torchvision's, timm's and Lightning's namespaces) is refused before it runs,
whichever way a config names it, and the marker file it would write never appears."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from jsonargparse._common import parsing_settings

from lit_infer import security
from lit_infer.cli import main
from lit_infer.errors import ConfigError
from lit_infer.models import build_net

M = "MARKER"  # replaced by the marker file's path in each gadget's arguments

GADGETS: list[tuple[str, dict]] = [
    # torch: process launchers
    ("torch.utils.collect_env.run", {"command": f"touch {M}"}),
    ("torch.utils.collect_env.run_and_read_all", {"run_lambda": "x", "command": f"touch {M}"}),
    ("torch.distributed.run.main", {"args": ["--nproc-per-node=1", "--no-python", "touch", M]}),
    ("torch.distributed.elastic.multiprocessing.start_processes", {"name": "x", "entrypoint": "touch", "args": {}}),
    (
        "torch.distributed.elastic.multiprocessing.subprocess_handler.SubprocessHandler",
        {"entrypoint": "touch", "args": [M], "env": {}, "stdout": None, "stderr": None, "local_rank_id": 0},
    ),
    ("torch.utils.cpp_extension.load_inline", {"name": "x", "cpp_sources": "", "build_directory": M}),
    ("torch.utils.benchmark.utils.cpp_jit.compile_timeit_template", {"stmt": "", "setup": "", "global_setup": ""}),
    ("torch._inductor.cpp_builder.run_compile_cmd", {"cmd_line": f"touch {M}", "cwd": "."}),
    # torch: loaders, hubs, writers
    ("torch.hub.load", {"repo_or_dir": M, "model": "x", "source": "local"}),
    ("torch.hub.download_url_to_file", {"url": "file:///etc/hostname", "dst": M}),
    ("torch.load", {"f": M, "weights_only": False}),
    ("torch.save", {"obj": 1, "f": M}),
    ("torch.serialization.save", {"obj": 1, "f": M}),
    ("torch.jit.load", {"f": M}),
    ("torch.package.PackageImporter", {"file_or_buffer": M}),
    ("torch.export.save", {"ep": 1, "f": M}),
    ("torch.onnx.export", {"model": None, "args": [], "f": M}),
    ("torch.utils.tensorboard.SummaryWriter", {"log_dir": M}),
    ("torch.cuda.memory._dump_snapshot", {"filename": M}),
    ("torch.utils.model_zoo.load_url", {"url": "file:///etc/hostname", "model_dir": M}),
    ("torch.nn.parallel.DistributedDataParallel", {"module": None}),
    # torchvision: writers, downloaders, archive extraction
    ("torchvision.io.write_file", {"filename": M, "data": [1]}),
    ("torchvision.io.write_png", {"input": [1], "filename": M}),
    ("torchvision.utils.save_image", {"tensor": [1], "fp": M}),
    ("torchvision.datasets.utils.download_url", {"url": "file:///etc/hostname", "root": M}),
    ("torchvision.datasets.utils.extract_archive", {"from_path": "x.tar", "to_path": M}),
    ("torchvision.datasets.ImageFolder", {"root": M}),
    # timm: checkpoint loaders, hub upload, savers, datasets
    ("timm.models.load_checkpoint", {"model": None, "checkpoint_path": M}),
    ("timm.models._helpers.load_state_dict", {"checkpoint_path": M, "weights_only": False}),
    ("timm.models.push_to_hf_hub", {"model": None, "repo_id": M}),
    ("timm.models._hub.save_for_hf", {"model": None, "save_directory": M}),
    ("timm.models.register_model", {"fn": None}),
    ("timm.utils.CheckpointSaver", {"model": None, "optimizer": None, "checkpoint_dir": M}),
    ("timm.utils.update_summary", {"epoch": 0, "train_metrics": {}, "eval_metrics": {}, "filename": M}),
    ("timm.data.create_dataset", {"name": "x", "root": M, "download": True}),
    # Lightning: a CLI, a callback running callables, loggers and checkpoint writers, an unpickling loader
    ("lightning.pytorch.cli.LightningCLI", {"args": ["--help"]}),
    ("lightning.pytorch.callbacks.LambdaCallback", {"on_predict_start": "os.system"}),
    ("lightning.pytorch.loggers.CSVLogger", {"save_dir": M}),
    ("lightning.fabric.utilities.cloud_io._load", {"path_or_url": M}),
    ("lightning.pytorch.plugins.io.TorchCheckpointIO", {}),
    ("lightning.pytorch.strategies.DDPStrategy", {}),  # allowed as a strategy, not as a factory
    # lit_infer's own helpers and stdlib
    ("lit_infer.callbacks.atomic.write_json", {"final": M, "obj": 1}),
    ("lit_infer.security.allow_imports", {"paths": ["os"]}),
    ("builtins.exec", {"source": f"open('{M}', 'w')"}),
    ("builtins.eval", {"source": f"open('{M}', 'w')"}),
    ("os.system", {"command": f"touch {M}"}),
    ("posix.system", {"command": f"touch {M}"}),
    ("subprocess.run", {"args": ["touch", M]}),
    ("pty.spawn", {"argv": ["touch", M]}),
    ("runpy.run_path", {"path_name": M}),
    ("shutil.rmtree", {"path": M}),
    ("pathlib.Path.touch", {"self": M}),
    ("code.InteractiveInterpreter", {}),
    ("functools.partial", {"func": "os.system"}),
    ("operator.methodcaller", {"name": "system"}),
    ("webbrowser.open", {"url": "file:///etc/hostname"}),
    ("pickle.loads", {"data": "x"}),
]


@pytest.fixture(autouse=True)
def _restore_policy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    saved = {k: parsing_settings[k] for k in security._SETTINGS}
    enforced = security._enforced
    monkeypatch.delenv(security.ENV_VAR, raising=False)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    yield
    parsing_settings.update(saved)
    security._enforced = enforced


def _with_marker(value: object, marker: Path) -> object:
    return json.loads(json.dumps(value).replace(M, str(marker)))


@pytest.mark.parametrize(("path", "kwargs"), GADGETS, ids=[g[0] for g in GADGETS])
def test_a_gadget_as_factory_is_refused_before_it_runs(
    path: str, kwargs: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    with security.enforced(), pytest.raises(ConfigError, match=r"model\.factory="):
        build_net(None, path, _with_marker(kwargs, marker))  # type: ignore[arg-type]
    assert not marker.exists()


def _config(tmp_path: Path, model: dict, **trainer: object) -> list[str]:
    from conftest import make_images

    images = tmp_path / "images"
    if not images.exists():
        make_images(images, 2)
    config = {
        "model": model,
        "data": {"class_path": "lit_infer.ImageDataModule", "init_args": {"source": str(images), "num_workers": 0}},
        "writer": {"output_dir": str(tmp_path / "out")},
        "trainer": {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False, **trainer},
    }
    (tmp_path / "c.yaml").write_text(json.dumps(config))
    return ["predict", "--config", str(tmp_path / "c.yaml")]


def _tiny(**init_args: object) -> dict:
    return {"class_path": "lit_infer.ImageClassifier", "init_args": {"top_k": 1, **init_args}}


HANDLER = "torch.distributed.elastic.multiprocessing.subprocess_handler.SubprocessHandler"
HANDLER_ARGS = {"entrypoint": "/bin/sh", "args": ["-c", f"touch {M}"], "env": {}, "stdout": None, "stderr": None}
CLASS_PATH_CASES = {
    # the network itself
    "net": {"net": {"class_path": HANDLER, "init_args": {**HANDLER_ARGS, "local_rank_id": 0}}},
    # nested in a free-form argument (typed Any): kept as data, then refused as not plain data
    "factory_kwargs": {
        "factory": "lit_infer.nets.TinyCNN",
        "factory_kwargs": {"num_classes": {"class_path": HANDLER, "init_args": {**HANDLER_ARGS, "local_rank_id": 0}}},
    },
    "factory_kwargs_allowed_class": {
        "factory": "lit_infer.nets.TinyCNN",
        "factory_kwargs": {"num_classes": {"class_path": "torch.nn.Identity"}},
    },
}


@pytest.mark.parametrize("case", list(CLASS_PATH_CASES))
def test_a_class_path_gadget_never_runs_through_the_cli(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(SystemExit) as exc:
        main(_config(tmp_path, _tiny(**_with_marker(CLASS_PATH_CASES[case], marker))))  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert len(err.strip().splitlines()) <= 3 and "model." in err
    assert not marker.exists()


@pytest.mark.parametrize(
    "trainer",
    [
        {"callbacks": [{"class_path": "lightning.pytorch.callbacks.LambdaCallback"}]},
        {
            "strategy": {
                "class_path": "lightning.pytorch.strategies.DDPStrategy",
                "init_args": {"ddp_comm_hook": "torch.utils.collect_env.run"},
            }
        },
        {"logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": M}}},
    ],
    ids=["LambdaCallback", "ddp_comm_hook", "logger"],
)
def test_trainer_gadgets_are_refused(trainer: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(SystemExit) as exc:
        main(_config(tmp_path, _tiny(net={"class_path": "lit_infer.nets.TinyCNN"}), **_with_marker(trainer, marker)))
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert len(err.strip().splitlines()) <= 3 and "trainer." in err and "denied" in err
    assert not marker.exists()
