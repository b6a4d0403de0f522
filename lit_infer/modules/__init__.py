"""LightningModules for prediction: the generic base and the two tasks."""

from lit_infer.modules.base import PredictionModule
from lit_infer.modules.classifier import ImageClassifier
from lit_infer.modules.features import FeatureExtractor

__all__ = ["FeatureExtractor", "ImageClassifier", "PredictionModule"]
