"""Graceful stop: on SIGTERM, SIGINT or a scheduler's warning signal, finish the current batch, commit, and stop.

Lightning's predict loop ignores SIGTERM, so a preempted job dies mid-batch and, under DDP, can leave ranks waiting
on a collective. Here every rank stops at a batch boundary (its last batch is already committed by the writer),
raises :class:`StopRequested`, and the CLI exits with ``128 + signal number`` and a message that the same command
resumes. No collective is needed to agree: the signal reaches every rank (SLURM and torchrun signal every task; the
rank that launched the others forwards it to them), and a rank that stopped takes part in no further collective, so
its peers fail fast on the closed connection instead of waiting.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from lit_infer.callbacks.lightning_internals import (
    handlers_restored_after_the_run,
    launched_rank_processes,
    silence_lightning_sigterm_handler,
)
from lit_infer.errors import ConfigError
from lit_infer.lifecycle.process import is_launched_rank, launcher_pid
from lit_infer.lifecycle.stopping import StopRequested, raise_if_stopping, request, requested_signal, reset, signal_name

DEFAULT_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")
DUPLICATE_WINDOW_S = 2.0
"""Signals this close to the first are the same request delivered twice (Ctrl-C reaches every rank, and rank 0
forwards it too), not an impatient second one."""


def parse_signals(names: Sequence[str], key: str = "stop.signals") -> list[int]:
    """``["SIGTERM", "USR1", "10"]`` -> signal numbers; an unknown name is a :class:`ConfigError` naming ``key``."""
    numbers = []
    for name in names:
        text = str(name).strip().upper()
        try:
            number = int(text) if text.isdigit() else signal.Signals[text if text.startswith("SIG") else "SIG" + text]
        except KeyError:
            raise ConfigError(
                key, list(names), f"unknown signal {name!r}", "Use names such as SIGTERM, SIGINT, SIGUSR1"
            ) from None
        if number in (signal.SIGKILL, signal.SIGSTOP):
            raise ConfigError(key, list(names), f"{name} cannot be caught", "Leave SIGKILL and SIGSTOP out")
        numbers.append(int(number))
    return numbers


class GracefulStop(Callback):
    """Stop at a batch boundary on a signal: every rank commits its current batch, then the run ends resumable.

    A second signal (more than two seconds after the first) while waiting for the batch to finish stops at once, as
    that signal would without this callback; the committed batches are still safe. A rank whose parent process died
    (the launcher was killed) stops too, rather than computing on alone.

    Example::

        trainer = Trainer(callbacks=[GracefulStop(), PredictionWriter("out/")])

    Args:
        signals: Signals that request a stop. SLURM sends ``SIGUSR1`` before a preemption or the time limit with
            ``#SBATCH --signal=USR1@120`` (choose the signal there, and list it here).
    """

    def __init__(self, signals: Sequence[str] = DEFAULT_SIGNALS) -> None:
        super().__init__()
        self.signals = parse_signals(signals)
        self._previous: dict[int, Any] = {}
        self._trainer: L.Trainer | None = None
        self._launcher_pid: int | None = None
        self._announced = False
        self._requested_at = 0.0

    # ---- Lightning hooks ---------------------------------------------------------------------------------
    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        reset()
        self._trainer = trainer
        self._launcher_pid = launcher_pid() if is_launched_rank() else None
        # Lightning installs its SIGTERM handler after this hook and composes it with ours; it runs a collective
        # (a broadcast) inside the signal handler, which pairs with whatever collective a peer is in (a peer in
        # start-up, or one that got the signal later) and can leave every rank waiting for the next one: ranks
        # that outlive the signal. Ours alone forwards the signal and sets a flag.
        silence_lightning_sigterm_handler(trainer)
        self._install(replace_existing=False)

    @override
    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install(replace_existing=True)  # in place of Lightning's composition (whose own part is silenced)

    @override
    def on_predict_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        # The previous batches are predicted and with the writer (which commits the last of them on the way out,
        # in on_exception); this one has not started.
        if requested_signal() is None and self._launcher_pid is not None and os.getppid() != self._launcher_pid:
            request(signal.SIGTERM)  # orphaned: the process that launched this rank is gone
        raise_if_stopping(trainer.global_rank, before_first_batch=batch_idx == 0)

    @override
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "predict":
            # A request that came during the last batch stays pending: finalize, after the loop, must not merge
            # (it raises StopRequested and forgets the request). The next run's setup starts clean anyway.
            self._restore()

    @override
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()
        reset()  # the StopRequested being raised carries the signal; nothing else needs the flag now

    # ---- signal handling ---------------------------------------------------------------------------------
    def _install(self, replace_existing: bool) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python delivers signals to the main thread only; a run in a thread cannot catch them
        for signum in self.signals:
            previous = signal.signal(signum, self._handle)
            if not replace_existing or signum not in self._previous:
                self._previous[signum] = previous

    def _restore(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        # After an exception Lightning restores the handlers it found when the run started (ours among them) once
        # the callbacks' on_exception has run: make its saved copy hold the originals too.
        saved = handlers_restored_after_the_run(self._trainer) if self._trainer is not None else {}
        for signum, previous in self._previous.items():
            original = previous if previous is not None else signal.SIG_DFL
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, original)
            if signum in saved:
                saved[signum] = original
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if requested_signal() is not None:
            if time.monotonic() - self._requested_at < DUPLICATE_WINDOW_S:
                return  # the same request arriving twice (from the scheduler and forwarded by rank 0): one stop
            # Asked again: stop now, as this signal would without us. Committed batches stay committed.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        request(signum)
        self._requested_at = time.monotonic()
        self._forward(signum)
        if not self._announced:
            self._announced = True
            rank = self._trainer.global_rank if self._trainer is not None else 0
            print(
                f"lit-infer: {signal_name(signum)} received (rank {rank}): finishing the current batch, then stopping",
                file=sys.stderr,
                flush=True,
            )

    def _forward(self, signum: int) -> None:
        """Pass the signal on to the ranks this process launched (Lightning's launcher starts them as children)."""
        for proc in launched_rank_processes(self._trainer) if self._trainer is not None else []:
            with contextlib.suppress(Exception):
                if proc.poll() is None:
                    proc.send_signal(signum)


__all__ = ["DEFAULT_SIGNALS", "GracefulStop", "StopRequested", "parse_signals", "raise_if_stopping", "requested_signal"]
