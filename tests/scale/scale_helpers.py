"""Shared pieces of the scale tests: tar shards and Parquet tables written with the standard libraries, runs in
process, and reading part files back."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lit_infer import ImageClassifier, ImageDataModule, PredictionWriter, Preprocessing
from lit_infer.nets import TinyCNN

P = Preprocessing(crop_size=16, resize_size=16)


def write_shards(images: list[Path], folder: Path, counts: list[int], labels: bool = True) -> list[Path]:
    """webdataset-style tars: ``<key>.png`` (+ ``<key>.cls``) per image, ``counts[i]`` images in shard ``i``."""
    folder.mkdir(parents=True, exist_ok=True)
    shards, start = [], 0
    for s, n in enumerate(counts):
        path = folder / f"{s:06d}.tar"
        with tarfile.open(path, "w") as tar:
            for i, image in enumerate(images[start : start + n]):
                key = f"sample{start + i:06d}"
                tar.add(image, arcname=f"{key}{image.suffix}")
                if labels:
                    data = str((start + i) % 3).encode()
                    info = tarfile.TarInfo(f"{key}.cls")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        shards.append(path)
        start += n
    return shards


def write_parquet(images: list[Path], path: Path, hf_struct: bool = True, row_group_size: int = 64) -> Path:
    """A table of image bytes: Hugging Face's ``{bytes, path}`` Image struct, or a plain binary column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = [p.read_bytes() for p in images]
    if hf_struct:
        column = pa.array([{"bytes": d, "path": p.name} for d, p in zip(data, images, strict=True)])
    else:
        column = pa.array(data, pa.binary())
    table = pa.table({"image": column, "label": pa.array([i % 3 for i in range(len(images))], pa.int64())})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def module(seed: int = 0) -> ImageClassifier:
    torch.manual_seed(seed)
    return ImageClassifier(net=TinyCNN(num_classes=3, width=4, depth=1), preprocessing=P, top_k=2)


def predict(
    source: str,
    out: str,
    layout: str = "parts",
    fmt: str = "csv",
    workers: int = 0,
    max_errors: float | None = None,
    limit_batches: int | None = None,
    **data: Any,
) -> PredictionWriter:
    writer = PredictionWriter(out, format=fmt, layout=layout, fsync=False, max_errors=max_errors)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[writer],
        limit_predict_batches=limit_batches,
    )
    dm = ImageDataModule(source, batch_size=data.pop("batch_size", 4), num_workers=workers, preprocessing=P, **data)
    trainer.predict(module(), datamodule=dm, return_predictions=False)
    return writer


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / "_manifest.json").read_text())
