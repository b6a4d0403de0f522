"""Several CPU processes over gloo with the machine's cores divided among them instead of oversubscribed.

Plain ``strategy: ddp`` on CPU starts N processes that each use every core for intra-op threads (and the data module
would start workers on top): N x cores threads fight for cores. Here each process gets its share.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.pytorch.strategies import DDPStrategy
from typing_extensions import override

from lit_infer.errors import ConfigError
from lit_infer.system import available_cores, leave_process_group_at_exit


def split_cores(
    cores: int, num_processes: int | None, threads_per_process: int | None, dataloader_workers: int | None
) -> tuple[int, int, int]:
    """Split ``cores`` into (processes, intra-op threads per process, DataLoader workers per process).

    Defaults: one process per 4 cores (at least 1); in each process's share, half the cores decode images in
    workers and half run the network (JPEG decoding costs about as much as a small CNN on a CPU).

    Example::

        >>> split_cores(16, None, None, None)
        (4, 2, 2)
    """
    procs = num_processes if num_processes is not None else max(1, cores // 4)
    share = max(1, cores // procs)
    workers = dataloader_workers if dataloader_workers is not None else share // 2
    threads = threads_per_process if threads_per_process is not None else max(1, share - workers)
    return procs, threads, workers


class CPUMultiprocessStrategy(DDPStrategy):
    """DDP over gloo on CPU, each process with its share of the cores (intra-op threads and decoding workers).

    Example::

        trainer = Trainer(accelerator="cpu", strategy=CPUMultiprocessStrategy(num_processes=4, threads_per_process=3))

    Args:
        num_processes: Processes on this machine. ``None``: one per 4 cores.
        threads_per_process: ``torch.set_num_threads`` in each process. ``None``: its share of the cores minus
            its decoding workers.
        dataloader_workers: Decoding workers per process (used when ``data.num_workers`` is not set). ``None``:
            half of each process's share of the cores.
    """

    strategy_name = "cpu_multiprocess"

    def __init__(
        self,
        num_processes: int | None = None,
        threads_per_process: int | None = None,
        dataloader_workers: int | None = None,
        **kwargs: Any,
    ) -> None:
        for key, value, low in (
            ("num_processes", num_processes, 1),
            ("threads_per_process", threads_per_process, 1),
            ("dataloader_workers", dataloader_workers, 0),
        ):
            if value is not None and value < low:
                raise ConfigError(
                    f"trainer.strategy.init_args.{key}", value, f"must be at least {low}", "Leave it unset for auto"
                )
        procs, threads, workers = split_cores(available_cores(), num_processes, threads_per_process, dataloader_workers)
        kwargs.setdefault("process_group_backend", "gloo")
        super().__init__(parallel_devices=[torch.device("cpu")] * procs, **kwargs)
        self.threads_per_process = threads
        self.dataloader_workers = workers
        """Read by :class:`~lit_infer.ImageDataModule` when ``data.num_workers`` is not set."""

    @override
    def setup_environment(self) -> None:
        # Before the process group and the first op, in every process (the launcher re-runs the script per rank).
        torch.set_num_threads(self.threads_per_process)
        os.environ["OMP_NUM_THREADS"] = str(self.threads_per_process)
        super().setup_environment()
        # In a user's own script too (not only under lit_infer.predict): a gloo group left to the finalizing
        # interpreter can abort a rank after its outputs are written (lifecycle/process.py says why).
        leave_process_group_at_exit()

    @classmethod
    @override
    def register_strategies(cls, strategy_registry: Any) -> None:
        strategy_registry.register(cls.strategy_name, cls, description=cls.__doc__.splitlines()[0])
