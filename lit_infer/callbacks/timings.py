"""BatchTimings: what the run's report needs recorded while it runs: per-batch timings of each rank, and on rank 0
how the run was started (command line, resolved config, versions, machine, devices).

Each rank keeps one small row per batch in memory and rewrites its own ``timings-rank<R>.json`` now and then
(atomically, at most every few seconds) and at the end; past :data:`MAX_ROWS` rows, neighbours are merged in
pairs, so memory and file stay bounded (a few hundred KB) however long the run. The files live in
``<output_dir>/.lit_infer_report/``, not in the work folder, which finalize removes before the report is made.
"""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import sys
import time
from datetime import datetime, timezone
from typing import Any

import lightning as L
from typing_extensions import override

from lit_infer.atomic import atomic_open
from lit_infer.records import Predictions
from lit_infer.report.files import REPORT_DIR, RUN_INFO, timings_name
from lit_infer.system import available_cores, process_started_at

MAX_ROWS = 4096
FLUSH_SECONDS = 10.0


class BatchTimings(L.Callback):
    """Records per-batch timings on every rank and how the run started on rank 0, for ``report.html``.

    Cheap: two clock reads per batch and a rewrite of a small file every :data:`FLUSH_SECONDS`. Nothing is recorded
    when the output folder is a URL (the report is made for local folders only) or the run is already complete.

    Example::

        trainer = Trainer(callbacks=[PredictionWriter("outputs/run1"), BatchTimings()])

    Args:
        config: The resolved config as YAML text (the CLI gives it), shown in the report.
    """

    def __init__(self, config: str | None = None) -> None:
        self.config = config
        self.folder: str | None = None
        self.rank = 0
        self._meta: dict[str, Any] = {}
        self._rows: list[list[float]] = []
        self._pending: list[float] | None = None
        self._pending_batches = 0
        self._per_row = 1
        self._t0 = self._last = self._begin = self._flushed = 0.0
        self._wait = 0.0

    @override
    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lit_infer.callbacks.writer import PredictionWriter

        writers = [c for c in trainer.callbacks if isinstance(c, PredictionWriter)]
        plan = writers[0].plan if writers else None
        self.folder = None
        if plan is None or plan.complete or "://" in plan.output_dir:
            return
        self.folder = os.path.join(plan.output_dir, REPORT_DIR)
        self.rank, self._rows, self._per_row = plan.rank, [], 1
        self._pending, self._pending_batches = None, 0
        self._t0 = self._last = self._flushed = time.perf_counter()
        started = time.time()
        self._meta = {
            "rank": plan.rank,
            "world_size": plan.world_size,
            "attempt": plan.attempt,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "device": str(trainer.strategy.root_device),
            "process_started_at": process_started_at(),
            "predict_started_at": started,
        }
        if plan.rank == 0:
            self._write(RUN_INFO, run_info(trainer, self.config, started))
        self._flush()  # a stale file of an earlier run under this rank's name is replaced from the start

    @override
    def on_predict_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._begin = time.perf_counter()
        self._wait = self._begin - self._last

    @override
    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.folder is None:
            return
        now = time.perf_counter()
        n = len(outputs) + len(outputs.failures) if isinstance(outputs, Predictions) else 0
        row = [round(now - self._t0, 4), n, round(self._wait, 4), round(now - self._begin, 4)]
        self._last = now
        self._pending = row if self._pending is None else _merge([self._pending, row])
        self._pending_batches += 1
        if self._pending_batches == self._per_row:  # a row holds as many batches as every row before it
            self._rows.append(self._pending)
            self._pending, self._pending_batches = None, 0
        if len(self._rows) >= MAX_ROWS:
            self._rows = [_merge(self._rows[i : i + 2]) for i in range(0, len(self._rows), 2)]
            self._per_row *= 2
        if now - self._flushed > FLUSH_SECONDS:
            self._flush()

    @override
    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.folder is not None:
            self._flush()

    def _flush(self) -> None:
        self._flushed = time.perf_counter()
        rows = self._rows + ([self._pending] if self._pending is not None else [])
        self._write(
            timings_name(self.rank), {**self._meta, "batches_per_row": self._per_row, "columns": COLUMNS, "rows": rows}
        )

    def _write(self, name: str, record: dict[str, Any]) -> None:
        """Atomically, compact; a full or read-only disk stops the recording, never the run (the writer says so)."""
        if self.folder is None:
            return
        try:
            os.makedirs(self.folder, exist_ok=True)
            with atomic_open(os.path.join(self.folder, name), "w", durable=False) as f:
                json.dump(record, f, separators=(",", ":"))
        except OSError:
            self.folder = None


