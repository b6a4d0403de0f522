"""LightningModules for prediction: the generic base and the tasks."""

from lit_infer.modules.base import PredictionModule
from lit_infer.modules.classifier import ImageClassifier
from lit_infer.modules.detector import ObjectDetector
from lit_infer.modules.features import FeatureExtractor
from lit_infer.modules.segmenter import Segmenter

__all__ = ["FeatureExtractor", "ImageClassifier", "ObjectDetector", "PredictionModule", "Segmenter"]
