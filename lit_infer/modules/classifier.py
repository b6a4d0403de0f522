"""ImageClassifier: class probabilities (or logits), top-k, class names, and accuracy when labels are known."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import MetricCollection, SumMetric
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from lit_infer.data.access import check_regular_file
from lit_infer.errors import ConfigError
from lit_infer.modules.base import PredictionModule
from lit_infer.modules.labels import folder_labels_refused
from lit_infer.modules.outputs import describe_output, output_choices
from lit_infer.plan import DataInfo
from lit_infer.records import NO_LABEL, Batch, Predictions

_NO_SYNC = {"ignore_index": NO_LABEL, "validate_args": False}
"""Metric options: argument validation reads values on the device, a wait for the GPU at every batch. The labels
are checked once instead, on the host, before the run (``_check_labels``)."""


class ImageClassifier(PredictionModule):
    """Classify images: the top class (and top-k), its score and name per image.

    Columns written: ``pred`` (class index), ``score``, ``label`` (class name, when names are known), and with
    ``top_k > 1`` also ``topk_pred``, ``topk_score``, ``topk_label``; ``target`` when the data has labels;
    ``scores`` (every class) with ``save_scores``.

    Args:
        top_k: How many classes to report per image.
        score: ``probs`` (softmax of the network's output) or ``logits`` (the output as it is) as the score.
        class_names: Class names as a list, or the path of a text file with one name per line. ``None``: the class
            sub-folders of a folder source, when it has them.
        save_scores: Also write the full score vector of every image (best with ``format: npy``).
        **kwargs: Everything :class:`PredictionModule` takes (``net``/``factory``, ``weights``, ``output``: which
            element of a tuple/dict output holds the class logits, ...).
    """

    probe_output = True

    def __init__(
        self,
        top_k: int = 1,
        score: Literal["probs", "logits"] = "probs",
        class_names: list[str] | str | None = None,
        save_scores: bool = False,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("output") in ("probs", "logits"):
            raise ConfigError(
                "model.output",
                kwargs["output"],
                "now names the element of a tuple/dict network output that holds the logits",
                f"Use model.score={kwargs['output']} for the kind of score",
            )
        super().__init__(**kwargs)
        if top_k < 1:
            raise ConfigError("model.top_k", top_k, "must be at least 1", "Set model.top_k to 1 or more")
        if score not in ("probs", "logits"):
            raise ConfigError("model.score", score, "unknown score", "Use 'probs' or 'logits'")
        self.top_k = top_k
        self.score = score
        self.save_scores = save_scores
        self.class_names = _read_class_names(class_names)
        self._class_names_as_typed = class_names  # for messages: the file's path, or the list
        self._user_class_names = self.class_names is not None  # given by the user, not taken from folder names
        self._top_k_told = False
        # a file of many more names than outputs (``/proc/self/environ``) is refused before any image is read; the
        # exact count is checked on the network's first output (its last Linear need not be the output layer)
        width = _last_linear_width(self.net)
        if width is not None and self.class_names is not None and len(self.class_names) > width:
            self._check_names(width)
        self.metrics: MetricCollection | None = None
        self._target_map: torch.Tensor | None = None
        self._has_targets = False

    @override
    def output_options(self) -> dict[str, Any]:
        return {
            "top_k": self.top_k,
            "score": self.score,
            "save_scores": self.save_scores,
            "class_names": self.class_names,
        }

    @override
    def setup(self, stage: str) -> None:
        # Metrics are made here, not in on_predict_start: a rank with no batch skips that hook but must still take
        # part in the metrics' collective sync at the end. What the data says comes with the run's plan.
        info = self.plan.data if self.plan is not None else DataInfo()
        data_names = info.class_names
        self._has_targets = info.labels is not None
        width = _last_linear_width(self.net)
        if self._has_targets and info.labels_from_folders:
            why_not = folder_labels_refused(list(data_names or []), self.class_names, width, info.folders_are_labels)
            if why_not is not None:  # folder names that are not (known to be) the model's classes: no labels
                self._has_targets, data_names = False, None
                rank_zero_info(why_not)
        if self.class_names is None and data_names is not None:
            self.class_names = list(data_names)
        elif self.class_names is not None and data_names is not None and data_names != self.class_names:
            # The data's folder names may be a subset of the model's classes: map them by name, not by position.
            lookup = {name: i for i, name in enumerate(self.class_names)}
            unknown = [name for name in data_names if name not in lookup]
            if unknown:  # a label in a table that is no class of the model: no metric can count it
                raise ConfigError(
                    "data.inputs.label_column",
                    unknown[0],
                    f"a label in {info.source!r} that is not in model.class_names "
                    f"({len(unknown)} such label{'s' if len(unknown) > 1 else ''}: {', '.join(map(repr, unknown[:3]))})",
                    f"Fix the labels, or give model.class_names that hold them (now {_preview(self.class_names)})",
                )
            self._target_map = torch.tensor([lookup[n] for n in data_names], device=self.device)
        num_classes = len(self.class_names) if self.class_names else width
        if num_classes and width and width > num_classes:
            # More outputs than names (a 1000-class net on a folder of 2 classes): metrics must take every output.
            num_classes = width
        if self._has_targets and num_classes:
            if self._target_map is None:
                _check_labels(info.labels, num_classes, info.source)
            metrics = {
                "top1_accuracy": MulticlassAccuracy(num_classes, top_k=1, average="micro", **_NO_SYNC),
                "macro_accuracy": MulticlassAccuracy(num_classes, top_k=1, average="macro", **_NO_SYNC),
            }
            if num_classes > 5:  # top-k accuracy with k >= the number of classes is 1.0 by construction: not shown
                metrics["top5_accuracy"] = MulticlassAccuracy(num_classes, top_k=5, average="micro", **_NO_SYNC)
            self.metrics = MetricCollection(
                metrics,
                # Compute groups would share one state between top-1 and top-5 (same state shapes) and report
                # top-1 for both.
                compute_groups=False,
            ).to(self.device)
            self.num_labeled = SumMetric(nan_strategy="disable").to(self.device)  # its NaN check reads the GPU
        elif self._has_targets:
            warnings.warn(
                "labels are known but the number of classes is not: give model.class_names for metrics", stacklevel=1
            )

    @override
    def check_output(self, outputs: Any) -> None:
        if isinstance(outputs, torch.Tensor) and outputs.ndim == 2:
            self._check_names(outputs.shape[1])
            self._check_top_k(outputs.shape[1])
            return
        options = output_choices(outputs)
        if options:
            fix = f"Set model.output to the element that holds the class logits (one of {options})"
        else:
            fix = "Use FeatureExtractor or PredictionModule for other outputs, or override postprocess"
        raise ConfigError(
            "model.output",
            self.output,
            f"ImageClassifier needs N x classes logits; the network returned {describe_output(outputs)}",
            fix,
        )

    def _check_names(self, width: int) -> None:
        """Names that do not match the outputs one to one would label every image wrongly, or by number: refused."""
        if self._user_class_names and self.class_names is not None and len(self.class_names) != width:
            shown: Any = self._class_names_as_typed  # the file's path as typed, or the list (its head if long)
            if not isinstance(shown, str) and len(self.class_names) > 8:
                shown = [*self.class_names[:3], "...", *self.class_names[-2:]]
            raise ConfigError(
                "model.class_names",
                shown,
                f"has {len(self.class_names)} names for a network with {width} outputs",
                f"Give one name per output ({width}), in the order of the network's outputs",
            )

    def _check_top_k(self, width: int) -> None:
        """A ``top_k`` above the number of classes is lowered, and the user told once."""
        if self.top_k > width and not self._top_k_told:
            self._top_k_told = True
            rank_zero_info(f"lit-infer: model.top_k={self.top_k} lowered to {width}: the network has {width} classes")

    @override
    def postprocess(self, outputs: Any, batch: Batch) -> Predictions:
        self.check_output(outputs)
        logits = outputs.float()
        scores = logits.softmax(dim=1) if self.score == "probs" else logits
        k = min(self.top_k, scores.shape[1])
        top_scores, top_idx = scores.topk(k, dim=1)
        if self.metrics is not None:
            self._update_metrics(logits, batch)
        # Tensors stay on the device: Predictions copies them to the host while the next batch runs.
        columns: dict[str, torch.Tensor] = {"pred": top_idx[:, 0], "score": top_scores[:, 0]}
        if self.top_k > 1:
            columns["topk_pred"] = top_idx
            columns["topk_score"] = top_scores
        if self._has_targets:
            columns["target"] = self._model_targets(batch.labels)  # comparable with pred
        if self.save_scores:
            columns["scores"] = scores
        finish = self._add_class_names if self.class_names else None
        return Predictions(batch.indices.numpy(), batch.paths, columns, batch.failures, finish=finish)

    def _add_class_names(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """On the host: ``label`` after ``score`` and ``topk_label`` after ``topk_score``, the names of the classes."""
        assert self.class_names is not None
        names = np.asarray(self.class_names, dtype=str)
        out = {}
        for key, column in columns.items():
            out[key] = column
            if key == "score":
                out["label"] = _names(names, columns["pred"])
            elif key == "topk_score":
                out["topk_label"] = _names(names, columns["topk_pred"])
        return out

    def _update_metrics(self, logits: torch.Tensor, batch: Batch) -> None:
        assert self.metrics is not None
        target = self._model_targets(batch.labels.to(logits.device, non_blocking=True))  # pinned by the loader
        self.metrics.update(logits, target)
        self.num_labeled.update((target != NO_LABEL).sum())

    def _model_targets(self, labels: torch.Tensor) -> torch.Tensor:
        """The data's labels as the model's class indices (folder names mapped by name onto ``class_names``)."""
        if self._target_map is None:
            return labels
        known = labels != NO_LABEL
        return torch.where(known, self._target_map.to(labels.device)[labels.clamp(min=0)], labels)

    @override
    def compute_metrics(self) -> dict[str, float]:
        if self.metrics is None:
            return {}
        self.metrics_to_device(self.metrics, self.num_labeled)
        num_labeled = int(self.num_labeled.compute().item())  # collective: every rank calls it
        values = {name: float(v) for name, v in self.metrics.compute().items()}
        return {**values, "num_labeled": num_labeled} if num_labeled else {}


def _check_labels(labels: np.ndarray, num_classes: int, source: Any) -> None:
    """Labels from a table are class indices: one outside the model's classes would fail deep in the metrics (on a
    GPU, as a device-side assert that ends the process), so it is refused here, by value."""
    bad = labels[(labels != NO_LABEL) & ((labels < 0) | (labels >= num_classes))]
    if len(bad):
        raise ConfigError(
            "data.source",
            str(source),
            f"has labels outside the model's {num_classes} classes: {sorted(set(bad.tolist()))[:5]}",
            f"Use class indices 0..{num_classes - 1} or class names in data.inputs.label_column, or set it to null",
        )


def _names(names: np.ndarray, idx: np.ndarray) -> np.ndarray:
    # A model with more outputs than names gets its index as the name rather than an IndexError mid-run.
    inside = (idx >= 0) & (idx < len(names))
    return np.where(inside, names[np.where(inside, idx, 0)], idx.astype(str))


MAX_CLASS_NAMES_BYTES = 16 << 20
"""A class-names file larger than this is not a list of class names."""


def _read_class_names(class_names: list[str] | str | None) -> list[str] | None:
    """The names as a list: given as one, or read from a text file of one name per line (a regular file of UTF-8
    text, never a special file such as ``/proc/self/environ``, whose contents would end in every output row)."""
    if class_names is None or isinstance(class_names, list):
        return class_names
    what = "a text file of class names, one per line"
    check_regular_file(class_names, "model.class_names", what)
    with open(class_names, "rb") as f:
        data = f.read(MAX_CLASS_NAMES_BYTES + 1)
    problem = None
    if len(data) > MAX_CLASS_NAMES_BYTES:
        problem = f"is larger than {MAX_CLASS_NAMES_BYTES >> 20} MiB"
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            problem = "is not UTF-8 text"
        else:
            if any(ord(c) < 32 and c not in "\t\r\n" for c in text):
                problem = "holds control characters (NUL...), so it is not text lines"
    if problem is not None:
        raise ConfigError("model.class_names", class_names, problem, f"Give {what}")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _last_linear_width(net: nn.Module) -> int | None:
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


def _preview(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(map(repr, names[:limit]))
    return f"[{shown}{', ...' if len(names) > limit else ''}] ({len(names)} classes)"
