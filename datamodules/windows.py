"""Fixed-length training windows cut from the clips of magnet HDF5 dataset files.

Three pieces, used together by :class:`datamodules.MotionDataModule`:

* :class:`HDF5WindowDataset` - one HDF5 file + one split. Clips are read lazily (one h5py handle per process),
  normalised, padded with ``L`` frames of zeros on both ends (zeros = the normalised mean, ``tpose_mask`` 0) and
  kept in a per-process LRU cache bounded in bytes. One "epoch" has ``sum_clips(T // L + 1)`` windows.
* :class:`MixedDataset` - several window datasets behind one index space; it turns a list of window *specs*
  ``(dataset, clip, start, persons)`` into a whole batch at once (``__getitems__``), so the per-item cost is one
  numpy gather.
* :class:`WindowSampler` - draws the specs: which dataset (concatenation, or mixing weights), which clip, the
  window start (slicing mode) and which persons in which order. All randomness lives here, in the main process,
  seeded by ``(seed, epoch)``, so results do not depend on the number of DataLoader workers.

Person handling is per item, so one batch can mix clips with more and fewer persons than ``person_num``:
more -> a subset (random in training, the first ``person_num`` otherwise); fewer -> void persons appended, all
zeros with ``tpose_mask`` 0 (the same in training and inference), partner slots toward void persons zero.
With ``shuffle_persons`` the kept persons are permuted and every partner block is reordered to match
(:func:`magnet.representation.select_persons`).

Batches are dicts: ``x`` float32 ``[B, L, P, D(P)]`` (normalised; contacts and mask raw), ``valid`` bool
``[B, L, P]`` (``tpose_mask > 0.5``), ``num_persons`` long ``[B]`` (real persons kept), ``dataset`` long ``[B]``.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from magnet.data.hdf5 import DatasetFile, rebuild_command
from magnet.data.splits import read_split_yaml
from magnet.errors import ConfigError, DataError, MagnetError
from magnet.representation import MotionStats, person_dim, select_persons

log = logging.getLogger(__name__)

SLICING_MODES = ("random_uniform_len", "deterministic", "first")

Spec = tuple  # (dataset index, clip index, start in padded frames, persons: tuple[int, ...])
"""One window: dataset index, clip index, first frame in padded coordinates, kept clip persons in output order."""


def passthrough_collate(batch: Any) -> Any:
    """Collate function for datasets whose ``__getitems__`` already returns a whole batch."""
    return batch


def clean_worker_error(exc: MagnetError) -> MagnetError:
    """The one-line user error behind a DataLoader worker's re-raised :class:`MagnetError`.

    A worker's exception reaches the main process re-built from a message that holds the worker's whole
    traceback ("Caught DataError in DataLoader worker process 0. Original Traceback ..."); this returns an error
    of the same class with only the original message (``exc`` itself when it is not such a wrapper).
    """
    msg = str(exc)
    marker = f"{type(exc).__name__}: "
    if not (msg.startswith("Caught ") and "Traceback" in msg and marker in msg):
        return exc
    return type(exc)(msg.rsplit(marker, 1)[-1])


def _one_line_errors(iterator: Iterator[Any]) -> Iterator[Any]:
    """Yield from a DataLoader iterator, re-raising worker user errors with their one-line message."""
    while True:
        error = None
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except MagnetError as exc:
            error = clean_worker_error(exc)
            if error is exc:
                raise
            exc.__traceback__ = None  # its frames hold the iterator in a reference cycle
        if error is not None:
            # raised outside the handler, from a frame that no longer holds the iterator (nor the loader): the
            # error references neither, so the worker processes shut down as soon as the loader goes away
            del iterator
            raise error
        yield batch


class MotionDataLoader(DataLoader):
    """A ``DataLoader`` whose user errors (bad data found in a worker process) stay one line, and that can resume
    in the middle of an epoch.

    Same arguments and behaviour as :class:`torch.utils.data.DataLoader`. With a :class:`WindowSampler` it is
    stateful (``state_dict`` / ``load_state_dict``, which Lightning saves in checkpoints): the state is the sampler
    epoch of the iteration in progress and the number of batches handed out so far; after ``load_state_dict`` the
    next iteration draws that epoch's windows exactly as before and skips the batches already trained on, so a
    resumed run sees the same batches as an uninterrupted one. Under another sampler (e.g. Lightning's distributed
    wrapper) the state is empty and an interrupted epoch restarts.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._epoch: int | None = None
        self._batches = 0
        self._resume_batches = 0

    def _window_sampler(self) -> WindowSampler | None:
        return self.sampler if isinstance(self.sampler, WindowSampler) else None

    def __iter__(self):
        sampler = self._window_sampler()
        self._epoch = sampler.epoch if sampler is not None else None
        self._batches, self._resume_batches = self._resume_batches, 0
        return self._counted(_one_line_errors(super().__iter__()))

    def _counted(self, iterator: Iterator[Any]) -> Iterator[Any]:
        for batch in iterator:
            self._batches += 1
            yield batch
        self._batches = 0  # a finished iteration leaves nothing to resume

    def state_dict(self) -> dict[str, int]:
        if self._window_sampler() is None or self._epoch is None:
            return {}
        return {"epoch": int(self._epoch), "batches": int(self._batches)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler = self._window_sampler()
        if sampler is None or not state:
            return
        sampler.set_epoch(int(state["epoch"]))
        sampler.skip = int(state["batches"]) * int(self.batch_size or 1)
        self._resume_batches = int(state["batches"])


class ClipCache:
    """Least-recently-used cache of numpy arrays bounded by their total size in bytes.

    An array larger than the whole budget is not stored. ``max_bytes = 0`` disables caching.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._items: OrderedDict[Any, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Any) -> bool:
        return key in self._items

    def get(self, key: Any) -> np.ndarray | None:
        arr = self._items.get(key)
        if arr is not None:
            self._items.move_to_end(key)
        return arr

    def put(self, key: Any, arr: np.ndarray) -> None:
        if key in self._items:
            self.nbytes -= self._items.pop(key).nbytes
        if arr.nbytes > self.max_bytes:
            return
        while self._items and self.nbytes + arr.nbytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.nbytes -= old.nbytes
        self._items[key] = arr
        self.nbytes += arr.nbytes

    def clear(self) -> None:
        self._items.clear()
        self.nbytes = 0


@dataclass(frozen=True)
class ClipInfo:
    """Name and shape of one clip: ``num_frames`` T and ``num_persons`` P (the array is ``[T, P, D(P)]``)."""

    name: str
    num_frames: int
    num_persons: int


def gather_index(clip_persons: int, order: Sequence[int]) -> np.ndarray:
    """Column index that maps a flattened padded clip frame to the output persons.

    The clip frame is ``[P_clip * D(P_clip) + 1]`` (persons flattened, then one zero column); ``order[k]`` is the
    clip person at output slot ``k`` or ``-1`` for a void person. Returns int64 ``[len(order) * D(len(order))]``;
    entries equal to ``P_clip * D(P_clip)`` read the zero column. Built by running
    :func:`magnet.representation.select_persons` on an array of column numbers.
    """
    width = clip_persons * person_dim(clip_persons)
    codes = np.arange(1, width + 1, dtype=np.float64).reshape(clip_persons, -1)
    picked = np.rint(select_persons(codes, list(order))).astype(np.int64) - 1
    picked[picked < 0] = width
    return picked.reshape(-1)


class HDF5WindowDataset(Dataset):
    """Windows ``[L, person_num, D(person_num)]`` from one split of one HDF5 dataset file.

    ``hdf5_path``: the ``<name>_dataset.hdf5`` file; ``split``: ``train``/``val``/``test``; ``stats``: a
    :class:`MotionStats` or the path of a mean/std npz (default ``<dir>/<name>_mean_std.npz`` next to the file,
    where ``<name>`` is the file name without ``_dataset.hdf5``); ``split_file``: the YAML split list (default
    ``<dir>/<name>_dataset_files.txt``; when it does not exist every sequence of the HDF5 group is used).
    ``allow_empty``: a missing split group or an empty split gives an empty dataset instead of a DataError.

    Indexing with an int ``i`` (``0 <= i < len``) gives the window of clip ``c`` and slice ``s`` with
    ``i = sum_{c' < c}(T_c' // L + 1) + s``, cut with ``slicing`` (random draws from a per-process generator);
    indexing with a spec ``(clip, start, persons)`` cuts exactly that window. Items are dicts with ``x``
    float32 ``[L, P, D]``, ``valid`` bool ``[L, P]``, ``num_persons`` and ``dataset`` (ints);
    ``__getitems__`` returns the batched dict directly (use :func:`passthrough_collate`).
    """

    def __init__(
        self,
        hdf5_path: str | os.PathLike,
        split: str,
        *,
        stats: MotionStats | str | os.PathLike | None = None,
        split_file: str | os.PathLike | None = None,
        sequence_len: int = 64,
        person_num: int = 2,
        slicing: str = "deterministic",
        is_first_clean: bool = False,
        shuffle_persons: bool = False,
        cache_size_gb: float = 4.0,
        allow_empty: bool = False,
        dataset_index: int = 0,
        seed: int = 0,
    ):
        self.path = Path(hdf5_path)
        self.split = str(split)
        stem = self.path.name[: -len("_dataset.hdf5")] if self.path.name.endswith("_dataset.hdf5") else self.path.stem
        self.name = stem
        self.sequence_len = int(sequence_len)
        self.person_num = int(person_num)
        if self.sequence_len < 1:
            raise ConfigError(f"sequence_len must be >= 1, got {sequence_len}")
        self.dim = person_dim(self.person_num)
        if slicing not in SLICING_MODES:
            raise ConfigError(f"unknown slicing {slicing!r}; use one of {list(SLICING_MODES)}")
        self.slicing = slicing
        self.is_first_clean = bool(is_first_clean)
        self.shuffle_persons = bool(shuffle_persons)
        self.dataset_index = int(dataset_index)
        self.seed = int(seed)
        self.cache = ClipCache(int(float(cache_size_gb) * 1e9))
        if stats is None:
            stats = self.path.with_name(f"{stem}_mean_std.npz")
        self.stats = stats if isinstance(stats, MotionStats) else MotionStats.load(stats)
        self.split_file = Path(split_file) if split_file is not None else self.path.with_name(
            f"{stem}_dataset_files.txt")
        self.clips = self._scan(allow_empty)
        L = self.sequence_len
        self._frames = np.array([c.num_frames for c in self.clips], dtype=np.int64)
        self._persons = np.array([c.num_persons for c in self.clips], dtype=np.int64)
        self._lengths = self._frames // L + 1
        self._ends = np.cumsum(self._lengths)
        self._index_cache: dict[tuple, list[tuple[int, int, int]]] = {}
        self._stats_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._file: DatasetFile | None = None
        self._pid: int | None = None
        self._rng: np.random.Generator | None = None
        self._rng_pid: int | None = None

    # ------------------------------------------------------------------------------------------- metadata

    def _scan(self, allow_empty: bool) -> list[ClipInfo]:
        with DatasetFile(self.path) as f:
            if not f.has_split(self.split):
                if allow_empty:
                    log.warning("%s has no split %r; it is treated as empty", self.path, self.split)
                    return []
                f.sequences(self.split)  # raises the DataError that names the available splits
            if self.split_file.is_file():
                names = read_split_yaml(self.split_file)[self.split]
            else:
                names = f.sequences(self.split)
            clips = []
            for name in names:
                T, P, D = f.shape(self.split, name)
                if P < 1 or D != person_dim(P):
                    raise DataError(
                        f"{self.path} {self.split}/{name}: feature dimension D={D} does not match P={P} persons "
                        f"(expected {person_dim(max(P, 1))}); rebuild the dataset with {rebuild_command(self.path)}"
                    )
                if T < 1:
                    raise DataError(f"{self.path} {self.split}/{name}: the sequence has no frames; rebuild the dataset "
                                    f"with {rebuild_command(self.path)}")
                clips.append(ClipInfo(str(name), int(T), int(P)))
        if not clips and not allow_empty:
            raise DataError(
                f"{self.path}: split {self.split!r} has no sequences (split list {self.split_file}); "
                f"check the split file or rebuild the dataset with {rebuild_command(self.path)}"
            )
        return clips

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self.clips) else 0

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"] = None  # never ship an open h5py handle to another process
        state["_pid"] = None
        state["_rng_pid"] = None
        state["cache"] = ClipCache(self.cache.max_bytes)
        return state

    # --------------------------------------------------------------------------------------------- clips

    def _handle(self) -> DatasetFile:
        pid = os.getpid()
        if self._file is None or self._pid != pid:
            self._file = DatasetFile(self.path)  # a handle inherited through fork is dropped, not reused
            self._pid = pid
        return self._file

    def clip_array(self, clip: int) -> np.ndarray:
        """Normalised, padded clip ``clip`` as float32 ``[T + 2L, P_clip * D(P_clip) + 1]`` (cached).

        Rows ``L .. L+T-1`` hold the clip; the ``L`` rows before and after and the last column are zero.
        """
        arr = self.cache.get(clip)
        if arr is not None:
            return arr
        info = self.clips[clip]
        raw = self._handle().read(self.split, info.name)
        T, P = info.num_frames, info.num_persons
        if raw.shape[:2] != (T, P):
            raise DataError(f"{self.path} {self.split}/{info.name} changed while reading; restart the run")
        mean, std = self._norm_vectors(P)
        n, L = mean.shape[0], self.sequence_len
        arr = np.zeros((T + 2 * L, P * raw.shape[2] + 1), dtype=np.float32)
        view = arr[L:L + T, :-1].reshape(T, P, raw.shape[2])  # a view: rows of the padded array
        assert np.may_share_memory(view, arr)
        np.subtract(raw[..., :n], mean, out=view[..., :n])  # same result as MotionStats.normalise, no copies
        np.divide(view[..., :n], std, out=view[..., :n])
        view[..., n:] = raw[..., n:]
        self.cache.put(clip, arr)
        return arr

    def _norm_vectors(self, num_persons: int) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``(mean, std)`` of length ``NUM_NORMALISED(P)`` (``MotionStats.vectors``), cached."""
        if num_persons not in self._stats_cache:
            mean, std = self.stats.vectors(num_persons)
            self._stats_cache[num_persons] = (mean.astype(np.float32), std.astype(np.float32))
        return self._stats_cache[num_persons]

    def _runs(self, clip_persons: int, persons: tuple[int, ...]) -> list[tuple[int, int, int]]:
        """:func:`gather_index` as contiguous runs ``(out_lo, out_hi, src_lo)`` (``src_lo = -1``: zeros), cached."""
        key = (clip_persons, persons)
        runs = self._index_cache.get(key)
        if runs is None:
            order = list(persons) + [-1] * (self.person_num - len(persons))
            idx = gather_index(clip_persons, order)
            zero = clip_persons * person_dim(clip_persons)
            breaks = np.nonzero((np.diff(idx) != 1) | (idx[1:] == zero) | (idx[:-1] == zero))[0] + 1
            lo = np.concatenate([[0], breaks])
            hi = np.concatenate([breaks, [len(idx)]])
            runs = []
            for a, b in zip(lo.tolist(), hi.tolist()):
                src = -1 if idx[a] == zero else int(idx[a])
                if runs and src == -1 and runs[-1][2] == -1 and runs[-1][1] == a:
                    runs[-1] = (runs[-1][0], b, -1)  # merge neighbouring zero runs
                else:
                    runs.append((a, b, src))
            self._index_cache[key] = runs
        return runs

    def write_window(self, out: np.ndarray, clip: int, start: int, persons: tuple[int, ...]) -> None:
        """Write the window ``(clip, start, persons)`` into ``out`` float32 ``[L, person_num, D]`` (C-contiguous)."""
        arr = self.clip_array(clip)
        L = self.sequence_len
        if not 0 <= start <= arr.shape[0] - L:
            raise IndexError(f"window start {start} out of range for clip {self.clips[clip].name}")
        window = arr[start:start + L]
        flat = out.reshape(L, -1)
        for lo, hi, src in self._runs(self.clips[clip].num_persons, tuple(persons)):
            if src < 0:
                flat[:, lo:hi] = 0.0
            else:
                flat[:, lo:hi] = window[:, src:src + hi - lo]

    # ------------------------------------------------------------------------------------------- windows

    def locate(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat indices ``[N]`` -> ``(clip [N], slice_index [N])`` (cumulative sum of ``T // L + 1``)."""
        index = np.asarray(index, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"window index out of range [0, {len(self)}) for {self.path} {self.split}")
        clip = np.searchsorted(self._ends, index, side="right")
        return clip, index - (self._ends[clip] - self._lengths[clip])

    def window_specs(
        self,
        index: np.ndarray,
        rng: np.random.Generator | None,
        *,
        slicing: str | None = None,
        shuffle_persons: bool | None = None,
        is_first_clean: bool | None = None,
    ) -> list[tuple[int, int, tuple[int, ...]]]:
        """Specs ``(clip, start, persons)`` for flat indices ``index[N]`` (vectorised).

        ``start`` is in padded frames (clip frame ``f`` sits at ``f + L``):
        ``deterministic``: ``(s * L) mod max(T - L + 1, 1) + L``; ``random_uniform_len``: uniform in
        ``[L // 2, max(T + L // 2, L // 2 + 1) - 1]`` (lower bound ``L`` with ``is_first_clean``); ``first``: ``L``.
        Persons: with ``rng`` a random subset when the clip has more than ``person_num`` (random order with
        ``shuffle_persons``, else ascending); without ``rng`` the first ``min(P, person_num)`` in order.
        """
        slicing = self.slicing if slicing is None else slicing
        shuffle = self.shuffle_persons if shuffle_persons is None else shuffle_persons
        first_clean = self.is_first_clean if is_first_clean is None else is_first_clean
        L = self.sequence_len
        clip, sl = self.locate(index)
        T = self._frames[clip]
        if slicing == "deterministic":
            start = (sl * L) % np.maximum(T - L + 1, 1) + L
        elif slicing == "random_uniform_len":
            if rng is None:
                raise ConfigError("random_uniform_len slicing needs a random generator")
            lo = L if first_clean else L // 2
            hi = np.maximum(np.maximum(T + L // 2, L // 2 + 1), lo + 1)
            start = rng.integers(lo, hi)
        elif slicing == "first":
            start = np.full(len(clip), L, dtype=np.int64)
        else:
            raise ConfigError(f"unknown slicing {slicing!r}; use one of {list(SLICING_MODES)}")

        P_clip = self._persons[clip]
        keep = np.minimum(P_clip, self.person_num)
        if rng is None or (not shuffle and int(P_clip.max(initial=0)) <= self.person_num):
            persons = [tuple(range(k)) for k in keep.tolist()]
        else:
            keys = rng.random((len(clip), int(P_clip.max(initial=1))))
            persons = []
            for row, p, k in zip(keys, P_clip.tolist(), keep.tolist()):
                chosen = np.argsort(row[:p], kind="stable")[:k]
                persons.append(tuple((chosen if shuffle else np.sort(chosen)).tolist()))
        return list(zip(clip.tolist(), np.asarray(start).tolist(), persons))

    def _worker_rng(self) -> np.random.Generator:
        if self._rng is None or self._rng_pid != os.getpid():
            info = torch.utils.data.get_worker_info()
            self._rng = np.random.default_rng([self.seed, 0 if info is None else int(info.seed) % 2**32])
            self._rng_pid = os.getpid()
        return self._rng

    def _specs(self, indices: Sequence[Any]) -> list[tuple[int, int, tuple[int, ...]]]:
        ints = [i for i in indices if not isinstance(i, tuple)]
        if not ints:
            return [tuple(i[-3:]) for i in indices]
        rng = self._worker_rng() if self.slicing == "random_uniform_len" or self.shuffle_persons else None
        made = iter(self.window_specs(np.asarray(ints), rng))
        return [tuple(i[-3:]) if isinstance(i, tuple) else next(made) for i in indices]

    def __getitems__(self, indices: Sequence[Any]) -> dict[str, torch.Tensor]:
        specs = self._specs(indices)
        return _assemble([self], [(self.dataset_index, *s) for s in specs], local=True)

    def __getitem__(self, index: Any) -> dict[str, Any]:
        batch = self.__getitems__([index])
        return {k: (v[0].item() if v.ndim == 1 else v[0]) for k, v in batch.items()}


def _assemble(datasets: Sequence[HDF5WindowDataset], specs: Sequence[Spec], local: bool = False) -> dict:
    """Cut the windows of ``specs`` into one batch dict (see the module docstring for the keys and shapes)."""
    first = datasets[0]
    L, P, D = first.sequence_len, first.person_num, first.dim
    x = np.empty((len(specs), L, P, D), dtype=np.float32)
    num_persons = np.empty(len(specs), dtype=np.int64)
    ds_index = np.empty(len(specs), dtype=np.int64)
    for row, (ds, clip, start, persons) in enumerate(specs):
        dataset = datasets[0] if local else datasets[ds]
        dataset.write_window(x[row], clip, start, persons)
        num_persons[row] = len(persons)
        ds_index[row] = ds
    xt = torch.from_numpy(x)
    return {
        "x": xt,
        "valid": xt[..., -1] > 0.5,
        "num_persons": torch.from_numpy(num_persons),
        "dataset": torch.from_numpy(ds_index),
    }


class MixedDataset(Dataset):
    """Several :class:`HDF5WindowDataset` (same ``sequence_len`` and ``person_num``) behind one index space.

    Int index ``i`` addresses the concatenation (dataset ``k`` owns ``[sum_{k'<k} len_k', ...)``) and uses that
    dataset's own slicing; a spec ``(dataset, clip, start, persons)`` (from :class:`WindowSampler`) cuts
    exactly that window. ``__getitems__`` returns a batch dict (``dataset`` = position in ``datasets``).
    """

    def __init__(self, datasets: Sequence[HDF5WindowDataset]):
        if not datasets:
            raise ConfigError("MixedDataset needs at least one dataset")
        self.datasets = list(datasets)
        shapes = {(d.sequence_len, d.person_num) for d in self.datasets}
        if len(shapes) != 1:
            raise ConfigError(f"all datasets of a mix need the same sequence_len and person_num, got {sorted(shapes)}")
        self.lengths = np.array([len(d) for d in self.datasets], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _spec(self, index: Any) -> Spec:
        if isinstance(index, tuple):
            return index
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"window index {index} out of range [0, {len(self)})")
        k = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return (k, *self.datasets[k]._specs([index - int(self.offsets[k])])[0])

    def __getitems__(self, indices: Sequence[Any]) -> dict[str, torch.Tensor]:
        return _assemble(self.datasets, [self._spec(i) for i in indices])

    def __getitem__(self, index: Any) -> dict[str, Any]:
        batch = self.__getitems__([index])
        return {k: (v[0].item() if v.ndim == 1 else v[0]) for k, v in batch.items()}


class WindowSampler(Sampler):
    """Yields window specs ``(dataset, clip, start, persons)`` for a :class:`MixedDataset`; deterministic.

    ``weights=None``: every window of the concatenation once per epoch (shuffled when ``shuffle``), so datasets
    are seen in proportion to their length. ``weights`` given: for each item pick a dataset with these
    probabilities, then a uniform window of it (reference ``InterleavedDataset``). ``epoch_length`` (default:
    the concatenation's length) sets the number of items per epoch. ``slicing``, ``shuffle_persons`` and
    ``is_first_clean`` default to each dataset's own. Draws come from ``numpy.random.default_rng([seed, epoch])``;
    ``set_epoch`` fixes the epoch, and each iteration advances it by one.
    """

    CHUNK = 65536

    def __init__(
        self,
        dataset: MixedDataset,
        *,
        shuffle: bool = True,
        weights: Sequence[float] | None = None,
        epoch_length: int | None = None,
        slicing: str | None = None,
        shuffle_persons: bool | None = None,
        is_first_clean: bool | None = None,
        random: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        self.dataset = dataset
        self.shuffle = bool(shuffle)
        self.random = bool(random)
        self.slicing = slicing
        self.shuffle_persons = shuffle_persons
        self.is_first_clean = is_first_clean
        self.seed = int(seed)
        self.epoch = 0
        n = len(dataset.datasets)
        if weights is not None:
            w = np.asarray([float(v) for v in weights], dtype=np.float64)
            if w.shape != (n,) or not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
                raise ConfigError(f"mixing weights {list(weights)} must be {n} non-negative numbers with a positive sum")
            empty = [d.name for d, wk, lk in zip(dataset.datasets, w, dataset.lengths) if wk > 0 and lk == 0]
            if empty:
                raise DataError(f"dataset(s) {empty} have mixing weight > 0 but no windows in this split")
            self.weights: np.ndarray | None = w / w.sum()
        else:
            self.weights = None
        self.epoch_length = int(epoch_length) if epoch_length is not None else len(dataset)
        if self.epoch_length < 0:
            raise ConfigError(f"epoch_length must be >= 0, got {epoch_length}")

    def __len__(self) -> int:
        return self.epoch_length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    skip = 0  # items of the next iteration to draw but not yield (mid-epoch resume, see MotionDataLoader)

    def _flat(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Chunks of flat indices into the concatenation."""
        total, n = len(self.dataset), self.epoch_length
        if n == 0 or total == 0:
            return
        if self.weights is None:
            done = 0
            while done < n:
                order = rng.permutation(total) if self.shuffle else np.arange(total)
                for lo in range(0, min(total, n - done), self.CHUNK):
                    yield order[lo:min(lo + self.CHUNK, total, n - done)]
                done += min(total, n - done)
            return
        mix = self.dataset
        for lo in range(0, n, self.CHUNK):
            size = min(self.CHUNK, n - lo)
            ds = rng.choice(len(self.weights), size=size, p=self.weights)
            local = np.floor(rng.random(size) * mix.lengths[ds]).astype(np.int64)
            yield mix.offsets[ds] + np.minimum(local, mix.lengths[ds] - 1)

    def __iter__(self) -> Iterator[Spec]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        skip, self.skip = self.skip, 0
        mix = self.dataset
        for flat in self._flat(rng):
            ds = np.searchsorted(mix.offsets, flat, side="right") - 1
            out: list[Spec | None] = [None] * len(flat)
            for k in np.unique(ds).tolist():
                rows = np.nonzero(ds == k)[0]
                specs = mix.datasets[k].window_specs(
                    flat[rows] - mix.offsets[k], rng if self.random else None, slicing=self.slicing,
                    shuffle_persons=self.shuffle_persons, is_first_clean=self.is_first_clean,
                )
                for r, s in zip(rows.tolist(), specs):
                    out[r] = (k, *s)
            if skip >= len(out):  # drawn (the random stream stays the same) but already trained on
                skip -= len(out)
                continue
            yield from out[skip:]
            skip = 0


__all__ = ["SLICING_MODES", "ClipCache", "ClipInfo", "HDF5WindowDataset", "MixedDataset", "MotionDataLoader",
           "WindowSampler", "clean_worker_error", "gather_index", "passthrough_collate"]
