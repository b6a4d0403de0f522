"""The only places lit_infer reaches into Lightning's internals, where Lightning has no public way to do it.

Each access is plain attribute access (an upgrade that moves it fails loudly, never silently), and
``tests/callbacks/test_lightning_internals.py`` checks every one against the installed Lightning.
"""

from __future__ import annotations

import subprocess
from typing import Any

import lightning as L
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher


def handlers_restored_after_the_run(trainer: L.Trainer) -> dict[int, Any]:
    """The signal handlers Lightning saved when the run started and puts back in its own teardown.

    Lightning saves them after the callbacks' ``setup`` (so ours are among them) and reinstalls them after the
    callbacks' ``on_exception``: a callback that restores the user's handlers must also restore them in this copy,
    or Lightning reinstates the callback's handlers once the run is over. No public API exposes it.
    """
    return trainer._signal_connector._original_handlers


def launched_rank_processes(trainer: L.Trainer) -> list[subprocess.Popen]:
    """The rank processes this process started with Lightning's subprocess launcher (``ddp`` on one machine,
    ``cpu_multiprocess``); ``[]`` under any other launcher (torchrun and SLURM start the ranks themselves)."""
    launcher = trainer.strategy.launcher
    if not isinstance(launcher, _SubprocessScriptLauncher):
        return []
    return list(launcher.procs)


def silence_lightning_sigterm_handler(trainer: L.Trainer) -> None:
    """Make the SIGTERM handler Lightning installs when the run starts do nothing on this trainer.

    Lightning composes its handler with the one already installed (GracefulStop's, which stays in charge) and looks
    its own up on the connector when the run starts, so an attribute set before then replaces it. Its handler
    broadcasts from inside the signal handler, a collective no peer is waiting for.
    """
    connector = trainer._signal_connector
    connector._sigterm_notifier_fn  # noqa: B018 -- moved or renamed in an upgrade: fail here, loudly
    connector._sigterm_notifier_fn = _ignore_signal


def _ignore_signal(signum: int, frame: Any) -> None:
    """Lightning's SIGTERM handler, silenced: GracefulStop forwards the signal and stops at a batch boundary."""


def process_group_timeout(strategy: Any) -> Any:
    """The timeout a DDP strategy would give ``init_process_group`` (``DDPStrategy(timeout=...)``); not public."""
    return strategy._timeout
