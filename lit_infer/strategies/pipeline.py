"""Pipeline model-parallel inference in one process: the network cut into stages on several devices.

Where to cut is ``stages.py``, how the stages run is ``pipelined_net.py``; this is the strategy that puts them in
place of the module's ``net`` for the run. For networks too big for one device; on devices that each hold the whole
network, ``dp`` or ``ddp`` are faster.
"""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch
import torch.nn as nn
from typing_extensions import override

from lit_infer.errors import ConfigError
from lit_infer.strategies.devices import DeviceListStrategy
from lit_infer.strategies.pipelined_net import PipelinedNet
from lit_infer.strategies.split import balance, starts_from_names
from lit_infer.strategies.stages import SPLIT_KEY, child_costs, split_stages


class PipelineStrategy(DeviceListStrategy):
    """One process, the network cut into stages over ``devices``, batches cut into micro-batches.

    Preprocessing and postprocessing run on the first device; the module's ``net`` is swapped for the pipelined
    stages during prediction and put back afterwards.

    Example::

        trainer = Trainer(strategy=PipelineStrategy(devices=["cuda:0", "cuda:1"], split_at=["layer3"]))

    Args:
        devices: One device per stage, e.g. ``[cuda:0, cuda:1]`` (the same device may repeat; ``cpu`` works).
            ``None``: the Trainer's ``accelerator`` and ``devices``.
        split_at: Names of the top-level children of the network where stages 2, 3, ... begin. ``None``: balanced
            automatically over the children.
        balance_by: ``parameters`` (memory) or ``time`` (measured forward time on the first device).
        micro_batches: Micro-batches per batch; more keeps the stages busier, fewer gives larger kernels.
    """

    strategy_name = "pipeline"

    def __init__(
        self,
        devices: list[str] | None = None,
        split_at: list[str] | None = None,
        balance_by: Literal["parameters", "time"] = "parameters",
        micro_batches: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(devices, **kwargs)
        if micro_batches < 1:
            raise ConfigError(
                "trainer.strategy.init_args.micro_batches", micro_batches, "must be at least 1", "Use 1 or more"
            )
        if balance_by not in ("parameters", "time"):
            raise ConfigError(
                "trainer.strategy.init_args.balance_by", balance_by, "unknown", "Use 'parameters' or 'time'"
            )
        self.split_at = list(split_at) if split_at else None
        self.balance_by = balance_by
        self.micro_batches = micro_batches
        self._original_net: nn.Module | None = None
        self.plan: list[tuple[str, list[str]]] = []
        """(device, top-level children) per stage, once set up."""

    @override
    def setup(self, trainer: L.Trainer) -> None:
        super().setup(trainer)
        module = self.lightning_module
        assert module is not None
        net = getattr(module, "net", None)
        if not isinstance(net, nn.Module):
            raise ConfigError(
                "trainer.strategy", "pipeline", "needs a module with a `net` attribute", "Use lit_infer's modules"
            )
        devices = self.device_list
        children = [name for name, _ in net.named_children()]
        if self.split_at is not None:
            starts = starts_from_names(children, self.split_at)
            if len(starts) != len(devices):
                raise ConfigError(
                    SPLIT_KEY,
                    self.split_at,
                    f"makes {len(starts)} stages for {len(devices)} devices",
                    "Name one split point fewer than there are devices",
                )
        else:
            if len(children) < len(devices):
                raise ConfigError(
                    "trainer.strategy.init_args.devices",
                    [str(d) for d in devices],
                    f"has more devices than the network has top-level children ({len(children)})",
                    "Use fewer devices, or give split_at",
                )
            starts = balance(child_costs(net, self.balance_by, self._example(module)), len(devices))
        stages = split_stages(net, starts)
        self.plan = [
            (str(d), children[a:b]) for d, a, b in zip(devices, starts, [*starts[1:], len(children)], strict=True)
        ]
        self._original_net = net
        module.net = PipelinedNet(stages, devices, self.micro_batches, self.thread_context)

    def _example(self, module: nn.Module) -> torch.Tensor | None:
        if self.balance_by != "time":
            return None
        size = getattr(getattr(module, "preprocessing", None), "crop_size", 224)
        dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
        return torch.rand(self.micro_batches, 3, size, size, device=self.root_device).to(dtype)

    @override
    def teardown(self) -> None:
        module = self.lightning_module
        if module is not None and self._original_net is not None:
            pipelined = module.net
            if isinstance(pipelined, PipelinedNet):
                pipelined.close()
            # The stages share the original modules' parameters: the user's network is back, on the first device.
            module.net = self._original_net.to(self.root_device)
            self._original_net = None
        super().teardown()
