"""A stop request: set by the signal handler (callbacks/stop.py), read at batch boundaries and before finalizing.

Process-wide, as signals are: the handler sets it, and a rank asked to stop joins no further collective.
"""

from __future__ import annotations

import signal

from lit_infer.errors import RunError

# Process-wide: signals are delivered to the process, and finalize must see the request too (a stopping rank joins
# no end-of-run collective).
_requested: int | None = None


class StopRequested(RunError):
    """A stop signal arrived; everything committed so far is kept and the same command resumes."""

    def __init__(self, signum: int, rank: int = 0, before_first_batch: bool = False) -> None:
        self.signum = signum
        self.rank = rank
        self.before_first_batch = before_first_batch
        if before_first_batch:
            how = "interrupted" if signum == signal.SIGINT else f"stopped by {signal_name(signum)}"
            message = f"{how} before the first batch; nothing written. Rerun the same command to start"
        else:
            message = (
                f"stopped by {signal_name(signum)} (rank {rank}) after committing every finished batch; "
                "rerun the same command to resume"
            )
        super().__init__(message)

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal."""
        return 128 + self.signum


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def requested_signal() -> int | None:
    """The stop signal this process received, if any."""
    return _requested


def raise_if_stopping(rank: int = 0, before_first_batch: bool = False) -> None:
    """Raise :class:`StopRequested` when this process was asked to stop."""
    if _requested is not None:
        raise StopRequested(_requested, rank, before_first_batch)


def request(signum: int) -> None:
    """Record a stop request (from the signal handler)."""
    global _requested
    _requested = signum


def reset() -> None:
    """Forget a stop request (a new run in the same process, or a test)."""
    global _requested
    _requested = None


def consume(rank: int = 0) -> None:
    """Raise :class:`StopRequested` for a pending request, forgetting it: it ends this run, not the next one."""
    signum = _requested
    if signum is not None:
        reset()
        raise StopRequested(signum, rank)
