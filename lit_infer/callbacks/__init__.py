"""Callbacks: the prediction writer (shards, merge, formats) and the images/s progress bar."""

from lit_infer.callbacks.progress import ImagesPerSecondBar
from lit_infer.callbacks.writer import PredictionWriter

__all__ = ["ImagesPerSecondBar", "PredictionWriter"]
