"""A quiet terminal: Lightning's banners and the warnings lit_infer's own design causes, each named, filtered.

Real warnings (about the user's data, a slow setting, a GPU left unused) still show: every filter below matches one
known message, never a whole category or logger.
"""

from __future__ import annotations

import logging
import warnings

BANNERS = (
    "GPU available: ",  # the start line says which device runs
    "TPU available: ",
    "HPU available: ",
    "💡 Tip: ",  # an advert for Lightning's cloud logger
    "LOCAL_RANK: ",  # CUDA_VISIBLE_DEVICES per rank
    "Initializing distributed: ",  # one line per rank; the start line says how many
    "----------------------------------------------------------------------------------------------------\n"
    "distributed_backend=",
    "\nDetected KeyboardInterrupt",  # the CLI says in one line what an interrupt kept
)
"""Starts of Lightning's info messages that a prediction run does not need to show."""

LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.fabric.utilities.distributed",
    "lightning.pytorch.accelerators.cuda",
)

DESIGN_WARNINGS = (
    # The prediction module moves batches itself (uint8 to the device, then float): intended, with a data module.
    r"You have overridden `transfer_batch_to_device` in `LightningModule` but have passed in a `LightningDataModule`",
    # A resumed run with nothing left (or a rank with no items) has an empty loader, and its metrics are still
    # computed: a collective call every rank must make.
    r"Total length of `DataLoader` across ranks is zero",
    r"The ``compute`` method of metric \w+ was called before the ``update`` method",
    r".*LeafSpec.*",  # Lightning's own deprecation (torch.utils._pytree), not the user's
)
"""Lightning warnings about choices lit_infer makes on purpose."""


class _Banners(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(BANNERS)


_FILTER = _Banners()


def install() -> None:
    """Filter the banners (the CLI's choice) and the design warnings in this process (idempotent)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    ignore_design_warnings()


def ignore_design_warnings() -> None:
    """Filter the warnings lit_infer's design causes (done when the first public name of lit_infer is used)."""
    for message in DESIGN_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
