"""A rank's process from its first moment to its exit: it never outlives its launcher, and it leaves the process
group while the interpreter is still whole.

**Orphans.** Lightning's launcher starts ranks 1..N-1 as child processes of rank 0 and watches them (a child that
fails takes the others down within seconds), and torchrun's agent starts every rank; nothing watches the other way:
after ``kill -9`` of rank 0 or of the agent, a rank waits in its start-up (the rendezvous with a store that is gone)
or in a collective until the process group's timeout, 30 minutes. Each launched rank therefore watches its launcher
from the moment its CLI starts, before torch and Lightning are imported (seconds under load, a window in which the
launcher can die): once the launcher is gone it asks for a graceful stop (finish and commit the current batch, as on
SIGTERM) and, if the process is still there ``GRACE_S`` later (blocked in start-up or in a collective, where no batch
boundary comes), ends it with exit status 143 (a SIGTERM before the stop handler is installed ends it at once, with
the same status). Lightning's launcher hands its own pid down in ``LIT_INFER_LAUNCHER_PID``, so a rank whose
launcher died before the watch started knows it at once (its parent is then some reaper, not the launcher).
Committed batches are safe either way; the same command resumes.

**Restarts.** torchrun's default (static) rendezvous keeps one store for the whole job across
``--max-restarts``, and torch's ``env://`` rendezvous keys carry no attempt: a restarted group's gloo reads the
address a dead rank of the previous attempt left there and fails (``Gloo connectFullMesh ... Connection refused``),
and the attempt after that waits. :func:`join_process_group` joins through keys of this attempt alone
(``TORCHELASTIC_RESTART_COUNT``) before Lightning would join; Lightning then finds the group made.

**The process group.** Lightning destroys only NCCL groups at exit. A gloo group nobody destroyed is torn down during
interpreter finalization, where its worker threads can still drop tensors that need the GIL, which a finalizing
interpreter no longer gives: ``terminate called without an active exception``, SIGABRT, and a torchrun or SLURM job
marked failed after every output was written (pytorch/pytorch#190489).
:func:`lit_infer.system.leave_process_group_at_exit` destroys the group from ``atexit``, while the interpreter is whole.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

_finished = threading.Event()  # the run is over in this process: a launcher exiting now is no orphaning

GRACE_S = 10.0
"""Seconds between asking an orphaned rank to stop and ending it: within the graceful-stop bound."""
POLL_S = 0.5
LAUNCHER_ENV = "LIT_INFER_LAUNCHER_PID"
"""Set by a CLI that may launch ranks (Lightning's launcher copies the environment into each rank it starts)."""


def under_torchrun() -> bool:
    """Whether torchrun's agent (torch.distributed.elastic) started this process: it starts every rank."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def is_launched_rank() -> bool:
    """Whether another process launched this rank: torchrun (every rank), or Lightning's launcher (LOCAL_RANK > 0;
    its local rank 0 is the launcher itself)."""
    return under_torchrun() or os.environ.get("LOCAL_RANK", "0") not in ("", "0")


def launched_nodes() -> int | None:
    """How many nodes torchrun's rendezvous gathered for this attempt (``None`` outside torchrun). Under
    ``--nnodes MIN:MAX`` it changes from one restart to the next, as nodes leave and join."""
    if not under_torchrun() or "GROUP_WORLD_SIZE" not in os.environ:
        return None
    return int(os.environ["GROUP_WORLD_SIZE"])


def announce_launcher() -> None:
    """In a process that may launch ranks: tell them which pid launched them (see the module's docstring)."""
    if not is_launched_rank():
        os.environ[LAUNCHER_ENV] = str(os.getpid())


def launcher_pid() -> int:
    """The pid this rank's launcher had: Lightning's launcher says it; torchrun's agent is our parent."""
    if not under_torchrun():
        try:
            return int(os.environ[LAUNCHER_ENV])
        except (KeyError, ValueError):
            pass
    return os.getppid()


def watch_parent(grace_s: float = GRACE_S, poll_s: float = POLL_S) -> threading.Thread | None:
    """Start the watch in a launched rank (a daemon thread; nothing in Lightning's rank 0 or a single process)."""
    if not is_launched_rank():
        return None
    _finished.clear()
    thread = threading.Thread(
        target=_watch, args=(launcher_pid(), grace_s, poll_s), daemon=True, name="lit-infer-orphan"
    )
    thread.start()
    return thread


def stand_down() -> None:
    """The run in this process is over (finished or failed on its own): stop watching. Rank 0 may exit before
    this rank's interpreter does, which is no reason to signal it."""
    _finished.set()


def _watch(parent: int, grace_s: float, poll_s: float) -> None:
    while os.getppid() == parent:
        if _finished.wait(poll_s):
            return
    if _finished.is_set():
        return
    rank = os.environ.get("RANK", os.environ.get("LOCAL_RANK", "?"))
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


def join_process_group(strategy: Any, timeout: Any) -> None:
    """Under torchrun, with the agent's store: initialize the default process group of a DDP ``strategy`` through
    this restart attempt's own keys, as Lightning would (backend, ``timeout``, device), before Lightning does."""
    if not under_torchrun() or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return
    import torch
    import torch.distributed as dist

    if not dist.is_available() or dist.is_initialized():
        return
    device = strategy.root_device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    agent_store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=timeout
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group(
        strategy.process_group_backend or dist.Backend.default_device_backend_map[device.type],
        store=dist.PrefixStore(f"lit_infer/attempt_{attempt}", agent_store),
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        timeout=timeout,
        device_id=device if device.type != "cpu" else None,
    )
