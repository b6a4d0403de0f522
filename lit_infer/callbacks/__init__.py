"""Callbacks: the prediction writer (a part per unit, committed per batch) and the images/s progress bar, the graceful stop."""

from lit_infer.callbacks.progress import ImagesPerSecondBar
from lit_infer.callbacks.stop import GracefulStop, StopRequested
from lit_infer.callbacks.writer import PredictionWriter

__all__ = ["GracefulStop", "ImagesPerSecondBar", "PredictionWriter", "StopRequested"]
