"""PredictionModule: any CNN in, ``preprocess -> forward -> postprocess`` per batch, plain records out."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from typing import Any, Literal

import lightning as L
import torch
import torch.nn as nn
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from lit_infer.checksum import sha256_file
from lit_infer.data.decode import Decoder
from lit_infer.data.gpu_decode import decode_batch
from lit_infer.errors import ConfigError
from lit_infer.models import build_net, load_torchscript, load_weights, resolve_weights
from lit_infer.modules.oom import SplitOnOOM
from lit_infer.modules.outputs import blank_input, output_columns, refuse_rejected_input, select_output
from lit_infer.plan import DataInfo, Plan
from lit_infer.preprocessing import Preprocessing, describe, resolve
from lit_infer.records import Batch, Predictions, stacked


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
            ``pretrained_cfg``, resolved as timm's ``resolve_data_config``), else torchvision's ImageNet 256 -> 224
            bilinear with its mean and std. The CLI hands it to the data; the run's first line says which it was.
        output: The element of a tuple/list (index) or dict (key) output that is the prediction. ``None``: all of
            it, a tuple/list/dict written whole, each element its own column (``output_0``, ``output_<key>``).
        test_size: With a network that declares it (timm's ``test_input_size`` / ``test_crop_pct``), use its test
            size instead of its training size (timm's ``use_test_size``). Ignored when ``preprocessing`` is given.
        channels_last: Run the network in channels_last memory format (faster convolutions on GPUs, bf16 above all).
            ``None``: on for CUDA; on a CPU the network runs channels_last on plain NCHW input (ResNet-18 on a
            2-core x86 CPU: 1.25x faster), and goes back to NCHW if it reshapes with ``view`` where that fails.
        compile: ``torch.compile`` the network before predicting: ``true`` (mode ``default``) or a mode name
            (``reduce-overhead``, ``max-autotune``, ``max-autotune-no-cudagraphs``). Costs start-up time (tens of
            seconds for a ResNet-50), pays off on long runs: ResNet-50 bf16 went from 15.5k to 22.5k images/s on H200.
        allow_remote_weights: Permit a URL in ``weights`` (refused by default).
        torchscript: A ``torch.jit.save`` archive as the whole network, instead of ``net`` or ``factory``. Loading
            one runs code from the file, so it also needs ``trust_torchscript``.
        trust_torchscript: Confirm that ``torchscript`` comes from a source you trust (off by default).
    """

    def __init__(
        self,
        net: nn.Module | None = None,
        factory: str | None = None,
        factory_kwargs: dict[str, Any] | None = None,
        weights: str | os.PathLike | None = None,
        strict: bool = True,
        preprocessing: Preprocessing | None = None,
        channels_last: bool | None = None,
        allow_remote_weights: bool = False,
        compile: bool | Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = False,
        torchscript: str | os.PathLike | None = None,
        trust_torchscript: bool = False,
        test_size: bool = False,
        output: int | str | None = None,
    ) -> None:
        super().__init__()
        if torchscript is None:
            self.net = build_net(net, factory, factory_kwargs)
        elif net is not None or factory is not None:
            raise ConfigError(
                "model.torchscript",
                os.fspath(torchscript),
                "a TorchScript archive is the whole network",
                "Give only one of model.net, model.factory and model.torchscript",
            )
        else:
            self.net = load_torchscript(os.fspath(torchscript), trust_torchscript)
        # A URL (only with allow_remote_weights) becomes its downloaded copy: loaded and fingerprinted like any file.
        self.weights = resolve_weights(os.fspath(weights), allow_remote_weights) if weights is not None else None
        if self.weights is not None:
            load_weights(self.net, self.weights, strict=strict, allow_remote=allow_remote_weights)
        self.net.eval()
        self.factory = factory
        self.factory_kwargs = dict(factory_kwargs or {})
        self.preprocessing, self.preprocessing_origin = resolve(preprocessing, self.net, test_size)
        self.output = output
        self.channels_last = channels_last
        self.compile = compile
        self._compiled: Callable[[torch.Tensor], Any] | None = None
        self._nchw_fallback = False
        self._cpu_input: torch.Tensor | None = None
        self.oom_split = SplitOnOOM()
        self.plan: Plan | None = None
        """The run's plan (:mod:`lit_infer.plan`), when a PredictionWriter plans the run."""
        p = self.preprocessing
        # Normalisation folded into one multiply-add on uint8 values: (x - 255 mean) * 1 / (255 std).
        self.register_buffer("pixel_mean", torch.tensor(p.mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("pixel_inv_std", 1.0 / (torch.tensor(p.std).view(1, 3, 1, 1) * 255.0), persistent=False)

    # ---- the three hooks ---------------------------------------------------------------------------------
    def preprocess(self, batch: Batch) -> torch.Tensor:
        """uint8 N x C x H x W on the device -> normalised float input in the network's dtype and memory format."""
        images = stacked(batch.images, type(self).__name__).to(self.device, non_blocking=True)
        memory_format = torch.channels_last if self.use_channels_last else torch.contiguous_format
        # One pass converts uint8 -> float and lays the batch out; the normalisation then runs in place. On a CPU
        # this is 3-4x faster than chained out-of-place ops (no 4-byte temporaries, see BENCHMARKS.md).
        x = self._input_tensor(images.shape, memory_format)
        x.copy_(images).sub_(self.pixel_mean).mul_(self.pixel_inv_std)
        return x.to(self.input_dtype)

    def _input_tensor(self, shape: torch.Size, memory_format: torch.memory_format) -> torch.Tensor:
        dtype = self.pixel_mean.dtype
        if self.device.type != "cpu":
            return torch.empty(shape, dtype=dtype, device=self.device, memory_format=memory_format)
        # On a CPU the float batch is reused from one batch to the next (the network consumes it before the next):
        # a fresh 38 MB tensor per batch of 64 costs more in page faults than the normalisation (3x, BENCHMARKS.md).
        buf = self._cpu_input
        fits = buf is not None and buf.shape == shape and buf.dtype == dtype
        if (
            not fits
            or not buf.is_contiguous(memory_format=memory_format)
            or buf.is_inference() != torch.is_inference_mode_enabled()
        ):
            buf = torch.empty(shape, dtype=dtype, memory_format=memory_format)
            self._cpu_input = buf
        return buf

    @override
    def forward(self, x: torch.Tensor) -> Any:
        return select_output(self.run_net(x), self.output)

    def run_net(self, x: torch.Tensor) -> Any:
        """The network (compiled, if asked) on a prepared input, with the automatic NCHW fallback."""
        try:
            return self._compiled(x) if self._compiled is not None else self.net(x)
        except (RuntimeError, AssertionError, ValueError) as exc:
            refuse_rejected_input(exc, x, self.preprocessing.crop_size)  # a net built for another input size
            # ``view`` fails on channels_last activations: ``channels_last: null`` falls back to NCHW for the run.
            if self.channels_last is not None or self._nchw_fallback or "view size is not compatible" not in str(exc):
                raise
            self._nchw_fallback = True
            self.net.to(memory_format=torch.contiguous_format)
            self._compiled = None if self._compiled is None else torch.compile(self.net.forward, mode=self._mode)
            return self.run_net(x.contiguous())

    def postprocess(self, outputs: Any, batch: Batch) -> Predictions:
        """Network output -> :class:`Predictions`. The base class writes the raw output per image.

        Leave tensors on the device: ``Predictions`` copies them to the host without waiting for the GPU, which
        then runs the next batch while this one is written; a ``.cpu()`` here would idle it at every batch.
        """
        return Predictions(batch.indices.numpy(), batch.paths, output_columns(outputs, rows=len(batch)), batch.failures)

    announce = True  # say at the start what preprocessing was assumed (a strategy's copies of the module do not)
    probe_output = False
    """Run the network once on a blank image at the start and hand its output to :meth:`check_output`."""

    def check_output(self, outputs: Any) -> None:
        """Refuse an output this module cannot use (the base class writes any), before the first batch."""

    # ---- Lightning ---------------------------------------------------------------------------------------
    @override
    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> Predictions:
        if batch.encoded is not None:  # data.decoding.decode=gpu: the workers read bytes, nvJPEG decodes them here
            batch = decode_batch(batch, self._device_decoder(), self.device)
        if len(batch) == 0:  # every image of the batch failed to decode: nothing to run, failures still count
            return Predictions.empty(batch.failures)
        # Out of device memory: the batch is split and retried, every image still predicted once (modules/oom.py).
        return self.oom_split(batch, lambda part: self.postprocess(self(self.preprocess(part)), part))

    @override
    def on_predict_start(self) -> None:
        if self.announce:
            rank_zero_info(self.describe_preprocessing())  # say what was assumed, once, and who decided it
        if self.probe_output:
            self.check_output(self.forward(blank_input(self)))
        if self.net_channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.compile and self._compiled is None:
            # The bound forward, not the module: as a submodule the compiled wrapper would rename the state_dict keys.
            self._compiled = torch.compile(self.net.forward, mode=self._mode)

    def use_plan(self, plan: Plan) -> None:
        """Take the run's plan (what the data tells the model, the device metrics sync on). Called before ``setup``."""
        self.plan = plan

    def describe_preprocessing(self) -> str:
        """One line: the resolved preprocessing, exact or fast, and where it came from (logged at the start)."""
        info = self.plan.data if self.plan is not None else DataInfo()
        return describe(self.preprocessing, self.preprocessing_origin, info.pixels)

    def _device_decoder(self) -> Decoder:
        # The data's own decoder (max_pixels, retries) for the Pillow fallback, from the plan; ours if there is none.
        decoder = self.plan.data.decoder if self.plan is not None else None
        return decoder if isinstance(decoder, Decoder) else Decoder(self.preprocessing)

    @property
    def use_channels_last(self) -> bool:
        """The input's layout: ``channels_last``, with ``None`` resolved to on for CUDA (off after the fallback)."""
        if self.channels_last is not None:
            return self.channels_last
        # After the NCHW fallback the input must be NCHW too: cuDNN gives channels_last outputs for channels_last
        # inputs, and the network's ``view`` would fail again.
        return self.device.type == "cuda" and not self._nchw_fallback

    @property
    def _mode(self) -> str:
        return "default" if self.compile is True else str(self.compile)

    @property
    def net_channels_last(self) -> bool:
        """The network's layout: as the input's, and with ``None`` also on CPUs (oneDNN is faster in it)."""
        if self.channels_last is not None or self._nchw_fallback:
            return bool(self.channels_last)
        return self.device.type in ("cuda", "cpu")

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
            weights = {"path": os.path.abspath(self.weights), "sha256": sha256_file(self.weights)}  # content, not mtime
        elif self.weights is None:
            # No weights file: the parameters themselves (a factory's pretrained download, a random init) decide the
            # outputs, and a rerun with other ones must not mix into this run's files.
            weights = {"parameters_sha256": _parameters_sha256(self.net)}
        return {
            "module": f"{type(self).__module__}.{type(self).__qualname__}",
            "net": f"{type(self.net).__module__}.{type(self.net).__qualname__}",
            "factory": self.factory,
            "factory_kwargs": _jsonable(self.factory_kwargs),
            "num_parameters": sum(p.numel() for p in self.net.parameters()),
            "weights": weights,
            "preprocessing": self.preprocessing.to_dict(),
            "output": self.output,
            **self.output_options(),
        }

    def output_options(self) -> dict[str, Any]:
        """Options that change what is written (top-k, normalisation...). Subclasses add theirs."""
        return {}

    def compute_metrics(self) -> dict[str, float]:
        """Metrics over everything predicted, synced across ranks. Called on every rank at the end."""
        return {}

    def metrics_to_device(self, *metrics: nn.Module) -> None:
        """Called at finalize, after Lightning has moved the module to the CPU: the metrics' states go back to this
        rank's device (from the plan), where NCCL can sync them (it has no CPU tensors)."""
        device = torch.device(self.plan.device) if self.plan is not None else self.device
        for metric in metrics:
            metric.to(device)


def _parameters_sha256(net: nn.Module) -> str:
    """Content hash of a network's parameters and buffers (names, dtypes, shapes, values). Not cached: a cache keyed
    by the module kept networks alive and went stale when weights changed in place; it runs once per run's plan."""
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{t.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)
