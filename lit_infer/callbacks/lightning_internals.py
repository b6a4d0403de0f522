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
