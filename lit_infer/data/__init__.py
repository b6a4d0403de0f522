"""Sources -> units of work -> decoded uint8 batches."""

from lit_infer.data.datamodule import ImageDataModule
from lit_infer.data.dataset import UnitDataset, collate
from lit_infer.data.decode import Decoder
from lit_infer.data.options import Decoding, Inputs, Loader, Reading
from lit_infer.data.sources import SourceListing, list_source

__all__ = [
    "Decoder",
    "Decoding",
    "ImageDataModule",
    "Inputs",
    "Loader",
    "Reading",
    "SourceListing",
    "UnitDataset",
    "collate",
    "list_source",
]
