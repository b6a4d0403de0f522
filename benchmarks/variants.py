"""One benchmark variant, run in its own process: ``python -m benchmarks.variants --variant NAME ...``.

Writes ``{"variant", "images", "seconds", "steady_ips", "cpu_before"}`` as JSON to ``--result``. The clock starts
after imports and argument parsing (for ``lit-infer predict``: its config parsing) and before the network is built;
it stops when the last prediction is made. Start-up of workers, of the Trainer and the writer's merge are included:
what a user waits for once the job is set up.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch

from benchmarks import nets
from benchmarks.baselines import BASELINES, CLOCK, ClockCallback, list_images
from lit_infer.cli import LitInferCLI

VARIANTS = (
    "seed_loop",
    "naive_lightning",
    "lit_infer",
    "lit_infer_fast",
    "lit_infer_cached",
    "decode_only",
    "model_only",
)


def lit_infer_args(a: argparse.Namespace, fast: bool, cached: bool) -> list[str]:
    """The ``lit-infer predict`` command line of a variant: defaults, plus the fast options when asked."""
    net_path, init_args, factory = nets.class_path(a.model)
    args = ["predict", "--model=lit_infer.ImageClassifier", "--data=lit_infer.ImageDataModule"]
    if factory is not None:
        args += [f"--model.factory={factory}", f"--model.factory_kwargs={json.dumps(init_args)}"]
    else:
        args += [f"--model.net={net_path}"]
    args += [
        f"--data.source={a.images}",
        f"--data.batch_size={a.batch_size}",
        f"--data.num_workers={a.workers}",
        f"--writer.output_dir={os.path.join(a.work, 'out-' + a.variant)}",
        "--writer.overwrite=true",
        f"--trainer.accelerator={'gpu' if a.device == 'cuda' else 'cpu'}",
        "--trainer.devices=1",
    ]
    if a.device == "cuda" and a.precision != "32-true":
        args.append(f"--trainer.precision={a.precision}")
    if fast or cached:
        args += ["--data.decoding.exact=false", "--model.channels_last=true"]
        if a.compile:  # off by default: tens of seconds of compilation dwarf a short benchmark
            args += ["--model.compile=true"]
    if fast and a.device == "cuda":
        args += ["--data.decoding.decode=gpu"]
    if cached:
        args.append(f"--data.decoding.cache_dir={os.path.join(a.work, 'cache')}")
    return args


START: dict[str, float] = {}
"""When the clock started (``time``) and the CPU time spent before it (``cpu``)."""


def start_clock() -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    START.update(time=time.perf_counter(), cpu=usage.ru_utime + usage.ru_stime)


def run_lit_infer(a: argparse.Namespace, fast: bool = False, cached: bool = False) -> int:
    class ClockedCLI(LitInferCLI):
        """``lit-infer predict`` as shipped, plus the benchmark's clock (a callback that only reads the time)."""

        def instantiate_classes(self) -> None:
            # Parsing the command line is not timed, as the hand-written loops' argument parsing is not: the clock
            # restarts here, where the network, data module, writer and Trainer are built.
            start_clock()
            super().instantiate_classes()

        def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
            trainer = super().instantiate_trainer(**kwargs)
            trainer.callbacks.append(ClockCallback())
            return trainer

    cli = ClockedCLI(args=lit_infer_args(a, fast, cached))
    writer = next(cb for cb in cli.trainer.callbacks if type(cb).__name__ == "PredictionWriter")
    return int(writer.summary.get("num_predicted", 0))


def decode_only(a: argparse.Namespace) -> int:
    """The ceiling of the data path: lit_infer's DataLoader with no model (batches still reach the device)."""
    from lit_infer.data import ImageDataModule, Loader

    dm = ImageDataModule(
        a.images, batch_size=a.batch_size, num_workers=a.workers, loader=Loader(pin_memory=a.device == "cuda")
    )
    dm.setup("predict")
    n = 0
    for batch in dm.predict_dataloader():
        batch.images.to(a.device, non_blocking=True)
        n += len(batch)
        CLOCK.batch(len(batch))
    if a.device == "cuda":
        torch.cuda.synchronize()
    return n


def model_only(a: argparse.Namespace, net: torch.nn.Module) -> int:
    """The ceiling of the model: the same number of batches, already on the device, in the fastest settings."""
    net = net.to(a.device, memory_format=torch.channels_last)
    x = torch.randn(a.batch_size, 3, 224, 224, device=a.device).contiguous(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if a.device == "cuda" and "bf16" in a.precision else torch.float16
    autocast = a.device == "cuda" and a.precision != "32-true"
    n = 0
    with torch.inference_mode(), torch.autocast(a.device, dtype=dtype, enabled=autocast):
        while n < a.num_images:
            net(x)
            n += a.batch_size
            if a.device == "cuda":
                torch.cuda.synchronize()
            CLOCK.batch(a.batch_size)
    if a.device == "cuda":
        torch.cuda.synchronize()
    return n


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--variant", choices=VARIANTS, required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--model", default="small", choices=nets.MODELS)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--precision", default="32-true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--work", required=True)
    p.add_argument("--result", required=True)
    a = p.parse_args(argv)
    paths = list_images(a.images)
    a.num_images = len(paths)
    start_clock()
    # The clock includes building the network: lit_infer builds its own from the config, the others here.
    net = nets.build(a.model) if not a.variant.startswith("lit_infer") else None
    runs: dict[str, Callable[[], int]] = {
        "seed_loop": lambda: BASELINES["seed_loop"](paths, net, a.batch_size, a.workers, a.device, a.precision),
        "naive_lightning": lambda: BASELINES["naive_lightning"](
            paths, net, a.batch_size, a.workers, a.device, a.precision
        ),
        "lit_infer": lambda: run_lit_infer(a),
        "lit_infer_fast": lambda: run_lit_infer(a, fast=True),
        "lit_infer_cached": lambda: run_lit_infer(a, cached=True),
        "decode_only": lambda: decode_only(a),
        "model_only": lambda: model_only(a, net),
    }
    n = runs[a.variant]()
    if a.device == "cuda":
        torch.cuda.synchronize()  # the last batch's work is done before the clock stops, whatever the variant
    seconds = time.perf_counter() - START["time"]
    with open(a.result, "w") as f:
        # CPU spent before the clock started: the harness subtracts it from the whole tree's CPU time.
        json.dump(
            {
                "variant": a.variant,
                "images": n,
                "seconds": seconds,
                "cpu_before": START["cpu"],
                "steady_ips": CLOCK.steady(),
            },
            f,
        )


if __name__ == "__main__":
    main()
