"""Train the quickstart's TinyCNN on freshly generated shapes and save its weights (about a minute on 2 cores).

    python examples/quickstart/train.py            # writes examples/quickstart/tinycnn_shapes.pt

Training images go through lit_infer's own decoder (JPEG bytes -> uint8 -> the module's normalisation), so what the
network learns from is exactly what ``lit-infer predict`` will feed it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from shapes import CLASSES, SIZE, generate

from lit_infer.data.decode import Decoder
from lit_infer.nets import TinyCNN
from lit_infer.preprocessing import Preprocessing

PREPROCESSING = Preprocessing(crop_size=SIZE, resize_size=SIZE, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def tensors(per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    decoder = Decoder(PREPROCESSING)
    items = generate(per_class, seed)
    x = torch.stack([decoder.decode(data) for _, _, data in items]).permute(0, 3, 1, 2).float()
    mean = torch.tensor(PREPROCESSING.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(PREPROCESSING.std).view(1, 3, 1, 1) * 255
    return (x - mean) / std, torch.tensor([c for _, c, _ in items])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "tinycnn_shapes.pt")
    parser.add_argument("--per-class", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    x, y = tensors(args.per_class, seed=1000 + args.seed)  # never the held-out seed
    xv, yv = tensors(50, seed=2000 + args.seed)
    net = TinyCNN(num_classes=len(CLASSES), width=16, depth=3)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = args.epochs * (len(x) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=6e-3, total_steps=steps)
    for epoch in range(args.epochs):
        net.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x) - 63, 64):
            idx = perm[i : i + 64]
            xb = x[idx]
            flip = torch.rand(len(idx)) < 0.5
            xb[flip] = xb[flip].flip(3)
            loss = F.cross_entropy(net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        net.eval()
        with torch.no_grad():
            acc = (net(xv).argmax(1) == yv).float().mean().item()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, validation accuracy {acc:.3f}")
    torch.save(net.state_dict(), args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
