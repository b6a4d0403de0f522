"""lit_infer: batch prediction with convolutional networks on PyTorch Lightning.

The public names load on first use (PEP 562), so that ``lit-infer --version`` and ``lit-infer --help`` answer
without importing torch and Lightning. The first name you touch also registers lit_infer's strategies with
Lightning (``strategy: dp``, ``cpu_multiprocess``, ``pipeline``) and quiets the terminal as the CLI does: Lightning's
banners and the few warnings that lit_infer's own design causes are filtered by message (lit_infer/quiet.py).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_HOMES = {
    name: home
    for home, names in {
        "lit_infer.callbacks": ("GracefulStop", "ImagesPerSecondBar", "PredictionWriter", "StopRequested"),
        "lit_infer.data": ("Decoding", "ImageDataModule", "Inputs", "Loader", "Reading"),
        "lit_infer.errors": ("ConfigError", "RunError"),
        "lit_infer.modules": ("FeatureExtractor", "ImageClassifier", "ObjectDetector", "PredictionModule", "Segmenter"),
        "lit_infer.preprocessing": ("Preprocessing",),
        "lit_infer.records": ("Batch", "Failure", "Predictions", "Sample"),
        "lit_infer.run": ("predict",),
        "lit_infer.strategies": ("CPUMultiprocessStrategy", "DataParallelStrategy", "PipelineStrategy"),
    }.items()
    for name in names
}
"""Public name -> the module that defines it."""

__all__ = [
    "Batch",
    "CPUMultiprocessStrategy",
    "ConfigError",
    "DataParallelStrategy",
    "Decoding",
    "Failure",
    "FeatureExtractor",
    "GracefulStop",
    "ImageClassifier",
    "ImageDataModule",
    "ImagesPerSecondBar",
    "Inputs",
    "Loader",
    "ObjectDetector",
    "PipelineStrategy",
    "PredictionModule",
    "PredictionWriter",
    "Predictions",
    "Preprocessing",
    "Reading",
    "RunError",
    "Sample",
    "Segmenter",
    "StopRequested",
    "predict",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        if importlib.util.find_spec(f"lit_infer.{name}") is None:
            raise AttributeError(f"module 'lit_infer' has no attribute {name!r}")
        return importlib.import_module(f"lit_infer.{name}")  # lit_infer.nets, as the eager package allowed
    importlib.import_module("lit_infer.strategies")  # registers the strategies by name, once
    importlib.import_module("lit_infer.quiet").install()
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from lit_infer.callbacks import GracefulStop, ImagesPerSecondBar, PredictionWriter, StopRequested
    from lit_infer.data import Decoding, ImageDataModule, Inputs, Loader, Reading
    from lit_infer.errors import ConfigError, RunError
    from lit_infer.modules import FeatureExtractor, ImageClassifier, ObjectDetector, PredictionModule, Segmenter
    from lit_infer.preprocessing import Preprocessing
    from lit_infer.records import Batch, Failure, Predictions, Sample
    from lit_infer.run import predict
    from lit_infer.strategies import CPUMultiprocessStrategy, DataParallelStrategy, PipelineStrategy
