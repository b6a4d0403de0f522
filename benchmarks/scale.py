"""Scale run: a list of 1,000,000 (or 10,000, or 1,000) lines pointing at a few hundred real tiny JPEGs, or a folder
of that many files (hard links to them), through the CLI with the quickstart net, for ``writer.layout: single`` and
``parts``.

    python -m benchmarks.scale                                    # 1,000 / 10,000 / 1,000,000, bounded at 1M
    python -m benchmarks.scale --counts 1000000 --full            # 1M end to end (about 15 min on 2 cores)
    python -m benchmarks.scale --source folder --counts 1000,200000 --layouts single --batches 5

Measured per run, in a fresh process: time from the process's start to its first predicted batch, steady images/s
(after the first batch), peak memory (PSS) of the process tree, and for a complete run the time from the last batch
to the finished outputs (finalize: merge, or manifest). A bounded run stops itself after ``--batches`` batches with
SIGTERM (the graceful stop), so it measures start-up and the steady rate only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L

from benchmarks.harness import make_jpegs
from benchmarks.procmem import PeakMemory

REPO = Path(__file__).resolve().parents[1]


class BatchClock(L.Callback):
    """Appends the wall-clock time of each predicted batch's end (and its size) to ``path``, one JSON per line.

    Args:
        path: File to append to.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._f: Any = None

    def on_predict_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any) -> None:
        if self._f is None:
            self._f = open(self.path, "a", buffering=1)  # noqa: SIM115 -- one line per batch, closed at exit
        self._f.write(json.dumps({"t": time.time(), "n": len(outputs) + len(outputs.failures)}) + "\n")


def _list(folder: Path, images: list[Path], count: int) -> Path:
    path = folder / f"list_{count}.txt"
    if not path.exists():
        with open(path, "w") as f:
            for i in range(count):
                f.write(f"{images[i % len(images)]}\n")
    return path


def _folder(folder: Path, images: list[Path], count: int) -> Path:
    """A flat folder of ``count`` files, hard links to ``images`` (its listing is what is measured, not the disk)."""
    path = folder / f"folder_{count}"
    if not path.exists():
        tmp = folder / f".folder_{count}.tmp"
        tmp.mkdir(exist_ok=True)
        for i in range(count):
            name = tmp / f"{i:07d}.jpg"
            if not name.exists():
                os.link(images[i % len(images)], name)
        tmp.rename(path)
    return path


def run_one(listing: Path, layout: str, work: Path, batches: int | None, batch_size: int, workers: int) -> dict:
    out = work / f"out_{listing.stem}_{layout}"
    clock = work / f"clock_{listing.stem}_{layout}.jsonl"
    clock.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "lit_infer", "predict", "--config", "configs/quickstart.yaml"]
    cmd += ["--data.init_args.source", str(listing), "--data.init_args.batch_size", str(batch_size)]
    cmd += ["--data.init_args.num_workers", str(workers), "--writer.output_dir", str(out)]
    cmd += ["--writer.layout", layout, "--writer.overwrite", "true", "--trainer.enable_progress_bar", "false"]
    cmd += ["--trainer.callbacks+=benchmarks.scale.BatchClock", f"--trainer.callbacks.path={clock}"]
    env = {**os.environ, "LIT_INFER_ALLOW_IMPORTS": "benchmarks", "PYTHONWARNINGS": "ignore"}
    log = work / f"log_{listing.stem}_{layout}.txt"
    start = time.time()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
        with PeakMemory(proc.pid) as mem:
            while proc.poll() is None:
                if batches is not None and _count(clock) >= batches:
                    proc.send_signal(signal.SIGTERM)  # a graceful stop at the next batch boundary
                    proc.wait()
                    break
                time.sleep(0.05)
    end = time.time()
    times = [json.loads(line) for line in clock.read_text().splitlines()] if clock.exists() else []
    if not times:
        raise RuntimeError(f"no batch predicted; see {log}:\n{log.read_text()[-3000:]}")
    steady = sum(t["n"] for t in times[1:]) / (times[-1]["t"] - times[0]["t"]) if len(times) > 1 else None
    result = {
        "inputs": int(listing.stem.split("_")[1]),
        "layout": layout,
        "complete": batches is None,
        "returncode": proc.returncode,
        "first_batch_s": round(times[0]["t"] - start, 2),
        "steady_images_per_s": round(steady, 1) if steady else None,
        "batches": len(times),
        "peak_pss_mb": round(mem.peak / 2**20),
        "wall_s": round(end - start, 1),
    }
    if batches is None:
        result["after_last_batch_s"] = round(end - times[-1]["t"], 2)  # finalize + process exit
        summary = out / "summary.json"
        if summary.exists():
            result["finalize_s"] = json.loads(summary.read_text()).get("finalize_seconds")
    return result


def _count(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--counts", default="1000,10000,1000000", help="list lengths, comma-separated")
    p.add_argument("--source", choices=("list", "folder"), default="list", help="a .txt list or a folder of files")
    p.add_argument("--layouts", default="single,parts")
    p.add_argument("--full", action="store_true", help="run every count end to end (default: 1M bounded)")
    p.add_argument("--batches", type=int, default=40, help="batches of a bounded run")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--jpegs", type=int, default=300, help="distinct real JPEGs the lines point at")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lit_infer_scale")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    a = p.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    images = sorted(make_jpegs(a.work / "jpegs", a.jpegs, (48, 40)).glob("*.jpg"))
    results = []
    for count in [int(c) for c in a.counts.split(",")]:
        listing = (_list if a.source == "list" else _folder)(a.work, images, count)
        for layout in a.layouts.split(","):
            bounded = None if (a.full or (count <= 10_000 and a.source == "list")) else a.batches
            r = run_one(listing, layout, a.work, bounded, a.batch_size, a.workers)
            print(json.dumps(r), flush=True)
            results.append(r)
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count()}
    if a.out:
        a.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
