"""The report's sections about predictions: accuracy, confusion, per-class scores, calibration and the most
confident mistakes with labels; the predicted classes and least confident predictions without; embeddings.

Two passes over the predictions: the numeric columns of every row (the figures must cover the whole run), then the
paths of the few rows the galleries show.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import lit_infer.report.svg as svg
from lit_infer.report.metrics import (
    ECE_BINS,
    calibration,
    classification,
    histogram,
    most_confused,
    normalized,
    pca_2d,
)
from lit_infer.report.reading import Run
from lit_infer.report.tables import EMBEDDING_SAMPLE, iter_chunks
from lit_infer.report.thumbnails import thumbnail

GALLERY = 24
GRID_CLASSES = 30
PAIRS = 20
CLASS_ROWS = 100
BARS = 30


def _numbers(values: Any, dtype: Any) -> np.ndarray:
    """Numbers of a column chunk (text in CSV); a cell that is not a number becomes NaN, or -1 for classes."""
    try:
        return np.asarray(values, dtype=np.float64).astype(dtype)
    except (TypeError, ValueError):
        out = []
        for v in values:
            try:
                out.append(float(v))
            except (TypeError, ValueError):
                out.append(np.nan)
        return (
            np.asarray(out, dtype=np.float64).astype(dtype)
            if np.dtype(dtype).kind == "f"
            else np.nan_to_num(np.asarray(out), nan=-1).astype(dtype)
        )


def read_columns(run: Run) -> dict[str, Any]:
    """The numeric columns of every row (pred, score, target, top-5 classes: 32 bytes a row) and a spread-out
    sample of embeddings."""
    total = int(run.summary.get("num_predicted") or 0)
    stride = max(1, -(-total // EMBEDDING_SAMPLE))
    cols: dict[str, list[np.ndarray]] = {"pred": [], "score": [], "target": [], "topk_pred": []}
    sample: list[np.ndarray] = []
    sample_rows: list[int] = []
    labels: dict[int, str] = {}
    rows = 0
    for chunk in iter_chunks(run.tables, {"pred", "score", "target", "topk_pred", "embedding", "label"}):
        n = len(next(iter(chunk.values()))) if chunk else 0
        if "pred" in chunk:
            cols["pred"].append(_numbers(chunk["pred"], np.int32))
            if "label" in chunk:  # each predicted class's name, as written: for runs that recorded no names
                classes, first = np.unique(cols["pred"][-1], return_index=True)
                for c, i in zip(classes.tolist(), first.tolist(), strict=True):
                    labels.setdefault(c, str(chunk["label"][i]))
        if "score" in chunk:
            cols["score"].append(_numbers(chunk["score"], np.float32))
        if "target" in chunk:
            cols["target"].append(_numbers(chunk["target"], np.int32))
        if "topk_pred" in chunk:
            cols["topk_pred"].append(_numbers([list(v)[:5] for v in chunk["topk_pred"]], np.int32))
        if "embedding" in chunk:
            picked = [i for i in range(n) if (rows + i) % stride == 0][: EMBEDDING_SAMPLE - len(sample_rows)]
            if picked:
                values = chunk["embedding"]
                sample.append(np.asarray([np.asarray(values[i], dtype=np.float64) for i in picked]))
                sample_rows += [rows + i for i in picked]
        rows += n
    out: dict[str, Any] = {"rows": rows, "labels": labels}
    for name, parts in cols.items():
        lengths = sum(len(p) for p in parts)
        out[name] = np.concatenate(parts) if parts and lengths == rows else None
    out["embedding"] = np.concatenate(sample) if sample else None
    out["embedding_rows"] = np.asarray(sample_rows, dtype=np.int64)
    return out


def paths_at(run: Run, positions: list[int]) -> dict[int, str]:
    """The ``path`` of the rows at these positions (a second pass that keeps only those)."""
    wanted, found, rows = set(positions), {}, 0
    if not wanted:
        return found
    for chunk in iter_chunks(run.tables, {"path"}):
        values = chunk.get("path", [])
        for i in [p - rows for p in wanted if rows <= p < rows + len(values)]:
            found[i + rows] = str(values[i])
        rows += len(values)
        if rows > max(wanted):
            break
    return found


def declared_names(run: Run) -> list[str]:
    """The class names the run recorded: the model's, else the data's class folders."""
    model, data = run.fingerprint.get("model") or {}, run.fingerprint.get("data") or {}
    names = model.get("class_names") or (data.get("labels") or {}).get("class_names") or []
    return [str(n) for n in names] if isinstance(names, list) else []


def class_names(run: Run, num_classes: int, seen: dict[int, str] | None = None) -> list[str]:
    """Names for classes ``0..num_classes-1``: the recorded ones, else those the table's ``label`` column gave."""
    names = declared_names(run)
    seen = seen or {}
    return names[:num_classes] + [seen.get(i, f"class {i}") for i in range(len(names), num_classes)]


