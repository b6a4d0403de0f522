"""Building the network and loading its weights: every file layout we accept, and every one we refuse."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn as nn

from lit_infer.errors import ConfigError
from lit_infer.models import build_net, import_object, load_weights, match_prefixes, read_state_dict
from lit_infer.nets import TinyCNN


def _net(seed: int = 0) -> TinyCNN:
    torch.manual_seed(seed)
    net = TinyCNN(num_classes=3, width=4, depth=2)
    # BatchNorm buffers at their defaults would load "correctly" from anything: make them distinctive.
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return net


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _loads_into_fresh(path: Path, source: nn.Module) -> None:
    target = _net(seed=1)
    assert not _same(target, source)
    load_weights(target, str(path))
    assert _same(target, source)


# ---- layouts we accept -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "layout",
    ["plain", "state_dict", "model", "module_prefix", "nested_prefixed", "compiled", "model_prefix"],
)
def test_state_dict_layouts(tmp_path: Path, layout: str) -> None:
    source = _net()
    sd = source.state_dict()
    obj = {
        "plain": sd,
        "state_dict": {"state_dict": sd, "epoch": 3},
        "model": {"model": sd, "optimizer": {"lr": torch.tensor(0.1)}},
        "module_prefix": {f"module.{k}": v for k, v in sd.items()},
        "nested_prefixed": {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
        "compiled": {f"_orig_mod.{k}": v for k, v in sd.items()},
        "model_prefix": {f"model.{k}": v for k, v in sd.items()},
    }[layout]
    path = tmp_path / "w.pth"
    torch.save(obj, path)
    _loads_into_fresh(path, source)


def test_lightning_checkpoint(tmp_path: Path) -> None:
    class Trainee(L.LightningModule):
        def __init__(self, lr: float = 0.01) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = _net()

        def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
            return self.net(batch[0]).square().mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 3, 8, 8)), batch_size=2)
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    module = Trainee()
    trainer.fit(module, data)
    ckpt = tmp_path / "trained.ckpt"
    trainer.save_checkpoint(ckpt)
    _loads_into_fresh(ckpt, module.net)  # keys "net.*" under "state_dict", beside optimizer and loop states


def test_safetensors(tmp_path: Path) -> None:
    safetensors = pytest.importorskip("safetensors.torch")
    source = _net()
    path = tmp_path / "w.safetensors"
    safetensors.save_file({f"module.{k}": v.contiguous() for k, v in source.state_dict().items()}, str(path))
    _loads_into_fresh(path, source)


def test_match_prefixes_strips_only_what_helps() -> None:
    expected = {"features.0.weight", "classifier.bias"}
    state = {"module.model.features.0.weight": torch.zeros(1), "module.model.classifier.bias": torch.zeros(1)}
    assert set(match_prefixes(state, expected)) == expected
    # A net whose own names start with "model." keeps them.
    own = {"model.a": torch.zeros(1)}
    assert set(match_prefixes(own, {"model.a"})) == {"model.a"}


# ---- what we refuse --------------------------------------------------------------------------------------------
def test_strict_mismatch_names_missing_and_unexpected_keys(tmp_path: Path) -> None:
    sd = _net().state_dict()
    sd.pop("classifier.bias")
    sd["head.extra.weight"] = torch.zeros(2)
    path = tmp_path / "w.pt"
    torch.save(sd, path)
    with pytest.raises(ConfigError) as info:
        load_weights(_net(), str(path))
    message = str(info.value)
    assert info.value.key == "model.weights"
    assert "missing 1 keys: classifier.bias" in message
    assert "unexpected 1 keys: head.extra.weight" in message
    assert "model.strict=false" in message
    # Not strict: what matches loads, the rest stays.
    target = _net(seed=1)
    before = target.classifier.bias.clone()
    load_weights(target, str(path), strict=False)
    assert torch.equal(target.classifier.weight, sd["classifier.weight"])
    assert torch.equal(target.classifier.bias, before)


def test_shape_mismatch_is_refused_even_when_not_strict(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save(TinyCNN(num_classes=5, width=4, depth=2).state_dict(), path)
    with pytest.raises(ConfigError) as info:
        load_weights(_net(), str(path), strict=False)
    assert "classifier.weight: file (5, 8) vs net (3, 8)" in str(info.value)


def test_pickle_payload_is_refused_without_side_effect(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple:
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _net().state_dict(), "extra": Payload()}, path)
    assert not marker.exists()
    with pytest.raises(ConfigError) as info:
        load_weights(_net(), str(path))
    assert info.value.key == "model.weights"
    assert "weights_only" in str(info.value)
    assert not marker.exists()


def test_torchscript_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.script(_net()).save(str(path))
    assert zipfile.is_zipfile(path)
    with pytest.raises(ConfigError, match="TorchScript"):
        read_state_dict(str(path))


@pytest.mark.parametrize("kind", ["missing", "garbage", "no_tensors", "remote", "empty"])
def test_unreadable_weights_name_model_weights(tmp_path: Path, kind: str) -> None:
    path = str(tmp_path / "w.pt")
    if kind == "garbage":
        Path(path).write_bytes(os.urandom(256))
    elif kind == "no_tensors":
        torch.save({"epoch": 3, "name": "x"}, path)
    elif kind == "remote":
        path = "https://example.com/w.pt"
    elif kind == "empty":
        Path(path).write_bytes(b"")
    with pytest.raises(ConfigError) as info:
        load_weights(_net(), path)
    assert info.value.key == "model.weights"
    assert path in str(info.value)


# ---- building the network --------------------------------------------------------------------------------------
def test_build_from_module_or_factory() -> None:
    net = _net()
    assert build_net(net, None, None) is net
    built = build_net(None, "lit_infer.nets.TinyCNN", {"num_classes": 7, "width": 4, "depth": 1})
    assert isinstance(built, TinyCNN) and built.classifier.out_features == 7


@pytest.mark.parametrize(
    ("net", "factory", "key"),
    [
        (None, None, "model.net / model.factory"),
        (TinyCNN(), "lit_infer.nets.TinyCNN", "model.net / model.factory"),
        (None, "no_such_package.make", "model.factory"),
        (None, "lit_infer.nets.NoSuchNet", "model.factory"),
        (None, "resnet50", "model.factory"),
        (None, "lit_infer.__version__", "model.factory"),  # not callable
        (None, "builtins.dict", "model.factory"),  # returns something that is not a module
    ],
)
def test_build_errors_name_their_key(net: nn.Module | None, factory: str | None, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_net(net, factory, None)
    assert info.value.key == key


def test_import_object() -> None:
    assert import_object("lit_infer.nets.TinyCNN", "k") is TinyCNN
    with pytest.raises(ConfigError, match="cannot import"):
        import_object("torchvision_not_here.models.resnet50", "model.factory")
