"""What ``data.decoding.exact: false`` trades: its pixels and a network's probabilities against the exact (reference) path,
and the CPU time per image of each (one thread; decode, resize, crop).

    python -m benchmarks.fidelity        # 40 JPEGs each of 500x375, 1600x1200 and their portraits; bilinear, bicubic
    python -m benchmarks.fidelity --images 100 --size 4032x3024

The exact path is the reference's pixels bit for bit (tests/data/test_reference_pixels.py proves it against
torchvision and timm), so "against exact" is "against torchvision/timm". The network is a ResNet-18 (torchvision's
layout, ``benchmarks/nets.py``) with seeded random weights, fp32, its logits scaled (the same factor for both paths)
to spread across classes as a trained network's do; the probability change is the largest absolute difference
over all 1000 classes of an image's softmax, the worst image and the mean over images.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.harness import make_jpegs
from benchmarks.nets import ResNet18Like
from lit_infer.data.decode import Decoder
from lit_infer.preprocessing import Preprocessing


def make_sharp_jpegs(folder: Path, n: int, size: tuple[int, int], seed: int = 1) -> Path:
    """Harsher than the harness's images: per-pixel noise and hard-edged stripes, where resampling differences show."""
    if (folder / ".complete").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], axis=-1)
        base[(x // rng.integers(3, 9) + y // rng.integers(3, 9)) % 3 == 0] *= 0.4
        arr = np.clip(base + rng.normal(0, 14, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"img_{i:06d}.jpg", quality=92)
    (folder / ".complete").touch()
    return folder


def measure(folder: Path, interpolation: str, net: torch.nn.Module) -> dict[str, float]:
    p = Preprocessing(crop_size=224, resize_size=256, interpolation=interpolation)  # type: ignore[arg-type]
    exact, fast = Decoder(p), Decoder(p, exact=False)
    paths = sorted(str(f) for f in folder.glob("*.jpg"))
    times: dict[str, list[float]] = {"exact": [], "fast": []}
    crops: dict[str, list[torch.Tensor]] = {"exact": [], "fast": []}
    for n, path in enumerate(paths):
        data = exact.read(path)
        order = (("exact", exact), ("fast", fast))
        for name, decoder in order if n % 2 == 0 else order[::-1]:  # neither always runs on a warm cache
            # CPU time of this thread: on a machine shared with other jobs, wall time measures the neighbours.
            start = time.thread_time()
            crops[name].append(decoder.decode(data))
            times[name].append(time.thread_time() - start)
    a = torch.stack(crops["exact"]).int()
    b = torch.stack(crops["fast"]).int()
    diff = (a - b).abs().float()
    mean = torch.tensor(p.mean).view(1, 3, 1, 1)
    std = torch.tensor(p.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        logits = [
            net((torch.stack(crops[k]).permute(0, 3, 1, 2).float() / 255 - mean) / std) for k in ("exact", "fast")
        ]
    # Random weights give nearly uniform probabilities (1e-3 each, changes of 1e-9 say nothing): scale the logits,
    # the same for both, so that they spread across classes as a trained ImageNet network's do (std 3).
    scale = 3.0 / float(logits[0].std(1).mean())
    probs = [(scale * x).softmax(1) for x in logits]
    change = (probs[0] - probs[1]).abs().amax(1)
    top5 = [p.topk(5, 1).indices for p in probs]
    return {
        "images": len(paths),
        "max_levels": float(diff.max()),
        "mean_levels": float(diff.mean()),
        "share_differing": float((diff > 0).float().mean()),
        "max_prob_change": float(change.max()),
        "mean_prob_change": float(change.mean()),
        "top1_agreement": float((top5[0][:, 0] == top5[1][:, 0]).float().mean()),
        "top5_order_agreement": float((top5[0] == top5[1]).all(1).float().mean()),
        "exact_ms": 1000 * statistics.median(times["exact"]),
        "fast_ms": 1000 * statistics.median(times["fast"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--size", action="append", help="WxH, repeatable (default: 500x375, 375x500, 1600x1200, 1200x1600)")
    ap.add_argument("--sharp", action="store_true", help="per-pixel noise and hard edges instead of the harness's")
    ap.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "lit_infer_fidelity"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = ResNet18Like().eval()
    print(
        "| source | filter | max / mean levels | values differing | max / mean prob. change | top-1 / top-5 order "
        "agree | exact / fast ms per image | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for size in a.size or ["500x375", "375x500", "1600x1200", "1200x1600"]:
        w, h = (int(v) for v in size.split("x"))
        make = make_sharp_jpegs if a.sharp else make_jpegs
        folder = make(Path(a.root) / f"{size}-{a.images}-{'sharp' if a.sharp else 'harness'}", a.images, (w, h), 1)
        for interpolation in ("bilinear", "bicubic"):
            r = measure(folder, interpolation, net)
            print(
                f"| {r['images']} {'sharp' if a.sharp else 'harness'} JPEGs {size} | {interpolation} | {r['max_levels']:.0f} / {r['mean_levels']:.3f} "
                f"| {100 * r['share_differing']:.1f}% | {r['max_prob_change']:.2e} / {r['mean_prob_change']:.2e} "
                f"| {100 * r['top1_agreement']:.0f}% / {100 * r['top5_order_agreement']:.0f}% "
                f"| {r['exact_ms']:.1f} / {r['fast_ms']:.1f} | {r['exact_ms'] / r['fast_ms']:.2f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