def predictions(run: Run, problems: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"labelled": None, "unlabelled": None, "embeddings": None, "scores_plot": None}
    if not run.tables:
        return out
    try:
        cols = read_columns(run)
    except Exception as exc:  # a damaged table: the rest of the report still comes
        problems.append(f"the predictions cannot be read ({type(exc).__name__}: {exc})")
        return out
    pred, score, target = cols["pred"], cols["score"], cols["target"]
    info = run.run_info or {}
    where = {"cwd": info.get("cwd"), "source": (run.fingerprint.get("data") or {}).get("source")}
    probs = (run.fingerprint.get("model") or {}).get("score", "probs") == "probs"
    if score is not None:
        counts, edges = histogram(score)
        label = "top-1 score (probability)" if probs else "top-1 score (logit)"
        out["scores_plot"] = svg.histogram(counts, edges, label, "top-1 scores")
    if pred is not None and len(pred):
        labelled = target is not None and bool((target >= 0).any())
        num_classes = int(max(pred.max(initial=0), target.max(initial=0) if labelled else 0)) + 1
        names = class_names(run, max(num_classes, len(declared_names(run))), cols["labels"])
        if labelled:
            out["labelled"] = labelled_section(run, cols, names, probs, where)
        else:
            out["unlabelled"] = unlabelled_section(run, pred, score, names, where)
    if cols["embedding"] is not None and len(cols["embedding"]):
        groups, by = None, None
        if target is not None and len(target) == cols["rows"]:
            by = "label"
            t = target[cols["embedding_rows"]]
            names = class_names(run, max(int(target.max(initial=0)) + 1, len(declared_names(run))), cols["labels"])
            groups = [names[i] if i >= 0 else "no label" for i in t.tolist()]
        elif folder_classes(run):  # embeddings carry no target: the class folder of each input, said as such
            groups, by = folder_groups(run, cols["embedding_rows"].tolist()), "class folder"
        points = pca_2d(cols["embedding"])
        out["embeddings"] = {
            "plot": svg.scatter(points, groups, "embeddings, first two principal components"),
            "n": len(points),
            "coloured_by": by,
            "dim": cols["embedding"].shape[1] if cols["embedding"].ndim == 2 else 0,
        }
    return out


def folder_classes(run: Run) -> list[str]:
    """The class folders the data module labelled the inputs by (a folder source with labels), else ``[]``."""
    labels = (run.fingerprint.get("data") or {}).get("labels") or {}
    names = labels.get("class_names") if isinstance(labels, dict) else None
    return [str(n) for n in names] if isinstance(names, list) else []


def folder_groups(run: Run, positions: list[int]) -> list[str]:
    """Each row's class folder: the innermost folder of its path that is one of the data's class folders."""
    classes, paths = set(folder_classes(run)), paths_at(run, positions)
    groups = []
    for i in positions:
        parts = paths.get(i, "").split("/")[:-1]
        groups.append(next((p for p in reversed(parts) if p in classes), "no label"))
    return groups


