"""Sources -> decoded uint8 batches."""

from lit_infer.data.datamodule import ImageDataModule
from lit_infer.data.dataset import ImageDataset, collate
from lit_infer.data.decode import Decoder
from lit_infer.data.sources import ImageList, discover

__all__ = ["Decoder", "ImageDataModule", "ImageDataset", "ImageList", "collate", "discover"]
