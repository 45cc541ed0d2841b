"""The multi-dataset LightningDataModule shared by both stages (see :mod:`datamodules.motion`)."""

from datamodules.motion import MotionDataModule
from datamodules.windows import (
    ClipCache,
    HDF5WindowDataset,
    MixedDataset,
    WindowSampler,
    gather_index,
    passthrough_collate,
)

__all__ = [
    "ClipCache", "HDF5WindowDataset", "MixedDataset", "MotionDataModule", "WindowSampler", "gather_index",
    "passthrough_collate",
]
