"""Strategies Lightning 2.x lacks, registered by name: ``strategy: dp``, ``cpu_multiprocess``, ``pipeline``.

``ddp`` (one process per device, GPUs over nccl, CPUs over gloo, many nodes with torchrun or SLURM) is Lightning's
own; see docs/strategies.md for when to choose which.
"""

from lightning.pytorch.strategies import StrategyRegistry

from lit_infer.strategies.cpu_multiprocess import CPUMultiprocessStrategy
from lit_infer.strategies.dp import DataParallelStrategy
from lit_infer.strategies.pipeline import PipelineStrategy

for _strategy in (DataParallelStrategy, CPUMultiprocessStrategy, PipelineStrategy):
    if _strategy.strategy_name not in StrategyRegistry:
        _strategy.register_strategies(StrategyRegistry)

__all__ = ["CPUMultiprocessStrategy", "DataParallelStrategy", "PipelineStrategy"]
