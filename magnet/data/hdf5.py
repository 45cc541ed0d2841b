"""The HDF5 dataset file: groups ``train``/``val``/``test``, one ``[T, P, D(P)]`` dataset per sequence.

Values are raw (un-normalised) packed motion (:mod:`magnet.representation`), float32, 30 fps. Files we write
carry root attrs ``fps = 30`` and ``format = "magnet-1"``; reference files have none and read the same way.
Each sequence may carry attrs (e.g. ``scenario``, ``source_fps``).

Reading validates: missing or non-HDF5 file, missing split or sequence, wrong feature dimension and NaN/Inf all
raise :class:`~magnet.errors.DataError` with one line naming the file, split and sequence.
An open :class:`DatasetFile` holds an h5py handle: open one per DataLoader worker process, not before forking.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from magnet.data import SPLITS
from magnet.errors import DataError
from magnet.representation import person_dim
from magnet.utils import atomic_path

FORMAT = "magnet-1"
FPS = 30


def rebuild_command(path: str | os.PathLike) -> str:
    """The command that rebuilds the dataset file ``path``: for the synthetic dataset's cache
    (``<dir>/synthetic/synthetic_dataset.hdf5`` beside its ``manifest.json``) the generator with the manifest's
    arguments and ``--force``, else ``magnet-preprocess``."""
    path = Path(path)
    manifest = path.parent / "manifest.json"
    if path.name != "synthetic_dataset.hdf5" or not manifest.is_file():
        return "magnet-preprocess"
    command = f"python -m magnet.data.synthetic --out {path.parent.parent}"
    try:
        m = json.loads(manifest.read_text())
        lo, hi = (int(v) for v in m["frames"])
        command += f" --clips {int(m['num_clips'])} --seed {int(m['seed'])} --min-frames {lo} --max-frames {hi}"
    except (OSError, ValueError, KeyError, TypeError):
        pass  # the defaults
    return command + " --force"


def check_sequence(x: np.ndarray, where: str) -> None:
    """Raise DataError unless ``x`` is a finite ``[T, P, person_dim(P)]`` array; ``where`` names it in messages."""
    if x.ndim != 3:
        raise DataError(f"{where}: shape {x.shape} is not [T, P, D]; rebuild the dataset with magnet-preprocess")
    T, P, D = x.shape
    if P < 1 or D != person_dim(P):
        raise DataError(
            f"{where}: feature dimension D={D} does not match P={P} persons (expected {person_dim(P) if P else '?'}); "
            "rebuild the dataset with magnet-preprocess"
        )
    if T < 1:
        raise DataError(f"{where}: the sequence has no frames; rebuild the dataset with magnet-preprocess")
    finite = np.isfinite(x)
    if not finite.all():
        t, p, d = np.argwhere(~finite)[0]
        raise DataError(
            f"{where}: NaN/Inf value at frame {t}, person {p}, feature {d}; fix the raw data and rebuild the dataset"
        )


class HDF5Writer:
    """Write a dataset file atomically: ``with HDF5Writer(path) as w: w.add("train", name, x)``.

    The data goes to ``<path>.tmp-<pid>`` and is renamed onto ``path`` only when the block ends without an
    exception; on an exception the temporary file is deleted and nothing is left at ``path``. All three split
    groups are created (empty ones included). ``compression`` (``None`` default, ``"gzip"`` or ``"lzf"``) trades
    read speed for size; uncompressed contiguous datasets read fastest.
    """

    def __init__(self, path: str | os.PathLike, *, compression: str | None = None, fps: int = FPS,
                 attrs: dict[str, Any] | None = None):
        if compression not in (None, "gzip", "lzf"):
            raise DataError(f"HDF5Writer: unknown compression {compression!r}; use None, 'gzip' or 'lzf'")
        self.path = Path(path)
        self.compression = compression
        self.fps = int(fps)
        self.root_attrs = dict(attrs or {})
        self._stack: contextlib.ExitStack | None = None
        self._file: h5py.File | None = None

    def __enter__(self) -> HDF5Writer:  # noqa: PYI034 - typing.Self needs Python 3.11
        stack = contextlib.ExitStack()
        try:
            tmp = stack.enter_context(atomic_path(self.path))
            self._file = h5py.File(tmp, "w")
            stack.callback(self._close)
            self._file.attrs["fps"] = self.fps
            self._file.attrs["format"] = FORMAT
            for key, value in self.root_attrs.items():
                self._file.attrs[key] = value
            for split in SPLITS:
                self._file.create_group(split)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __exit__(self, *exc: object) -> bool:
        stack, self._stack = self._stack, None
        assert stack is not None
        return stack.__exit__(*exc)

    def add(self, split: str, name: str, array: Any, attrs: dict[str, Any] | None = None) -> None:
        """Store sequence ``name`` (``array[T, P, D(P)]``, cast to float32) in ``split`` with optional attrs."""
        if self._file is None:
            raise RuntimeError("HDF5Writer.add called outside its `with` block")
        if split not in SPLITS:
            raise DataError(f"{self.path}: unknown split {split!r}; use one of {list(SPLITS)}")
        name = str(name)
        if not name or "/" in name or name in (".", ".."):
            raise DataError(f"{self.path}: invalid sequence name {name!r} (must be non-empty and contain no '/')")
        group = self._file[split]
        if name in group:
            raise DataError(f"{self.path}: sequence {split}/{name} was added twice; sequence names must be unique")
        if hasattr(array, "detach"):
            array = array.detach().cpu().numpy()
        x = np.asarray(array, dtype=np.float32)
        check_sequence(x, f"{self.path} {split}/{name}")
        ds = group.create_dataset(name, data=x, compression=self.compression)
        for key, value in (attrs or {}).items():
            ds.attrs[key] = value


class DatasetFile:
    """A validated, read-only dataset file (reference files without root attrs work unchanged).

    Use as a context manager or call :meth:`close`. ``splits`` lists the split groups present.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(
                f"dataset file not found: {self.path} (run magnet-preprocess to build it, or set the dataset dir)"
            )
        if not self.path.is_file() or not h5py.is_hdf5(self.path):
            raise DataError(f"not an HDF5 file: {self.path} (rebuild it with {rebuild_command(self.path)})")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as e:
            raise DataError(f"cannot open HDF5 file {self.path} ({e}); rebuild it with "
                            f"{rebuild_command(self.path)}") from e
        self.splits = [k for k in self._file if isinstance(self._file.get(k), h5py.Group)]
        self.fps = int(self._file.attrs.get("fps", FPS))
        fmt = self._file.attrs.get("format")
        self.format = fmt.decode() if isinstance(fmt, bytes) else (str(fmt) if fmt is not None else None)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> DatasetFile:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def has_split(self, split: str) -> bool:
        return split in self.splits

    def _group(self, split: str) -> h5py.Group:
        if split not in self.splits:
            raise DataError(
                f"{self.path} has no split {split!r} (available: {', '.join(self.splits) or 'none'}); "
                "choose another split or rebuild the dataset"
            )
        return self._file[split]

    def sequences(self, split: str) -> list[str]:
        """Names of the sequences in ``split`` (sorted)."""
        group = self._group(split)
        return sorted(k for k in group if isinstance(group.get(k), h5py.Dataset))

    def _dataset(self, split: str, name: str) -> h5py.Dataset:
        group = self._group(split)
        ds = group.get(str(name))
        if not isinstance(ds, h5py.Dataset):
            raise DataError(
                f"{self.path}: split {split!r} has no sequence {name!r}; check the split file against the dataset"
            )
        return ds

    def shape(self, split: str, name: str) -> tuple[int, int, int]:
        """``(T, P, D)`` of a sequence without reading it."""
        return tuple(self._dataset(split, name).shape)

    def attrs(self, split: str, name: str) -> dict[str, Any]:
        """The attrs of a sequence (``{}`` for reference files); bytes decoded to str."""
        out = {}
        for key, value in self._dataset(split, name).attrs.items():
            out[key] = value.decode() if isinstance(value, bytes) else value
        return out

    def read(self, split: str, name: str, validate: bool = True) -> np.ndarray:
        """Sequence ``name`` of ``split`` as float32 ``[T, P, D(P)]`` (raw values); validated unless told not to."""
        ds = self._dataset(split, name)
        try:
            x = np.asarray(ds[()], dtype=np.float32)
        except (OSError, ValueError, TypeError) as e:
            raise DataError(
                f"{self.path} {split}/{name}: cannot read the data ({e}); the file is corrupt, rebuild it with "
                f"{rebuild_command(self.path)}"
            ) from e
        if validate:
            check_sequence(x, f"{self.path} {split}/{name}")
        return x


def open_dataset(path: str | os.PathLike) -> DatasetFile:
    """Open and validate a dataset file (see :class:`DatasetFile`)."""
    return DatasetFile(path)


def list_sequences(path: str | os.PathLike, split: str) -> list[str]:
    """Sorted sequence names of ``split`` in the file at ``path``."""
    with DatasetFile(path) as f:
        return f.sequences(split)


def read_sequence(path: str | os.PathLike, split: str, name: str, validate: bool = True) -> np.ndarray:
    """One validated sequence as float32 ``[T, P, D(P)]``."""
    with DatasetFile(path) as f:
        return f.read(split, name, validate=validate)


__all__ = [
    "FORMAT",
    "FPS",
    "DatasetFile",
    "HDF5Writer",
    "check_sequence",
    "list_sequences",
    "open_dataset",
    "read_sequence",
]
