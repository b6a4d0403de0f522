"""PredictionModule: any CNN in, ``preprocess -> forward -> postprocess`` per batch, plain records out."""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torch.nn as nn
from typing_extensions import override

from lit_infer.models import build_net, load_weights
from lit_infer.preprocessing import Preprocessing, from_model
from lit_infer.records import Batch, Predictions


class PredictionModule(L.LightningModule):
    """Wraps the user's network for ``Trainer.predict``. Subclass and override the three hooks to change a step.

    Example::

        module = PredictionModule(factory="torchvision.models.resnet18", factory_kwargs={"num_classes": 10})
        trainer.predict(module, datamodule=ImageDataModule("photos/"), return_predictions=False)

    Args:
        net: The network, as ``class_path`` + ``init_args`` in a config, or an ``nn.Module`` in Python.
        factory: Import path of a function that builds the network, e.g. ``torchvision.models.resnet50`` or
            ``timm.create_model``. Use instead of ``net``.
        factory_kwargs: Keyword arguments for ``factory`` (``model_name: resnet50`` for timm).
        weights: A state_dict file (``.pt``/``.pth``, nested under ``state_dict``/``model`` and with ``module.``-style
            prefixes is fine), a Lightning ``.ckpt``, or ``.safetensors``. Loaded with ``weights_only=True``.
        strict: Refuse weights whose keys do not match the network exactly.
        preprocessing: Input geometry and colour statistics. ``None``: what the network declares (timm's
            ``pretrained_cfg``), else ImageNet's 256 -> 224 with its mean and std. The CLI hands it to the data.
        channels_last: Run the network in channels_last memory format (faster convolutions on GPUs, bf16 above all).
        allow_remote_weights: Permit a URL in ``weights`` (refused by default).
    """

    def __init__(
        self,
        net: nn.Module | None = None,
        factory: str | None = None,
        factory_kwargs: dict[str, Any] | None = None,
        weights: str | os.PathLike | None = None,
        strict: bool = True,
        preprocessing: Preprocessing | None = None,
        channels_last: bool = False,
        allow_remote_weights: bool = False,
    ) -> None:
        super().__init__()
        self.net = build_net(net, factory, factory_kwargs)
        self.weights = os.fspath(weights) if weights is not None else None
        if self.weights is not None:
            load_weights(self.net, self.weights, strict=strict, allow_remote=allow_remote_weights)
        self.net.eval()
        self.factory = factory
        self.factory_kwargs = dict(factory_kwargs or {})
        self.preprocessing = preprocessing or from_model(self.net) or Preprocessing()
        self.channels_last = channels_last
        p = self.preprocessing
        # Normalisation folded into one multiply-add on uint8 values: (x - 255 mean) * 1 / (255 std).
        self.register_buffer("pixel_mean", torch.tensor(p.mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("pixel_inv_std", 1.0 / (torch.tensor(p.std).view(1, 3, 1, 1) * 255.0), persistent=False)

    # ---- the three hooks ---------------------------------------------------------------------------------
    def preprocess(self, batch: Batch) -> torch.Tensor:
        """uint8 N x C x H x W on the device -> normalised float input in the network's dtype and memory format."""
        x = batch.images.to(self.device, non_blocking=True)
        x = (x.to(self.pixel_mean.dtype) - self.pixel_mean) * self.pixel_inv_std
        x = x.to(self.input_dtype)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=memory_format)

    @override
    def forward(self, x: torch.Tensor) -> Any:
        return self.net(x)

    def postprocess(self, outputs: Any, batch: Batch) -> Predictions:
        """Network output -> a :class:`Predictions` on the CPU. The base class writes the raw output per image."""
        return Predictions(batch.indices.numpy(), batch.paths, {"output": _to_numpy(outputs)}, batch.failures)

    # ---- Lightning ---------------------------------------------------------------------------------------
    @override
    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> Predictions:
        if len(batch) == 0:  # every image of the batch failed to decode: nothing to run, failures still count
            return Predictions.empty(batch.failures)
        return self.postprocess(self(self.preprocess(batch)), batch)

    @override
    def on_predict_start(self) -> None:
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)

    @property
    def input_dtype(self) -> torch.dtype:
        """The floating dtype of the network's parameters (bf16 under ``precision: bf16-true``)."""
        for param in self.net.parameters():
            if param.is_floating_point():
                return param.dtype
        return torch.float32

    @override
    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        # The batch moves in ``preprocess``: only the uint8 images go to the device, asynchronously from pinned memory.
        return batch

    def fingerprint(self) -> dict[str, Any]:
        """What decides this module's outputs; a resumed run must match it exactly."""
        weights = None
        if self.weights is not None and os.path.isfile(self.weights):
            weights = {"path": os.path.abspath(self.weights), "sha256": _sha256(self.weights)}
        return {
            "module": f"{type(self).__module__}.{type(self).__qualname__}",
            "net": f"{type(self.net).__module__}.{type(self.net).__qualname__}",
            "factory": self.factory,
            "factory_kwargs": _jsonable(self.factory_kwargs),
            "num_parameters": sum(p.numel() for p in self.net.parameters()),
            "weights": weights,
            "preprocessing": self.preprocessing.to_dict(),
            **self.output_options(),
        }

    def output_options(self) -> dict[str, Any]:
        """Options that change what is written (top-k, normalisation...). Subclasses add theirs."""
        return {}

    def compute_metrics(self) -> dict[str, float]:
        """Metrics over everything predicted, synced across ranks. Called on every rank at the end."""
        return {}


@functools.lru_cache(maxsize=8)
def _sha256(path: str) -> str:
    # Content, not mtime: a fresh clone or a copy keeps the same fingerprint, a retrained file does not.
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _to_numpy(outputs: Any) -> Any:
    if isinstance(outputs, torch.Tensor):
        return outputs.detach().float().cpu().numpy()
    if isinstance(outputs, (list, tuple)):
        return _to_numpy(outputs[0])
    if isinstance(outputs, Mapping):
        return _to_numpy(next(iter(outputs.values())))
    raise TypeError(f"cannot turn a network output of type {type(outputs).__name__} into columns; override postprocess")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)
