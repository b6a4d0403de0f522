"""Units handed out as processes become free, through the process group's own store: no extra service.

A run of several ranks leases its pending units one at a time: whichever process (a rank, or one of its DataLoader
workers) is ready for more work takes the next one with one atomic ``add`` on torch.distributed's TCPStore, the
store every rank of the group already talks to (``MASTER_ADDR:MASTER_PORT``: Lightning's rank 0 or torchrun's
agent hosts it). A slow or busy rank simply takes fewer units; nobody waits for it at the end but for its last unit.

**Expiry.** A lease lives as long as its attempt: the counter's key carries the run id rank 0 draws at each plan,
so a restarted group (torchrun ``--max-restarts``, a SLURM requeue, a rerun by hand) starts from a fresh counter over
the units still without a part: what a dead attempt leased and did not commit is leased again. Within an attempt the
holder of a lease cannot die alone: one dead rank ends the whole group (gloo has no partial groups), so no lease
needs a clock.

**At most once.** Each index is given once per attempt. A unit redone after its earlier holder's attempt ended (a
process of that attempt still finishing its last batch, say) is committed once all the same: the part's record is
created exclusively (see :meth:`lit_infer.output.parts.PartWriter.commit`), and the second committer drops its rows.

Workers are separate processes with no share of their rank's connection: each opens its own client (a TCP
connection to the same store) the first time it asks; a connection is never used by a process it was not opened in
(a forked worker opens its own).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

LEASE_PREFIX = "lit_infer/leases/"
CONNECT_TIMEOUT_S = 300.0
"""How long a process waits for the store when it opens its client (a loaded machine starts ranks slowly)."""


class UnitLeases:
    """An attempt's lease counter over ``count`` pending units, shared by every rank and worker of the group.

    Args:
        host: The store's host (``MASTER_ADDR``).
        port: Its port (``MASTER_PORT``).
        run_id: This attempt's id, drawn by rank 0 at plan time (a fresh counter per attempt).
        count: Units; :meth:`next` gives each of ``0 .. count-1`` exactly once over all processes. ``None``: not
            known yet (a folder still being listed): every number is given once, and whoever gets one past the last
            unit stops asking.

    Example::

        leases = UnitLeases.from_environment(plan.run_id, len(units))
        while (i := leases.next()) is not None:
            read(units[i])
    """

    def __init__(self, host: str, port: int, run_id: str, count: int | None) -> None:
        self.host, self.port, self.count = host, port, count
        self.key = f"{LEASE_PREFIX}{run_id}"
        self._store: Any = None
        self._pid = 0

    @classmethod
    def from_environment(cls, run_id: str, count: int | None) -> UnitLeases:
        """The group's store as torch.distributed's ``env://`` rendezvous found it (set on every rank by Lightning's
        launcher, SLURM's environment or torchrun)."""
        return cls(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), run_id, count)

    def next(self) -> int | None:
        """The next unit's position, or ``None`` once every unit has been leased."""
        if self.count == 0:
            return None
        taken = self._client().add(self.key, 1)  # atomic on the store: 1, 2, 3 ... across every client
        return taken - 1 if self.count is None or taken <= self.count else None

    def taken(self) -> int:
        """Units leased so far by every process of the group (this attempt's progress, as the store counts it)."""
        if self.count == 0:
            return 0
        taken = int(self._client().add(self.key, 0))
        return taken if self.count is None else min(self.count, taken)

    def _client(self) -> Any:
        if self._store is None or self._pid != os.getpid():
            import torch.distributed as dist

            self._store = dist.TCPStore(
                self.host, self.port, is_master=False, timeout=timedelta(seconds=CONNECT_TIMEOUT_S)
            )
            self._pid = os.getpid()
        return self._store

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None, "_pid": 0}  # a worker opens its own connection
