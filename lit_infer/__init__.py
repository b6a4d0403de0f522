"""lit_infer: batch prediction with convolutional networks on PyTorch Lightning."""

from lit_infer.callbacks import ImagesPerSecondBar, PredictionWriter
from lit_infer.data import ImageDataModule
from lit_infer.errors import ConfigError, RunError
from lit_infer.modules import FeatureExtractor, ImageClassifier, PredictionModule
from lit_infer.preprocessing import Preprocessing
from lit_infer.records import Batch, Failure, Predictions, Sample

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "ConfigError",
    "Failure",
    "FeatureExtractor",
    "ImageClassifier",
    "ImageDataModule",
    "ImagesPerSecondBar",
    "PredictionModule",
    "PredictionWriter",
    "Predictions",
    "Preprocessing",
    "RunError",
    "Sample",
]
