"""One slow rank of three: the same run (gloo DDP on the CPU, three ranks) with no slow rank and with rank 1 slowed
``--factor`` times, timed end to end, interleaved over ``--repeats``; the ratio of the medians is what a slow machine
costs the run. Units are leased as ranks become free (lit_infer/data/leases.py); run it with ``--repo`` on a
checkout from before the leases to measure static round-robin assignment the same way.

    python -m benchmarks.slow_rank                         # 1,200 images, units of 8, 0.025 s per image
    python -m benchmarks.slow_rank --repo /path/to/older/checkout

The network (``benchmarks.nets.RankSleeper``, imported as ``rank_sleeper``) sleeps a fixed time per image, three times longer on the slow rank,
and needs no CPU: the figure is about the split of the work, not about two busy cores. Reported per variant: the
command's wall time (start-up included, 40-60 s of it on a loaded 2-core machine), the predict time (from the plan,
``_run.json``, to the last unit's commit on any rank), and how many units each rank committed. The part files of the two variants are compared byte for byte.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
RANKS = 3


def make_images(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"img_{i:06d}.png")
    return folder


def config(path: Path, images: Path, out: Path, a: argparse.Namespace, slow_rank: int, ranks: int = RANKS) -> Path:
    net = {
        "class_path": "rank_sleeper.RankSleeper",
        "init_args": {"seconds_per_image": a.seconds_per_image, "slow_rank": slow_rank, "slow_factor": a.factor},
    }
    pre = {"crop_size": 16, "resize_size": 16, "mean": [0.5] * 3, "std": [0.25] * 3}
    cfg = {
        "model": {
            "class_path": "lit_infer.ImageClassifier",
            "init_args": {"net": net, "top_k": 2, "preprocessing": pre},
        },
        "data": {
            "class_path": "lit_infer.ImageDataModule",
            "init_args": {
                "source": str(images),
                "batch_size": a.batch_size,
                "num_workers": a.workers,
                "inputs": {"unit_size": a.unit_size},
            },
        },
        "writer": {"output_dir": str(out), "layout": "parts", "fsync": False},
        "trainer": {"accelerator": "cpu", "strategy": "ddp" if ranks > 1 else "auto", "devices": ranks},
    }
    path.write_text(json.dumps(cfg))
    return path


def run(repo: Path, cfg: Path, out: Path) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The network by a module name of its own: an older checkout's ``benchmarks`` package has no RankSleeper.
    nets = cfg.parent / "nets"
    nets.mkdir(exist_ok=True)
    if not (nets / "rank_sleeper.py").exists():
        (nets / "rank_sleeper.py").symlink_to(REPO / "benchmarks" / "nets.py")
    env = dict(os.environ, PYTHONPATH=f"{nets}{os.pathsep}{repo}", LIT_INFER_ALLOW_IMPORTS="rank_sleeper")
    env.update(
        PYTHONDONTWRITEBYTECODE="1",
        OMP_NUM_THREADS="1",
        PYTHONWARNINGS="ignore",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    began = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "lit_infer", "predict", "--config", str(cfg)],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    wall = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    records = sorted((out / "_parts").glob("part-*.json"))
    ranks = [json.loads(p.read_text())["rank"] for p in records]  # who committed each unit
    # From the plan (rank 0 writes _run.json before the ranks meet and start) to the last unit committed, any rank.
    predict = max(p.stat().st_mtime for p in records) - (out / "_run.json").stat().st_mtime
    return {
        "wall": round(wall, 1),
        "predict": round(predict, 2),
        "units_per_rank": [ranks.count(r) for r in range(RANKS)],
    }


def parts(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("part-*")) if p.is_file()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, default=REPO, help="the lit_infer checkout to run")
    ap.add_argument("--images", type=int, default=1200)
    ap.add_argument("--unit-size", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seconds-per-image", type=float, default=0.025)
    ap.add_argument("--factor", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lit_infer_slow_rank_"))
    images = make_images(work / "images", a.images)
    results: dict[str, list[dict]] = {"none": [], "rank 1": []}
    outputs: dict[str, dict[str, bytes]] = {}
    for r in range(a.repeats):
        for name, slow in (("none", -1), ("rank 1", 1)):
            out = work / f"out-{name.replace(' ', '')}-{r}"
            res = run(a.repo, config(work / f"{name.replace(' ', '')}.json", images, out, a, slow), out)
            results[name].append(res)
            outputs[name] = parts(out)
            print(f"slow rank {name}: {res}", flush=True)
    if outputs["none"] != outputs["rank 1"]:
        raise SystemExit("the part files differ between the two variants")
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("wall", "predict")} for k, v in results.items()}
    print(f"parts identical ({len(outputs['none'])} files)")
    for m in ("wall", "predict"):
        print(f"{m}: none {med['none'][m]:.1f} s, rank 1 slowed {med['rank 1'][m]:.1f} s, "
              f"ratio {med['rank 1'][m] / med['none'][m]:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
