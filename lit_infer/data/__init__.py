"""Sources -> units of work -> decoded uint8 batches."""

from lit_infer.data.datamodule import ImageDataModule
from lit_infer.data.dataset import UnitDataset, collate
from lit_infer.data.decode import Decoder
from lit_infer.data.sources import SourcePlan, plan_source

__all__ = ["Decoder", "ImageDataModule", "SourcePlan", "UnitDataset", "collate", "plan_source"]
