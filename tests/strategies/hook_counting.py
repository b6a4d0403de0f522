"""A classifier subclass that overrides every hook, counts the calls, and runs out of memory once: what a research
user's subclass looks like to a strategy. Importable by the child processes of the DDP runs (tests/ is on their path).
"""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import lightning as L
import torch
from typing_extensions import override

import lit_infer
from lit_infer import CPUMultiprocessStrategy, ImageClassifier, ImageDataModule, Inputs, PredictionWriter
from lit_infer.nets import TinyCNN
from lit_infer.preprocessing import Preprocessing
from lit_infer.records import Batch, Predictions

COUNTS: Counter = Counter()
"""Calls per hook in this process, over every replica (dp copies the module; the counts stay shared)."""
SIZES: list[int] = []
"""The size of each batch this process predicted, in order (which units a rank reads is leased, not fixed)."""
_LOCK = threading.Lock()  # dp calls forward from several threads at once
_OOM = {"raised": False}

NET = {"num_classes": 3, "width": 4, "depth": 2}
PREPROCESSING = {"crop_size": 32, "resize_size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def reset() -> None:
    COUNTS.clear()
    SIZES.clear()
    _OOM["raised"] = False


class CountingClassifier(ImageClassifier):
    """Every hook overridden and counted; the first forward of more than ``oom_above`` images runs out of memory."""

    def __init__(self, counts_file: str | None = None, oom_above: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.counts_file = counts_file
        self.oom_above = oom_above

    @staticmethod
    def _count(name: str) -> None:
        with _LOCK:
            COUNTS[name] += 1

    @override
    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> Predictions:
        self._count("predict_step")
        with _LOCK:
            SIZES.append(len(batch))
        return super().predict_step(batch, batch_idx, dataloader_idx)

    @override
    def preprocess(self, batch: Batch) -> torch.Tensor:
        self._count("preprocess")
        return super().preprocess(batch)

    @override
    def forward(self, x: torch.Tensor) -> Any:
        self._count("forward")
        with _LOCK:
            oom = bool(self.oom_above) and not _OOM["raised"] and x.shape[0] > self.oom_above
            _OOM["raised"] |= oom
        if oom:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB (injected)")
        return super().forward(x)

    @override
    def postprocess(self, outputs: Any, batch: Batch) -> Predictions:
        self._count("postprocess")
        return super().postprocess(outputs, batch)

    @override
    def on_predict_end(self) -> None:
        if self.counts_file is not None:
            record = {**COUNTS, "oom_max_size": self.oom_split.max_size, "sizes": SIZES}
            Path(f"{self.counts_file}.rank{self.global_rank}").write_text(json.dumps(record))


def counting_classifier(weights: str, counts_file: str | None = None, oom_above: int = 1) -> CountingClassifier:
    return CountingClassifier(
        counts_file=counts_file,
        oom_above=oom_above,
        net=TinyCNN(**NET),
        weights=weights,
        top_k=2,
        preprocessing=Preprocessing(**PREPROCESSING),
        # Named as the test's class folders are: the folders are labels, so the metrics are computed.
        class_names=[f"class_{i}" for i in range(NET["num_classes"])],
    )


def main() -> None:
    """``python hook_counting.py SOURCE OUT WEIGHTS ddp|cpu_multiprocess``: the Python API under two processes."""
    source, out, weights, strategy = sys.argv[1:5]
    module = counting_classifier(weights, counts_file=f"{out}.counts")
    # Units of one batch each, leased by the two ranks as they become free.
    data = ImageDataModule(
        source, batch_size=4, num_workers=0, preprocessing=module.preprocessing, inputs=Inputs(unit_size=4)
    )
    kind = CPUMultiprocessStrategy(num_processes=2) if strategy == "cpu_multiprocess" else "ddp"
    trainer = L.Trainer(
        accelerator="cpu",
        strategy=kind,
        devices=2 if strategy == "ddp" else "auto",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    summary = lit_infer.predict(module, data, trainer=trainer, writer=PredictionWriter(out, fsync=False))
    Path(f"{out}.summary.rank{trainer.global_rank}").write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
