"""The report's figures, from the written predictions, defined as torchmetrics defines them (the tests compare):

- ``top1``/``top5``: ``MulticlassAccuracy(average="micro", top_k=k)``; ``macro``: ``average="macro"`` (the mean
  recall over the classes that occur in the targets or the predictions).
- per class: ``MulticlassPrecision/Recall/F1Score(average=None)`` (0 where a division is by zero), support.
- confusion matrix: ``MulticlassConfusionMatrix(normalize="true")`` (each true class's row sums to 1).
- expected calibration error: ``MulticlassCalibrationError(n_bins=15, norm="l1")`` on the top-1 probability.

Plain numpy on the columns; inputs without a label (``target`` < 0) are left out, as the metrics' ``ignore_index``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

ECE_BINS = 15


@dataclass
class Classification:
    """Figures of a labelled classification run."""

    num_labeled: int
    num_classes: int
    top1: float
    top5: float | None
    macro: float
    confusion: np.ndarray
    """Counts, true class by row, predicted class by column."""
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray


def classification(
    pred: np.ndarray, target: np.ndarray, num_classes: int, topk_pred: np.ndarray | None = None
) -> Classification:
    """The figures for the labelled rows (``target >= 0``). ``topk_pred``: the top classes per row, best first
    (top-5 needs at least 5 of them; otherwise ``top5`` is ``None``)."""
    keep = target >= 0
    pred, target = pred[keep].astype(np.int64), target[keep].astype(np.int64)
    confusion = np.bincount(target * num_classes + pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )
    tp = np.diag(confusion).astype(np.float64)
    fp = confusion.sum(axis=0) - tp
    fn = confusion.sum(axis=1) - tp
    precision = _divide(tp, tp + fp)
    recall = _divide(tp, tp + fn)
    f1 = _divide(2 * tp, 2 * tp + fp + fn)
    occurs = (tp + fp + fn) > 0
    top5 = None
    if topk_pred is not None and topk_pred.ndim == 2 and topk_pred.shape[1] >= 5 and num_classes > 5:
        top = topk_pred[keep][:, :5]
        top5 = float((top == target[:, None]).any(axis=1).mean()) if len(target) else 0.0
    return Classification(
        num_labeled=len(target),
        num_classes=num_classes,
        top1=float((pred == target).mean()) if len(target) else 0.0,
        top5=top5,
        macro=float(recall[occurs].mean()) if occurs.any() else 0.0,
        confusion=confusion,
        precision=precision,
        recall=recall,
        f1=f1,
        support=confusion.sum(axis=1),
    )


def normalized(confusion: np.ndarray) -> np.ndarray:
    """Each true class's row divided by its count (rows of absent classes stay 0)."""
    return _divide(confusion.astype(np.float64), confusion.sum(axis=1, keepdims=True).astype(np.float64))


def most_confused(confusion: np.ndarray, n: int = 20) -> list[tuple[int, int, int, float]]:
    """The ``n`` largest off-diagonal cells: (true, predicted, count, share of the true class)."""
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(off, axis=None, kind="stable")[::-1][:n]
    rows = confusion.sum(axis=1)
    pairs = []
    for i in flat:
        t, p = divmod(int(i), confusion.shape[1])
        if off[t, p] == 0:
            break
        pairs.append((t, p, int(off[t, p]), float(off[t, p] / rows[t])))
    return pairs


@dataclass
class Calibration:
    """Reliability per bin and the expected calibration error (l1), as ``MulticlassCalibrationError``."""

    ece: float
    accuracy: np.ndarray
    confidence: np.ndarray
    count: np.ndarray
    edges: np.ndarray


def calibration(score: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS) -> Calibration:
    """``score``: the top-1 probability of each labelled row; ``correct``: whether its top-1 class was right."""
    score = score.astype(np.float32)
    edges = np.linspace(0, 1, n_bins + 1, dtype=np.float32)
    # torchmetrics' bucketize(right=True) - 1 over n_bins + 1 edges: a score of exactly 1.0 has a bin of its own.
    index = np.clip(np.searchsorted(edges, score, side="right") - 1, 0, n_bins)
    count = np.bincount(index, minlength=n_bins + 1).astype(np.float64)
    conf = _divide(np.bincount(index, weights=score, minlength=n_bins + 1), count)
    acc = _divide(np.bincount(index, weights=correct.astype(np.float64), minlength=n_bins + 1), count)
    ece = float(np.sum(np.abs(acc - conf) * count / max(count.sum(), 1)))
    return Calibration(ece, acc, conf, count, edges)


def histogram(values: np.ndarray, bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
    values = values[np.isfinite(values)]
    if not len(values):
        return np.zeros(bins, dtype=np.int64), np.linspace(0, 1, bins + 1)
    low, high = float(values.min()), float(values.max())
    if low >= 0 and high <= 1:  # probabilities: the same axis for every run
        low, high = 0.0, 1.0
    if high <= low:
        high = low + 1
    return np.histogram(values, bins=bins, range=(low, high))


def pca_2d(x: np.ndarray) -> np.ndarray:
    """The rows of ``x`` on their first two principal components."""
    x = x.astype(np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    if x.shape[0] < 2 or x.shape[1] < 2:
        return np.zeros((x.shape[0], 2))
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T


def _divide(a: Any, b: Any) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b != 0)