COLUMNS = ["seconds", "images", "wait_seconds", "step_seconds"]
"""A row: seconds since this rank's predict loop started (at the batch's end), inputs in the batch, seconds waited
for it (the data loader, and the previous batch's commit), seconds in ``predict_step``."""


def _merge(rows: list[list[float]]) -> list[float]:
    last = rows[-1]
    return [last[0], sum(r[1] for r in rows), round(sum(r[2] for r in rows), 4), round(sum(r[3] for r in rows), 4)]


def run_info(trainer: L.Trainer, config: str | None, started: float) -> dict[str, Any]:
    """How the run started, for the report: command line, config, versions, machine, devices."""
    import torch

    devices = [str(trainer.strategy.root_device)]
    if torch.cuda.is_available():
        devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "argv": redact_argv(sys.argv),
        "cwd": os.getcwd(),
        "config": redact(config) if config is not None else None,
        "versions": _versions(),
        "python": platform.python_version(),
        "machine": {
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "processor": platform.machine(),
            "cores": available_cores(),
        },
        "accelerator": type(trainer.accelerator).__name__,
        "devices": devices,
        "num_nodes": trainer.num_nodes,
        "world_size": trainer.world_size,
        "strategy": type(trainer.strategy).__name__,
        "precision": str(trainer.precision),
        "process_started_at": datetime.fromtimestamp(process_started_at(), timezone.utc).isoformat(timespec="seconds"),
        "predict_started_at": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
    }


_SECRET = (
    r"(?:[\w.-]*(?:secret|password|passwd|token|credential|access_key|private_key|api_key)[\w.-]*|(?:[\w-]*\.)*key)"
)
_SECRET_VALUES = [
    # YAML ``secret: value`` (not ``null``, ``{}``, ``[]`` or nothing, which hold no secret)
    (re.compile(rf"(?im)^(\s*-?\s*{_SECRET}\s*:)(?!\s*(?:null|\{{\}}|\[\])?\s*$).+$"), " '***'"),
    (re.compile(rf"(?i)(\"{_SECRET}\"\s*:\s*)(\"(?:[^\"\\]|\\.)*\"|[^,}}\s]+)"), '"***"'),  # JSON
    (re.compile(rf"(?i)^(--{_SECRET}=).+$"), "***"),  # --data.reading.storage_options.secret=...
]


def redact(text: str) -> str:
    """``text`` with the value of every secret-looking key (``secret``, ``key``, ``token``, ``password``...)
    masked: the report is a file people share, and a config may carry storage credentials."""
    for pattern, mask in _SECRET_VALUES:
        text = pattern.sub(lambda m, mask=mask: m.group(1) + mask, text)
    return text


def redact_argv(argv: list[str]) -> list[str]:
    out = [redact(a) for a in argv]
    for i in range(1, len(out)):
        if re.fullmatch(rf"(?i)--{_SECRET}", argv[i - 1]):  # --key VALUE: the value is the next word
            out[i] = "***"
    return out


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("lit_infer", "torch", "lightning", "torchvision", "timm", "numpy", "pillow", "torchmetrics"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out
