"""lit_infer: batch prediction with convolutional networks on PyTorch Lightning."""

from lit_infer.callbacks import GracefulStop, ImagesPerSecondBar, PredictionWriter, StopRequested
from lit_infer.data import ImageDataModule
from lit_infer.errors import ConfigError, RunError
from lit_infer.lifecycle.run import predict
from lit_infer.modules import FeatureExtractor, ImageClassifier, PredictionModule
from lit_infer.preprocessing import Preprocessing
from lit_infer.records import Batch, Failure, Predictions, Sample
from lit_infer.strategies import CPUMultiprocessStrategy, DataParallelStrategy, PipelineStrategy

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "CPUMultiprocessStrategy",
    "ConfigError",
    "DataParallelStrategy",
    "Failure",
    "FeatureExtractor",
    "GracefulStop",
    "ImageClassifier",
    "ImageDataModule",
    "ImagesPerSecondBar",
    "PipelineStrategy",
    "PredictionModule",
    "PredictionWriter",
    "Predictions",
    "Preprocessing",
    "RunError",
    "Sample",
    "StopRequested",
    "predict",
]
