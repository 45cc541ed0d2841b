"""Dataset files: HDF5 motion clips, split lists, mean/std, raw-data adapters and preprocessing.

Submodules: :mod:`magnet.data.hdf5` (read/write the packed clips), :mod:`magnet.data.splits` (split lists),
``magnet.data.raw``, ``magnet.data.preprocess``, ``magnet.data.synthetic``. This package module itself only names
the files of a dataset (reference layout, ``<name>`` lower-cased):

``<dir>/<name>_dataset.hdf5``, ``<dir>/<name>_dataset_files.txt`` (YAML splits), ``<dir>/<name>_mean_std.npz``,
``<dir>/<name>_data_split/{train,val,test}_data.csv``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetFiles:
    """Paths of the files that make up dataset ``name`` in directory ``dir``."""

    dir: Path
    name: str

    @property
    def hdf5(self) -> Path:
        return self.dir / f"{self.name}_dataset.hdf5"

    @property
    def split_yaml(self) -> Path:
        return self.dir / f"{self.name}_dataset_files.txt"

    @property
    def stats(self) -> Path:
        return self.dir / f"{self.name}_mean_std.npz"

    @property
    def split_csv_dir(self) -> Path:
        return self.dir / f"{self.name}_data_split"


def dataset_files(dataset_dir: str | os.PathLike, name: str) -> DatasetFiles:
    """The :class:`DatasetFiles` of dataset ``name`` (lower-cased, as the reference does) under ``dataset_dir``."""
    return DatasetFiles(Path(dataset_dir), str(name).lower())


__all__ = ["SPLITS", "DatasetFiles", "dataset_files"]
