"""Detection and segmentation against the plain per-image torchvision loop, and the Segmenter's peak memory.

Throughput: lit_infer's ObjectDetector and Segmenter (whole images of varied sizes, batched as lists, decoded in a
worker, written to a table and PNG masks) against the loop users write with torchvision, one image at a time::

    model(to_tensor(exif_transpose(img).convert("RGB")))      # eval(), inference_mode; the segmenter normalised

side by side in one process (A B A B over ``--repeats``: what other processes take falls on both alike)::

    python -m benchmarks.detection --images 48 --batch-size 8 --workers 1 --repeats 3

Peak memory: ``lit-infer predict`` with a Segmenter (a tiny convolution, PNG masks and a probability map written)
over 1,000 and 10,000 small JPEGs, the peak PSS of its process tree polled from ``/proc``::

    python -m benchmarks.detection --mask-memory 1000 10000

Random seeded weights (nothing is downloaded); ``box_score_thresh=0`` so that every image writes its boxes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps

from benchmarks.procmem import PeakMemory

DETECTOR = "torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn"
DETECTOR_KWARGS = {"weights": None, "weights_backbone": None, "num_classes": 91, "box_score_thresh": 0.0}
SEGMENTER = "torchvision.models.segmentation.lraspp_mobilenet_v3_large"
SEGMENTER_KWARGS = {"weights": None, "weights_backbone": None, "num_classes": 21}
SIZES = [(320, 240), (240, 320), (400, 300), (352, 288), (288, 352), (480, 320), (256, 256), (320, 200)]
"""Small photos of eight sizes (landscape and portrait), as a folder of phone and web pictures has."""


def photos(root: Path, n: int, sizes: list[tuple[int, int]] = SIZES) -> list[Path]:
    """``n`` photo-like JPEGs (gradients, block texture and filled shapes, quality 90) cycling through ``sizes``;
    every fourth stored sideways with EXIF orientation 6, as cameras do."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.stack([x * 255 / w, y * 255 / h, (x + y) % 256], axis=-1)
        noise = rng.integers(-20, 20, ((h + 7) // 8, (w + 7) // 8, 3)).repeat(8, 0).repeat(8, 1)[:h, :w]
        img = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(4):  # shapes up to a quarter of the image
            x0, y0 = int(rng.integers(0, w * 3 // 4)), int(rng.integers(0, h * 3 // 4))
            colour = tuple(int(c) for c in rng.integers(0, 255, 3))
            draw.ellipse([x0, y0, x0 + int(rng.integers(4, w // 4)), y0 + int(rng.integers(4, h // 4))], fill=colour)
        paths.append(root / f"{i:05d}.jpg")
        if i % 4 == 3:
            exif = Image.Exif()
            exif[0x0112] = 6
            img.transpose(Image.Transpose.ROTATE_90).save(paths[-1], quality=90, exif=exif)
        else:
            img.save(paths[-1], quality=90)
    return paths


def _upright(path: Path) -> torch.Tensor:
    from torchvision.transforms.functional import to_tensor

    with Image.open(path) as img:
        return to_tensor(ImageOps.exif_transpose(img).convert("RGB"))


def plain_detect(net: torch.nn.Module, paths: list[Path], out: Path) -> None:
    """The reference loop: one image at a time; the boxes kept as a user's loop keeps them (a list)."""
    rows = []
    with torch.inference_mode():
        for p in paths:
            d = net([_upright(p)])[0]
            rows.append({k: v.tolist() for k, v in d.items()})
    out.write_text(json.dumps(rows))


def plain_segment(net: torch.nn.Module, paths: list[Path], out: Path) -> None:
    """The reference loop: one image at a time, its argmax saved as a PNG (as the Segmenter does)."""
    from torchvision.transforms.functional import normalize

    out.mkdir(parents=True, exist_ok=True)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    with torch.inference_mode():
        for i, p in enumerate(paths):
            mask = net(normalize(_upright(p), mean, std)[None])["out"].argmax(1)[0]
            Image.fromarray(mask.to(torch.uint8).numpy(), mode="L").save(out / f"{i}.png")


def lit_infer_run(task: str, weights: Path, source: Path, out: Path, batch_size: int, workers: int) -> None:
    from lit_infer import ImageDataModule, ObjectDetector, PredictionWriter, Segmenter

    if task == "detect":
        module = ObjectDetector(factory=DETECTOR, factory_kwargs=DETECTOR_KWARGS, weights=weights)
    else:
        module = Segmenter(factory=SEGMENTER, factory_kwargs=SEGMENTER_KWARGS, weights=weights)
    data = ImageDataModule(source, batch_size=batch_size, num_workers=workers, preprocessing=module.preprocessing)
    writer = PredictionWriter(out, format="parquet", overwrite=True, fsync=False)
    L.Trainer(accelerator="cpu", logger=False, callbacks=[writer], enable_progress_bar=False).predict(
        module, datamodule=data, return_predictions=False
    )
    assert writer.summary["num_predicted"] == len(os.listdir(source))


def throughput(a: argparse.Namespace) -> dict:
    from lit_infer.models import build_net

    results: dict = {"images": a.images, "sizes": SIZES[: a.sizes], "batch_size": a.batch_size, "workers": a.workers}
    results["threads"] = torch.get_num_threads()
    results["load_before"] = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = photos(root / "photos", a.images, SIZES[: a.sizes])
        for task in a.tasks.split(","):
            factory, kwargs = (DETECTOR, DETECTOR_KWARGS) if task == "detect" else (SEGMENTER, SEGMENTER_KWARGS)
            torch.manual_seed(0)
            net = build_net(None, factory, kwargs).eval()
            torch.save(net.state_dict(), root / f"{task}.pt")
            plain = plain_detect if task == "detect" else plain_segment
            runs: dict[str, Callable[[], None]] = {
                "plain_per_image_loop": partial(plain, net, paths, root / f"plain-{task}"),
                "lit_infer": partial(
                    lit_infer_run,
                    task,
                    root / f"{task}.pt",
                    root / "photos",
                    root / f"out-{task}",
                    a.batch_size,
                    a.workers,
                ),
            }
            plain(net, paths[:2], root / f"warm-up-{task}")
            ips: dict[str, list[float]] = {k: [] for k in runs}
            cpu_ms: dict[str, list[float]] = {k: [] for k in runs}
            others: dict[str, list[float]] = {k: [] for k in runs}  # cores the machine's other processes kept busy
            load: list[float] = []  # the one-minute load average before each pair
            lit_threads = 0
            for _ in range(a.repeats):
                load.append(round(os.getloadavg()[0], 2))
                for name, run in runs.items():
                    # lit_infer sets the process's intra-op threads (data.model_threads: auto) and leaves them so:
                    # every run starts from torch's default, as a user's loop does
                    torch.set_num_threads(results["threads"])
                    start, cpu, busy = time.perf_counter(), _cpu_seconds(), _machine_busy_seconds()
                    run()
                    wall, own = time.perf_counter() - start, _cpu_seconds() - cpu
                    ips[name].append(round(a.images / wall, 3))
                    cpu_ms[name].append(round(1000 * own / a.images, 1))
                    others[name].append(round(max(0.0, _machine_busy_seconds() - busy - own) / wall, 2))
                    if name == "lit_infer":
                        lit_threads = torch.get_num_threads()  # what its tuning chose
            torch.set_num_threads(results["threads"])
            ratios = [lit / plain for lit, plain in zip(ips["lit_infer"], ips["plain_per_image_loop"], strict=True)]
            results[task] = {
                "load": load,
                "lit_infer_threads": lit_threads,
                "images_per_s": ips,
                "cpu_ms_per_image": cpu_ms,
                "other_processes_cores": others,
                "ratios": [round(r, 3) for r in ratios],
                "median_ratio": round(statistics.median(ratios), 3),
                "cpu_ratio": round(
                    statistics.median(cpu_ms["plain_per_image_loop"]) / statistics.median(cpu_ms["lit_infer"]), 3
                ),
            }
    results["load_after"] = os.getloadavg()
    return results


def _machine_busy_seconds() -> float:
    """CPU seconds all processes on the machine have run since boot (``/proc/stat``; Linux): less this run's own,
    the load the other processes put on the cores while it ran, in cores rather than the load average's queue."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _cpu_seconds() -> float:
    """CPU time of this process and its reaped children (the DataLoader's workers, once the run ends): on a shared
    machine steadier than wall time, which the other processes' load moves."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def mask_memory(counts: list[int], batch_size: int = 64, workers: int = 1, timeout: float = 600) -> dict:
    """Peak memory and seconds of ``lit-infer predict`` with a Segmenter writing PNG masks and one class's probability
    map, one run per count in ``runs`` (a count may come twice): ``peak_mb`` the PSS of the process tree,
    ``anonymous_mb`` its anonymous and shared-memory part (where a leak grows; steady however other processes on the
    machine share the libraries' pages)."""
    out: dict = {"load_before": os.getloadavg(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # 2,500-3,100 pixels: large enough that a mask kept per image shows (checked: +49 MB over 9,000 images), small
        # enough that 10,000 images take seconds
        tiny = photos(root / "tiny", 16, [(64, 48), (48, 64), (64, 40), (56, 56)])
        for run, n in enumerate(counts):
            folder = root / f"images-{n}"
            if not folder.exists():
                folder.mkdir()
                for i in range(n):  # hard links: the disk holds 16 files, the run reads n
                    os.link(tiny[i % len(tiny)], folder / f"{i:06d}.jpg")
            output = root / f"out-{run}"
            conv = {"class_path": "torch.nn.Conv2d", "init_args": {"in_channels": 3, "out_channels": 4}}
            conv["init_args"]["kernel_size"] = 1
            segmenter = {"net": conv, "class_names": ["bg", "a", "b", "c"], "probability_maps": ["b"]}
            config = {
                "model": {"class_path": "lit_infer.Segmenter", "init_args": segmenter},
                "data": {"init_args": {"source": str(folder), "batch_size": batch_size, "num_workers": workers}},
                "writer": {"output_dir": str(output), "format": "parquet", "fsync": False},
                "trainer": {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False},
            }
            (root / f"{run}.yaml").write_text(json.dumps(config))
            cmd = [sys.executable, "-m", "lit_infer", "predict", "--config", str(root / f"{run}.yaml")]
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            with PeakMemory(proc.pid) as mem:
                _, err = proc.communicate(timeout=timeout)
            if proc.returncode != 0:
                raise SystemExit(f"lit-infer predict over {n} images failed: {err[-2000:]}")
            for written in ("masks", "probabilities/2"):
                files = len(os.listdir(output / written))
                assert files == n, (written, files, n)
            out["runs"].append(
                {
                    "images": n,
                    "peak_mb": round(mem.peak / 2**20, 1),
                    "anonymous_mb": round(mem.peak_anonymous / 2**20, 1),
                    "seconds": round(time.perf_counter() - start, 1),
                }
            )
    out["load_after"] = os.getloadavg()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", default="detect,segment")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, default=len(SIZES), help="photos of this many sizes (1 to 8)")
    parser.add_argument("--mask-memory", type=int, nargs="+", help="only the Segmenter's peak memory at these counts")
    a = parser.parse_args(argv)
    print(json.dumps(mask_memory(a.mask_memory) if a.mask_memory else throughput(a)), flush=True)


if __name__ == "__main__":
    main()
