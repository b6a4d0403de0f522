"""Orphans never live on: a rank whose launcher died stops, also while it is still starting up.

Lightning's launcher starts ranks 1..N-1 as child processes of rank 0 and watches them (a child that fails takes the
others down within seconds), but nothing watches the other way: after ``kill -9`` of rank 0, a child waits in its
start-up (the rendezvous with a store that is gone) or in a collective until the process group's timeout, 30
minutes. Each child rank therefore watches its parent from the moment its CLI starts: once the parent is gone it
asks for a graceful stop (finish and commit the current batch, as on SIGTERM) and, if the process is still there
``GRACE_S`` later (blocked in start-up or in a collective, where no batch boundary comes), ends it with exit status
143 (a SIGTERM before the stop handler is installed ends it at once, with the same status). Committed batches are safe either way; the same command resumes.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

_finished = threading.Event()  # the run is over in this process: a launcher exiting now is no orphaning

GRACE_S = 10.0
"""Seconds between asking an orphaned rank to stop and ending it: within the graceful-stop bound."""
POLL_S = 0.5


def is_launched_rank() -> bool:
    """Whether this process is a rank another process launched (Lightning's launcher or torchrun set LOCAL_RANK)."""
    return os.environ.get("LOCAL_RANK", "0") not in ("", "0")


def watch_parent(grace_s: float = GRACE_S, poll_s: float = POLL_S) -> threading.Thread | None:
    """Start the watch in a launched rank (a daemon thread; nothing in rank 0 or a single process)."""
    if not is_launched_rank():
        return None
    _finished.clear()
    parent = os.getppid()
    thread = threading.Thread(target=_watch, args=(parent, grace_s, poll_s), daemon=True, name="lit-infer-orphan")
    thread.start()
    return thread


def stand_down() -> None:
    """The run in this process is over (finished or failed on its own): stop watching. Rank 0 may exit before
    this rank's interpreter does, which is no reason to signal it."""
    _finished.set()


def _watch(parent: int, grace_s: float, poll_s: float) -> None:
    while os.getppid() == parent and parent != 1:
        if _finished.wait(poll_s):
            return
    if _finished.is_set():
        return
    rank = os.environ.get("LOCAL_RANK", "?")
    print(
        f"lit-infer: rank {rank}: its launching process (pid {parent}) is gone; committing and stopping",
        file=sys.stderr,
        flush=True,
    )
    # As a scheduler's SIGTERM: during start-up it ends the process at once; once GracefulStop has its handler in
    # place, the rank commits its current batch and stops at the boundary.
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace_s)
    os._exit(128 + signal.SIGTERM)  # still here: blocked where no batch boundary comes; committed work is safe
