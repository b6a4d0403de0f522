"""A quiet terminal: Lightning's banners and the warnings lit_infer's own design causes, each named, filtered.

Real warnings (about the user's data, a slow setting, a GPU left unused) still show: every filter below matches one
known message, never a whole category or logger.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

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
    # A Trainer built with the default logger=True: lit_infer.predict drops that logger (prediction logs nothing).
    r"Starting from v1.9.0, `tensorboardX` has been removed as a dependency",
)
"""Lightning warnings about choices lit_infer makes on purpose."""


class _Banners(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(BANNERS)


_FILTER = _Banners()


def install() -> None:
    """Filter the banners and the design warnings in this process, and show lit_infer's own warnings as one
    ``lit-infer: warning: ...`` line (idempotent). Done by the CLI and when the first public name of lit_infer is
    used, so that ``lit_infer.predict`` from Python is as quiet as ``lit-infer predict``."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    ignore_design_warnings()
    if not getattr(warnings.showwarning, "_lit_infer", False):
        warnings.showwarning = _one_line(warnings.showwarning)


def ignore_design_warnings() -> None:
    """Filter the warnings lit_infer's design causes."""
    for message in DESIGN_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _one_line(show: Callable[..., None]) -> Callable[..., None]:
    """``showwarning`` that prints a warning raised in lit_infer's code (or worded as ours) as one prefixed line, not
    ``file:line: UserWarning:`` and a source line; everyone else's as before."""

    def showwarning(message: Any, category: type[Warning], filename: str, lineno: int, *args: Any) -> None:
        text = str(message)
        if not (os.path.abspath(filename).startswith(_PACKAGE) or text.startswith("lit-infer: ")):
            show(message, category, filename, lineno, *args)
            return
        file = args[0] if args and args[0] is not None else sys.stderr
        with contextlib.suppress(OSError, ValueError):
            file.write(f"lit-infer: warning: {text.removeprefix('lit-infer: ')}\n")

    showwarning._lit_infer = True  # type: ignore[attr-defined]
    return showwarning
