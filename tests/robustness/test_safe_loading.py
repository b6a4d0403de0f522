"""Weights from the internet: a pickle payload is refused and never runs; safetensors and plain state_dicts load;
TorchScript and URLs are refused unless trusted; checkpoint hyper-parameters never choose what gets imported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lit_infer.cli import main
from lit_infer.errors import ConfigError
from lit_infer.models import read_state_dict
from lit_infer.modules import ImageClassifier
from lit_infer.nets import TinyCNN


class Payload:
    """Unpickling this calls ``open(marker, "w")``: the file appears if the loader ever runs pickled code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


def _net() -> TinyCNN:
    torch.manual_seed(0)
    return TinyCNN(num_classes=4, width=4, depth=2)


def _payload_file(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _net().state_dict(), "extra": Payload(marker)}, path)
    assert not marker.exists()
    return path, marker


def test_pickle_payload_is_refused_and_never_runs(tmp_path: Path) -> None:
    path, marker = _payload_file(tmp_path)
    with pytest.raises(ConfigError, match=r"model\.weights.*cannot be loaded safely.*weights_only=True"):
        read_state_dict(str(path))
    with pytest.raises(ConfigError):
        ImageClassifier(net=TinyCNN(4, 4, 2), weights=path)
    assert not marker.exists()


def test_pickle_payload_through_the_cli_exits_2_and_never_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, marker = _payload_file(tmp_path)
    (tmp_path / "images").mkdir()
    config = {
        "model": {
            "class_path": "lit_infer.ImageClassifier",
            "init_args": {
                "net": {"class_path": "lit_infer.nets.TinyCNN", "init_args": {"width": 4, "depth": 2}},
                "weights": str(path),
            },
        },
        "data": {"class_path": "lit_infer.ImageDataModule", "init_args": {"source": str(tmp_path / "images")}},
        "writer": {"output_dir": str(tmp_path / "out")},
    }
    (tmp_path / "c.yaml").write_text(json.dumps(config))
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--config", str(tmp_path / "c.yaml")])
    assert exc.value.code == 2
    assert "weights_only" in capsys.readouterr().err
    assert not marker.exists()


def test_safetensors_and_state_dicts_load(tmp_path: Path) -> None:
    reference = _net()
    save_file(reference.state_dict(), tmp_path / "w.safetensors")
    torch.save({"model": {f"module.{k}": v for k, v in reference.state_dict().items()}}, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        module = ImageClassifier(net=TinyCNN(4, 4, 2), weights=tmp_path / name)
        for key, value in reference.state_dict().items():
            assert torch.equal(module.net.state_dict()[key], value), (name, key)


def test_checkpoint_hyper_parameters_choose_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "hparams_ran"
    ckpt = {
        "state_dict": {f"net.{k}": v for k, v in _net().state_dict().items()},
        "hyper_parameters": {
            "net": {"class_path": "os.system", "init_args": {"command": f"touch {marker}"}},
            "_instantiator": "lightning.pytorch.cli.instantiate_module",
        },
    }
    torch.save(ckpt, tmp_path / "m.ckpt")
    module = ImageClassifier(net=TinyCNN(4, 4, 2), weights=tmp_path / "m.ckpt")
    assert type(module.net) is TinyCNN  # the class the config chose, whatever the checkpoint says
    assert not marker.exists()


def test_torchscript_needs_trust_and_urls_are_refused(tmp_path: Path) -> None:
    torch.jit.script(_net()).save(str(tmp_path / "scripted.pt"))
    with pytest.raises(ConfigError, match="TorchScript"):
        read_state_dict(str(tmp_path / "scripted.pt"))
    with pytest.raises(ConfigError, match=r"remote weights are refused.*allow_remote_weights"):
        read_state_dict("https://example.com/weights.pt")
    with pytest.raises(ConfigError, match="remote"):
        ImageClassifier(net=TinyCNN(4, 4, 2), weights="https://example.com/weights.pt")


def test_torchscript_loads_as_the_network_only_when_trusted(tmp_path: Path) -> None:
    net = _net().eval()
    archive = tmp_path / "scripted.pt"
    torch.jit.script(net).save(str(archive))
    with pytest.raises(ConfigError, match=r"model.torchscript=.*trust_torchscript=true"):
        ImageClassifier(torchscript=archive)
    with pytest.raises(ConfigError, match="only one of"):
        ImageClassifier(net=TinyCNN(4, 4, 2), torchscript=archive, trust_torchscript=True)
    module = ImageClassifier(torchscript=archive, trust_torchscript=True)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(module.net(x), net(x))  # the archive's network, weights and all


def test_remote_weights_download_only_when_allowed_and_still_load_safely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    net = _net()
    torch.save(net.state_dict(), served / "tiny.pt")
    evil, marker = _payload_file(tmp_path)
    (served / "evil.pt").write_bytes(evil.read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # torch.hub's cache, away from the user's
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(ConfigError, match="refused by default"):
            ImageClassifier(net=TinyCNN(4, 4, 2), weights=f"{base}/tiny.pt")
        module = ImageClassifier(net=TinyCNN(4, 4, 2), weights=f"{base}/tiny.pt", allow_remote_weights=True)
        assert all(
            torch.equal(a, b) for a, b in zip(module.net.state_dict().values(), net.state_dict().values(), strict=True)
        )
        assert module.weights.startswith(str(tmp_path / "torch_home"))  # fingerprinted by the downloaded file
        with pytest.raises(ConfigError, match="cannot be loaded safely"):
            ImageClassifier(net=TinyCNN(4, 4, 2), weights=f"{base}/evil.pt", allow_remote_weights=True)
        assert not marker.exists()
    finally:
        server.shutdown()
