"""Split lists: which sequence goes to train / val / test.

Two formats, both from the reference:

* ``<name>_dataset_files.txt``: YAML (despite the extension), a mapping ``{train: [...], val: [...], test: [...]}``.
  This is the one the loader reads. Missing keys (or an empty value) mean an empty list.
* ``<name>_data_split/{train,val,test}_data.csv``: one column with header ``scene_name``, one name per row.

Writers are atomic (temporary file, then rename).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

from magnet.data import SPLITS
from magnet.errors import DataError
from magnet.utils import atomic_path

CSV_COLUMN = "scene_name"


def _clean(splits: Mapping[str, Iterable[str]], where: str) -> dict[str, list[str]]:
    unknown = [k for k in splits if k not in SPLITS]
    if unknown:
        raise DataError(f"{where}: unknown split(s) {unknown}; allowed: {list(SPLITS)}")
    out = {}
    for split in SPLITS:
        names = splits.get(split) or []
        if isinstance(names, (str, bytes)) or not isinstance(names, Iterable):
            raise DataError(f"{where}: split {split!r} must be a list of sequence names")
        out[split] = [str(n) for n in names]
    return out


def read_split_yaml(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read ``<name>_dataset_files.txt`` -> ``{"train": [...], "val": [...], "test": [...]}``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split file not found: {path} (run magnet-preprocess to build it, or set the dataset dir)")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        at = f" at line {line + 1}" if line is not None else ""
        raise DataError(f"split file {path} is not valid YAML{at}; fix it or rebuild it with magnet-preprocess") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DataError(f"split file {path} must be a YAML mapping {{train: [...], val: [...], test: [...]}}")
    return _clean(data, f"split file {path}")


def write_split_yaml(path: str | os.PathLike, splits: Mapping[str, Iterable[str]]) -> None:
    """Write the YAML split file atomically (all three keys, missing ones as empty lists)."""
    clean = _clean(splits, f"split file {path}")
    text = yaml.safe_dump(clean, default_flow_style=False, sort_keys=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _read_csv(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [row for row in csv.reader(f) if row and any(c.strip() for c in row)]
    if not rows:
        return []
    if [c.strip() for c in rows[0]] != [CSV_COLUMN]:
        raise DataError(f"split CSV {path} must have the single header column {CSV_COLUMN!r}, got {rows[0]}")
    names = []
    for k, row in enumerate(rows[1:], start=2):
        if len(row) != 1:
            raise DataError(f"split CSV {path} row {k} has {len(row)} columns, expected 1 ({CSV_COLUMN})")
        names.append(row[0].strip())
    return names


def read_split_csv(directory: str | os.PathLike) -> dict[str, list[str]]:
    """Read ``<dir>/{train,val,test}_data.csv`` -> split dict; a missing file means an empty split."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"split directory not found: {directory} (run magnet-preprocess or set the dataset dir)")
    return {
        split: _read_csv(directory / f"{split}_data.csv") if (directory / f"{split}_data.csv").is_file() else []
        for split in SPLITS
    }


def write_split_csv(directory: str | os.PathLike, splits: Mapping[str, Iterable[str]]) -> None:
    """Write ``<dir>/{train,val,test}_data.csv`` (header ``scene_name``), each file atomically."""
    directory = Path(directory)
    clean = _clean(splits, f"split directory {directory}")
    for split, names in clean.items():
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([CSV_COLUMN])
        writer.writerows([n] for n in names)
        with atomic_path(directory / f"{split}_data.csv") as tmp:
            tmp.write_text(buf.getvalue())


__all__ = ["CSV_COLUMN", "read_split_csv", "read_split_yaml", "write_split_csv", "write_split_yaml"]