def labelled_section(run: Run, cols: dict[str, Any], names: list[str], probs: bool, where: dict) -> dict[str, Any]:
    pred, score, target, topk = cols["pred"], cols["score"], cols["target"], cols["topk_pred"]
    n = len(names)
    c = classification(pred, target, n, topk)
    top5, top5_from = c.top5, "the written top-5 classes"
    if top5 is None and isinstance((run.summary.get("metrics") or {}).get("top5_accuracy"), (int, float)):
        top5, top5_from = float(run.summary["metrics"]["top5_accuracy"]), "summary.json (fewer than 5 classes written)"
    section: dict[str, Any] = {
        "num_labeled": c.num_labeled,
        "num_classes": n,
        "top1": c.top1,
        "top5": top5,
        "top5_from": top5_from,
        "macro": c.macro,
        "summary_metrics": run.summary.get("metrics") or {},
    }
    section["confusion"] = normalized(c.confusion)
    if n <= GRID_CLASSES:
        section["confusion_plot"] = svg.heatmap(
            normalized(c.confusion), names, "confusion matrix, normalised by true class"
        )
        section["pairs"] = None
    else:
        section["confusion_plot"] = None
        section["pairs"] = [
            {"true": names[t], "pred": names[p], "count": k, "share": s}
            for t, p, k, s in most_confused(c.confusion, PAIRS)
        ]
    order = np.arange(n)
    note = None
    if n > CLASS_ROWS:
        present = order[c.support > 0]
        order = present[np.argsort(c.f1[present], kind="stable")][:CLASS_ROWS]
        note = f"the {len(order)} classes with the lowest F1 of {n} (classes without labelled inputs left out)"
    section["classes"] = [
        {
            "name": names[i],
            "precision": c.precision[i],
            "recall": c.recall[i],
            "f1": c.f1[i],
            "support": int(c.support[i]),
        }
        for i in order.tolist()
    ]
    section["classes_note"] = note
    keep = target >= 0
    section["calibration"] = None
    if score is not None and probs:
        cal = calibration(score[keep], pred[keep] == target[keep], ECE_BINS)
        section["calibration"] = {
            "ece": cal.ece,
            "bins": ECE_BINS,
            "plot": svg.reliability(cal.accuracy, cal.confidence, cal.count, cal.edges, "reliability diagram"),
        }
    mistakes = np.flatnonzero(keep & (pred != target))
    if score is not None:
        mistakes = mistakes[np.argsort(-score[mistakes], kind="stable")]
    mistakes = mistakes[:GALLERY].tolist()
    paths = paths_at(run, mistakes)
    section["mistakes"] = [
        {
            "path": paths.get(i, "?"),
            "src": thumbnail(paths[i], **where) if i in paths else None,
            "caption": f"true {names[target[i]]}, predicted {names[pred[i]]}",
            "score": float(score[i]) if score is not None else None,
        }
        for i in mistakes
    ]
    return section


def unlabelled_section(
    run: Run, pred: np.ndarray, score: np.ndarray | None, names: list[str], where: dict
) -> dict[str, Any]:
    counts = np.bincount(pred[pred >= 0], minlength=len(names))
    top = np.argsort(-counts, kind="stable")[:BARS]
    top = top[counts[top] > 0]
    section: dict[str, Any] = {
        "distribution_plot": svg.bars([names[i] for i in top.tolist()], counts[top].tolist(), "predicted classes"),
        "classes_shown": len(top),
        "classes_predicted": int((counts > 0).sum()),
        "least": [],
    }
    if score is not None:
        least = np.argsort(score, kind="stable")[:GALLERY].tolist()
        paths = paths_at(run, least)
        section["least"] = [
            {
                "path": paths.get(i, "?"),
                "src": thumbnail(paths[i], **where) if i in paths else None,
                "caption": f"predicted {names[pred[i]]}",
                "score": float(score[i]),
            }
            for i in least
        ]
    return section
