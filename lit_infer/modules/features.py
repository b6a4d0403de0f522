"""FeatureExtractor: one embedding per image, from the penultimate layer or any named submodule."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from typing_extensions import override

from lit_infer.errors import ConfigError
from lit_infer.modules.base import PredictionModule
from lit_infer.modules.outputs import describe_output, output_choices, select_output
from lit_infer.records import Batch, Predictions


class FeatureExtractor(PredictionModule):
    """Embeddings per image, written as the ``embedding`` column (``format: npy`` stores them as one array).

    Args:
        layer: Name of the submodule whose output is the embedding (as in ``net.named_modules()``, e.g.
            ``layer4`` or ``head.global_pool``). ``None``: the input of the network's last ``nn.Linear`` (the
            penultimate features of a classifier), or the network's output if it has no linear layer.
        pool: How a 4-D feature map becomes a vector: ``avg`` (global average), ``max``, or ``flatten``.
        normalize: L2-normalise each embedding.
        **kwargs: Everything :class:`PredictionModule` takes (``net``/``factory``, ``weights``, ...).
    """

    probe_output = True

    def __init__(
        self,
        layer: str | None = None,
        pool: Literal["avg", "max", "flatten"] = "avg",
        normalize: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.layer = layer
        self.pool = pool
        self.normalize = normalize
        self._captured: list[torch.Tensor] = []
        self._hook = self._attach_hook()

    def _attach_hook(self) -> Any:
        modules = dict(self.net.named_modules())
        if self.layer is not None:
            if self.layer not in modules:
                names = [n for n in modules if n][:12]
                raise ConfigError(
                    "model.layer", self.layer, "is not a submodule of the network", f"Pick one of {names} ..."
                )
            return modules[self.layer].register_forward_hook(self._capture_output)
        linears = [m for m in self.net.modules() if isinstance(m, nn.Linear)]
        if linears:
            return linears[-1].register_forward_pre_hook(self._capture_input)
        return None

    def _capture_output(self, module: nn.Module, args: Any, output: Any) -> None:
        if not isinstance(output, torch.Tensor):
            raise ConfigError(
                "model.layer",
                self.layer,
                f"returns {describe_output(output)}, not one tensor",
                "Pick a submodule that returns a tensor (a layer inside it)",
            )
        self._captured.append(output)

    def _capture_input(self, module: nn.Module, args: Any) -> None:
        self._captured.append(args[0])

    @override
    def output_options(self) -> dict[str, Any]:
        return {"layer": self.layer, "pool": self.pool, "normalize": self.normalize}

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The embeddings of a batch, N x D: the forward's result, so that ``dp`` gathers them from its replicas.

        The hook may fire more than once per forward (the ``pipeline`` strategy runs micro-batches in order): the
        captured parts are concatenated.
        """
        self._captured = []
        try:
            outputs = select_output(self.run_net(x), self.output)
            parts = self._captured if self._hook is not None else [outputs]
        finally:
            self._captured = []
        if self.layer is None and not isinstance(outputs, torch.Tensor):
            # Which of several outputs the penultimate layer feeds is a guess: refuse it (before the first batch,
            # from the start-up probe) rather than take one silently.
            options = output_choices(outputs)
            raise ConfigError(
                "model.output",
                self.output,
                f"FeatureExtractor needs one output; the network returned {describe_output(outputs)}",
                f"Set model.output to one of {options}, or model.layer to the submodule whose output is the embedding",
            )
        if not parts or not all(isinstance(p, torch.Tensor) for p in parts):
            kind = type(parts[0]).__name__ if parts else "nothing"
            raise TypeError(f"the embedding is {kind}, not a tensor; set model.layer or override postprocess")
        features = (parts[0] if len(parts) == 1 else torch.cat(parts)).float()
        if features.ndim == 4:
            if self.pool == "avg":
                features = features.mean(dim=(2, 3))
            elif self.pool == "max":
                features = features.amax(dim=(2, 3))
        features = features.flatten(1)
        return F.normalize(features, dim=1) if self.normalize else features

    @override
    def postprocess(self, outputs: Any, batch: Batch) -> Predictions:
        return Predictions(batch.indices.numpy(), batch.paths, {"embedding": outputs}, batch.failures)
