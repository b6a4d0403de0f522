"""Peak memory of a process tree (the process and its DataLoader workers), from /proc, without psutil."""

from __future__ import annotations

import os
import threading


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, from ``/proc/<pid>/task/<tid>/children`` (Linux)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:  # the process ended between the listing and the read
            continue
    return out


def pss_bytes(pid: int) -> int:
    """Proportional set size: shared pages (the workers' shared-memory batches, libraries) counted once overall."""
    # RSS where the kernel has no smaps_rollup: it counts shared pages in every process, an upper bound.
    return _proc_bytes(pid, "smaps_rollup", "Pss:") or _proc_bytes(pid, "status", "VmRSS:")


def _proc_bytes(pid: int, name: str, field: str) -> int:
    """``field`` of ``/proc/<pid>/<name>`` in bytes; 0 when the process or the field is gone."""
    try:
        with open(f"/proc/{pid}/{name}") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class PeakMemory:
    """Polls the tree of ``pid`` every ``interval`` seconds in a thread; ``peak`` is the largest total seen (bytes)."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(pss_bytes(p) for p in tree(self.pid)))
            self._stop.wait(self.interval)
