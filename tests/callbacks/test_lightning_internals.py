"""Every Lightning internal lit_infer touches (callbacks/lightning_internals.py), checked against the installed
Lightning: an upgrade that moves one fails here, by name, instead of silently changing a run's behaviour."""

from __future__ import annotations

import signal
import sys
from typing import Any

import lightning as L
import pytest
import torch

from lit_infer.callbacks.lightning_internals import (
    handlers_restored_after_the_run,
    launched_rank_processes,
    silence_lightning_sigterm_handler,
)


class _Boring(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)

    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        return self.layer(batch)


class _Peek(L.Callback):
    def __init__(self) -> None:
        self.saved: dict | None = None
        self.procs: list | None = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.saved = handlers_restored_after_the_run(trainer)
        self.procs = launched_rank_processes(trainer)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_the_saved_signal_handlers_are_where_lit_infer_patches_them() -> None:
    peek = _Peek()
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, callbacks=[peek])
    loader = torch.utils.data.DataLoader(torch.zeros(4, 2), batch_size=2)
    trainer.predict(_Boring(), loader, return_predictions=False)
    # A dict of signal number -> handler that Lightning restores in its teardown, holding SIGTERM's at least.
    assert isinstance(peek.saved, dict) and signal.SIGTERM in peek.saved
    assert peek.procs == []  # one process, no launcher


def test_the_subprocess_launcher_keeps_its_children_in_procs() -> None:
    from lightning.pytorch.strategies import DDPStrategy
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=DDPStrategy(), logger=False)
    launcher = trainer.strategy.launcher
    assert isinstance(launcher, _SubprocessScriptLauncher)
    assert launcher.procs == [] and launched_rank_processes(trainer) == []  # none started yet: a plain list


class _Silence(L.Callback):
    def __init__(self) -> None:
        self.during: list[Any] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        silence_lightning_sigterm_handler(trainer)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.during.append(signal.getsignal(signal.SIGTERM))


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_lightnings_sigterm_handler_is_silenced_where_it_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector

    # Lightning's own handler must not run (it broadcasts inside the signal handler): make it fail if it does.
    def broadcast_in_handler(self: Any, signum: int, frame: Any) -> None:
        raise AssertionError("Lightning's SIGTERM handler ran")

    monkeypatch.setattr(_SignalConnector, "_sigterm_notifier_fn", broadcast_in_handler)
    silence = _Silence()
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, callbacks=[silence])
    loader = torch.utils.data.DataLoader(torch.zeros(4, 2), batch_size=2)
    trainer.predict(_Boring(), loader, return_predictions=False)
    [installed] = silence.during
    assert installed is not signal.SIG_DFL and callable(installed)  # Lightning's composition, during the run
    installed(signal.SIGTERM, None)  # runs its parts: the silenced notifier first, no broadcast, no error
