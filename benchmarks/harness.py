"""Throughput of lit_infer against the loops users write, and against the ceilings, in one interleaved run.

    python -m benchmarks.harness                                   # this machine's default suite (see BENCHMARKS.md)
    python -m benchmarks.harness --model resnet50 --images 6000 --device cuda --workers 16 --batch-size 256 \
        --precision bf16-mixed
    python -m benchmarks.harness --flat-memory                     # peak memory at 2,000 vs 20,000 images

Every variant runs in its own process (so the peak memory of its tree, DataLoader workers included, is its own),
interleaved over repeats (A B C ... A B C ...) so that a noisy neighbour slows all of them alike. The table shows the
median images/s, the ratios to the seed loop and to naive Lightning, and the peak memory (PSS) of the process tree
(the flat-memory check adds its anonymous and shared-memory part: see :mod:`benchmarks.procmem`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks import nets
from benchmarks.procmem import PeakMemory
from benchmarks.variants import VARIANTS

ALL = ",".join(VARIANTS)
DEFAULT_SUITE = {
    "cpu": [("small", 600, ALL), ("resnet18", 192, "seed_loop,naive_lightning,lit_infer,model_only")],
    "cuda": [("resnet50", 6000, ALL)],
}
"""(model, images, variants) run by a bare ``python -m benchmarks.harness``: data-bound and compute-bound on CPU."""


def make_jpegs(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> Path:
    """``n`` photo-like JPEGs (smooth gradients plus texture, quality 90), made once and reused.

    Made by every core (20,000 of 500x375 take about 3 minutes on one): image ``i`` depends on ``(seed, i)`` only.
    """
    done = folder / ".complete"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(folder, i, size, seed) for i in range(n)]
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(_make_jpeg, jobs, chunksize=64))
    done.touch()
    return folder


def _make_jpeg(job: tuple[Path, int, tuple[int, int], int]) -> None:
    folder, i, (w, h), seed = job
    rng = np.random.default_rng([seed, i])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b, c = rng.uniform(0.2, 1.0, 3)
    base = np.stack([xx * (255 * a / w), yy * (255 * b / h), ((xx * c + yy) % 256)], axis=-1)
    noise = rng.integers(-24, 24, ((h + 3) // 4, (w + 3) // 4, 3), dtype=np.int16).repeat(4, 0).repeat(4, 1)
    arr = np.clip(base + noise[:h, :w], 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(folder / f"img_{i:06d}.jpg", quality=90)


def run_variant(
    variant: str, images: Path, model: str, a: argparse.Namespace, work: Path, env: dict[str, str] | None = None
) -> dict:
    """One variant in a fresh process (``env`` added to its environment); returns its result with the peak memory
    of its process tree."""
    result = work / f"{variant}.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "benchmarks.variants", "--variant", variant, "--images", str(images)]
    cmd += ["--model", model, "--batch-size", str(a.batch_size), "--workers", str(a.workers)]
    cmd += ["--device", a.device, "--precision", a.precision, "--work", str(work), "--result", str(result)]
    cmd += ["--compile"] if a.compile else []
    log = work / f"{variant}.log"
    with open(log, "w") as out:
        # LIT_INFER_ALLOW_IMPORTS: the benchmark nets, named in the config
        env = {**os.environ, "LIT_INFER_ALLOW_IMPORTS": "benchmarks", **(env or {})}
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parent.parent, env=env
        )
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with PeakMemory(proc.pid) as mem:
            try:
                rc = proc.wait(timeout=a.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                rc = -9
    if rc != 0 or not result.exists():
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"variant {variant} failed (exit {rc}); last output:\n{tail}")
    out = json.loads(result.read_text())
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU time of the whole tree (DataLoader workers are reaped by the variant, so they count) while timed: on a
    # busy machine this is steadier than wall time, and on an idle one it bounds images/s at cores / cpu_ms.
    tree_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime) - out["cpu_before"]
    out["cpu_ms"] = 1000 * tree_cpu / max(1, out["images"])
    out["peak_mb"] = mem.peak / 2**20
    out["anonymous_mb"] = mem.peak_anonymous / 2**20
    return out


def bench(model: str, n: int, variant_list: str, a: argparse.Namespace, root: Path) -> list[dict]:
    images = make_jpegs(root / f"jpeg-{a.size}-{n}", n, _size(a.size))
    work = root / f"work-{model}"
    work.mkdir(parents=True, exist_ok=True)
    variants = [v for v in variant_list.split(",") if v]
    if "lit_infer_cached" in variants:  # the cache is built once, untimed; the timed runs read it
        run_variant("lit_infer_cached", images, model, a, work)
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for repeat in range(a.repeats):
        for v in variants:
            r = run_variant(v, images, model, a, work)
            runs[v].append(r)
            # Each run as it ends: a bench cut short by its time limit still leaves its figures in the log.
            steady = f"{r['steady_ips']:,.0f}" if r.get("steady_ips") else "-"
            print(
                f"  repeat {repeat + 1} {v}: {r['images'] / r['seconds']:,.0f} images/s, steady {steady}, "
                f"{r['seconds']:.1f} s, peak {r['peak_mb']:,.0f} MB",
                flush=True,
            )
    rows = []
    for v, rs in runs.items():
        ips = statistics.median(r["images"] / r["seconds"] for r in rs)
        cpu_ms = statistics.median(r["cpu_ms"] for r in rs)
        steady = [r["steady_ips"] for r in rs if r.get("steady_ips")]
        peak = max(r["peak_mb"] for r in rs)
        rows.append(
            {
                "variant": v,
                "images": rs[0]["images"],
                "ips": ips,
                "steady": statistics.median(steady) if steady else None,
                "cpu_ms": cpu_ms,
                "peak_mb": peak,
            }
        )
    return rows


def table(rows: list[dict], title: str) -> str:
    by = {r["variant"]: r for r in rows}
    head = (
        "| variant | images | images/s | vs seed loop | vs naive Lightning | CPU ms/image | peak MB | steady images/s |"
    )
    lines = [f"### {title}", "", head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        seed = f"{r['ips'] / by['seed_loop']['ips']:.2f}x" if "seed_loop" in by else "-"
        naive = f"{r['ips'] / by['naive_lightning']['ips']:.2f}x" if "naive_lightning" in by else "-"
        steady = f"{r['steady']:,.0f}" if r["steady"] else "-"
        lines.append(
            f"| {r['variant']} | {r['images']} | {r['ips']:,.0f} | {seed} | {naive} | {r['cpu_ms']:.1f} "
            f"| {r['peak_mb']:,.0f} | {steady} |"
        )
    # The ceilings, compared on steady throughput (start-up is not part of a ceiling).
    notes = []
    for variant, ceiling in (
        ("lit_infer", "decode_only"),
        ("lit_infer_fast", "decode_only"),
        ("lit_infer_cached", "model_only"),
    ):
        if variant in by and ceiling in by and by[variant]["steady"] and by[ceiling]["steady"]:
            notes.append(f"{variant} = {by[variant]['steady'] / by[ceiling]['steady']:.0%} of {ceiling} (steady)")
    return "\n".join(lines + (["", *notes] if notes else []))


FIXED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(128 << 10)}
"""glibc's mmap threshold held at its initial 128 kB: every tensor of the forward pass (a 4.8 MB batch, activations
of tens of MB) is then mapped and unmapped on its own. By default glibc raises the threshold after the first such
free, and the freed activations then stay in the heap in pieces: the anonymous peak of the small CNN's process moved
by up to 160 MB between identical runs (188-267 MB in one process over a run, rising and falling), against a band
of 25 MB with the threshold held. A leak (tensors, arrays, objects kept) shows either way."""


def flat_memory(a: argparse.Namespace, root: Path) -> str:
    """Peak memory of lit_infer at a small and a 10x larger count of (small) images: it must not grow."""
    small, large = a.flat_counts
    rows = []
    for n in (small, large):
        images = make_jpegs(root / f"jpeg-64x48-{n}", n, (64, 48))
        work = root / f"work-flat-{n}"
        work.mkdir(parents=True, exist_ok=True)
        r = run_variant("lit_infer", images, "small", a, work, env=FIXED_MALLOC)
        rows.append((n, r["peak_mb"], r["anonymous_mb"], r["images"] / r["seconds"]))
    growth = rows[1][1] / rows[0][1] - 1
    lines = ["### flat memory (lit_infer defaults, small CNN, 64x48 JPEGs)", ""]
    lines += ["| images | peak MB | anonymous MB | images/s |", "|---|---|---|---|"]
    lines += [f"| {n:,} | {mb:,.0f} | {anon:,.0f} | {ips:,.0f} |" for n, mb, anon, ips in rows]
    grew = f"{rows[1][2] - rows[0][2]:+,.0f} MB" if rows[0][2] and rows[1][2] else "- (no Pss_Anon here)"
    lines += ["", f"growth: {growth:+.1%} (target: within 10%); anonymous and shared-memory part: {grew}"]
    return "\n".join(lines)


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.partition("x")
    return int(w), int(h)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help=f"comma-separated, from {', '.join(nets.MODELS)}; default: this device's suite")
    p.add_argument("--images", help="images per model, comma-separated to match --model")
    p.add_argument("--size", default="500x375", help="generated JPEG size, WxH")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the cores)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--precision", default=None, help="default: bf16-mixed on cuda, 32-true on cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="torch.compile in lit_infer_fast and lit_infer_cached")
    p.add_argument("--variants", help=f"comma-separated, from {ALL}; default: all (the suite's for resnet18)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per variant run")
    p.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "lit_infer_bench"))
    p.add_argument("--flat-memory", action="store_true", help="only the flat-memory check")
    p.add_argument("--flat-counts", type=int, nargs=2, default=(2000, 20000))
    a = p.parse_args(argv)
    a.workers = a.workers if a.workers is not None else len(os.sched_getaffinity(0))
    a.precision = a.precision or ("bf16-mixed" if a.device == "cuda" else "32-true")
    root = Path(a.root)
    started = time.time()
    header = (
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · {platform.node()} · {platform.processor() or platform.machine()}"
        f" · {len(os.sched_getaffinity(0))} cores · device {a.device} · batch {a.batch_size} · workers {a.workers}"
        f" · precision {a.precision} · repeats {a.repeats}"
    )
    print(header, flush=True)
    if a.flat_memory:
        print(flat_memory(a, root), flush=True)
        return
    suite = {m: (n, v) for m, n, v in DEFAULT_SUITE["cpu"] + DEFAULT_SUITE["cuda"]}
    models = a.model.split(",") if a.model else [m for m, _, _ in DEFAULT_SUITE[a.device]]
    counts = [int(c) for c in a.images.split(",")] if a.images else [suite.get(m, (600, ALL))[0] for m in models]
    if len(counts) == 1:
        counts *= len(models)
    for model, n in zip(models, counts, strict=True):
        rows = bench(model, n, a.variants or suite.get(model, (n, ALL))[1], a, root)
        print(table(rows, f"{model}, {n} JPEGs of {a.size}"), flush=True)
    print(f"\ntotal {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
