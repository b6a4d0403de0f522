"""A finished run written by hand through lit_infer's own output sinks: predictions of known scores in any format,
failures, a summary, so that the report's figures can be compared with torchmetrics on exactly those rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from lit_infer.output.formats import Sink


def write_run(
    root: Path,
    fmt: str = "csv",
    n: int = 300,
    classes: int = 7,
    labelled: bool = True,
    top_k: int = 5,
    embeddings: bool = False,
    images: int = 0,
    failures: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Write ``root`` as a finished ``layout: single`` run; returns the probabilities and targets it wrote."""
    rng = np.random.default_rng(seed)
    target = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes)).astype(np.float32)
    logits[np.arange(n), target] += 1.5  # mostly right, sometimes confidently wrong
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    order = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
    if not labelled:
        target = np.full(n, -1)
    target[::17] = -1  # a few inputs without a label, left out as torchmetrics' ignore_index does
    columns: dict[str, np.ndarray] = {
        "pred": order[:, 0].astype(np.int64),
        "score": probs[np.arange(n), order[:, 0]],
        "topk_pred": order.astype(np.int64),
        "topk_score": np.take_along_axis(probs, order, axis=1),
        "target": target.astype(np.int64),
    }
    if embeddings:
        columns = {"embedding": rng.normal(size=(n, 16)).astype(np.float32), "target": target.astype(np.int64)}
    image_dir = root.parent / "inputs"
    image_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = image_dir / f"img_{i:05d}.png"
        if i < images:
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    schema = {k: (v.dtype, v.shape[1:]) for k, v in columns.items()}
    root.mkdir(parents=True, exist_ok=True)
    sink = Sink(fmt, str(root), "predictions", schema, n)
    sink.write(np.arange(n), paths, columns)
    files = {k: Path(v).name for k, v in sink.commit().items()}
    with open(root / "errors.jsonl", "w", encoding="utf-8") as f:
        for i in range(failures):
            kind = "UnidentifiedImageError" if i % 3 else "OSError"
            f.write(
                json.dumps({"index": n + i, "path": f"bad/{i}.jpg", "error_type": kind, "message": "cannot"}) + "\n"
            )
    files["errors"] = "errors.jsonl"
    names = [f"class_{c}" for c in range(classes)]
    summary = {
        "num_items": n + failures,
        "num_predicted": n,
        "num_failed": failures,
        "files": files,
        "world_size": 1,
        "strategy": "SingleDeviceStrategy",
        "finished_at": "2026-12-04T10:00:00+00:00",
        "command_seconds": 12.5,
        "images_per_second": 24.0,
        "metrics": {},
        "exact_pixels": True,
        "layout": "single",
        "fingerprint": {
            "model": {"class_names": names, "score": "probs", "net": "tests.Net"},
            "data": {"source": str(image_dir), "preprocessing": {"crop_size": 64}},
            "output": {"format": fmt, "filename": "predictions", "layout": "single"},
            "trainer": {"precision": "32-true"},
        },
    }
    (root / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return {"probs": probs, "target": target, "names": names, "columns": columns}


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


REPO = Path(__file__).resolve().parents[2]


def lit_infer(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """``python -m lit_infer ARGS`` from the repository root, as a user runs it; fails the test on a non-zero exit."""
    done = subprocess.run(
        [sys.executable, "-m", "lit_infer", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def quickstart(output_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return lit_infer(
        "predict",
        "--config",
        "configs/quickstart.yaml",
        *extra,
        "--writer.output_dir",
        str(output_dir),
        "--model.init_args.save_scores",
        "true",
        "--trainer.enable_progress_bar",
        "false",
    )


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quickstart, run once by the CLI (every class's score saved, for the reference's own metrics)."""
    out = tmp_path_factory.mktemp("quickstart") / "out"
    done = quickstart(out)
    assert f"report: {out / 'report.html'}" in done.stderr
    return out
