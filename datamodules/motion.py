"""The one LightningDataModule shared by both stages: windows from one or several preprocessed datasets.

Each dataset is a dict ``{name, dir}`` plus optional ``hdf5`` (default ``<dir>/<name>_dataset.hdf5``),
``split_file`` (default ``<dir>/<name>_dataset_files.txt``; when missing, every sequence of the HDF5 group is
used), ``stats`` (default ``<dir>/<name>_mean_std.npz``) and ``weight`` (mixing weight; either all null or all
given). ``<name>`` is lower-cased as in the reference.

Normalisation: every dataset of a mix is normalised with ONE :class:`MotionStats`, the first dataset's (its
``stats`` or default file), so that ``.stats`` denormalises every batch. A later dataset that names a different
``stats`` file is a ConfigError.

Splits: ``train`` must hold sequences (DataError otherwise). A ``val`` split that is missing or empty does not stop
training: ``val_dataloader`` returns ``[]`` and Lightning skips validation. ``test`` must exist and hold sequences.

Batches: ``x`` float32 ``[B, L, P, D(P)]`` normalised (contacts and ``tpose_mask`` raw), ``valid`` bool
``[B, L, P]``, ``num_persons`` long ``[B]``, ``dataset`` long ``[B]`` (index into ``datasets``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from datamodules.windows import (
    SLICING_MODES,
    HDF5WindowDataset,
    MixedDataset,
    MotionDataLoader,
    WindowSampler,
    passthrough_collate,
)
from magnet.data import dataset_files
from magnet.errors import ConfigError, DataError
from magnet.representation import MotionStats, PackedLayout
from magnet.utils import require_number

log = logging.getLogger(__name__)

DATASET_KEYS = ("name", "dir", "hdf5", "split_file", "stats", "weight")
BATCH_SCOPES = ("device", "global")


class MotionDataModule(LightningDataModule):
    """Windows of ``sequence_len`` frames with ``person_num`` persons from one or several HDF5 datasets.

    ``train_slice`` / ``val_slice``: ``random_uniform_len`` | ``deterministic`` | ``first`` (spec 1.7).
    ``weights`` (or per-dataset ``weight``): None -> concatenation (datasets seen in proportion to their window
    count); given -> each training item picks a dataset with these probabilities, then a uniform window.
    ``epoch_length``: training items per epoch (default: the concatenation's window count). ``cache_size_gb``:
    per-process clip cache for the training split, divided evenly among the datasets (val/test get the same
    per-dataset budget; every DataLoader worker has its own cache). ``shuffle_persons``: random person order in
    training (partner blocks reordered to match). ``seed``: training draws come from ``(seed, epoch)``; None uses
    ``torch.initial_seed()`` at setup (set by ``lightning.seed_everything``).
    ``batch_scope``: ``device`` (default): every process's loaders yield ``batch_size`` windows; ``global``:
    ``batch_size`` (and ``val_batch_size``) are the totals over the attached Trainer's processes
    (``trainer.world_size``, DDP), so each process gets ``batch_size / world_size`` (which must divide evenly) and
    one optimiser step sees ``batch_size`` windows whatever the GPU count (the reference's 256 in one process).
    Attributes: ``.stats`` (:class:`MotionStats` used for every dataset), ``.layout`` (``PackedLayout(person_num)``),
    ``.train_set`` / ``.val_set`` / ``.test_set`` (:class:`MixedDataset` or None before ``setup``).
    """

    def __init__(
        self,
        datasets: Sequence[Mapping[str, Any]],
        sequence_len: int = 64,
        person_num: int = 2,
        batch_size: int = 256,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        train_slice: str = "random_uniform_len",
        val_slice: str = "deterministic",
        weights: Sequence[float] | None = None,
        epoch_length: int | None = None,
        cache_size_gb: float = 4.0,
        shuffle_persons: bool = True,
        pin_memory: bool = False,
        persistent_workers: bool | None = None,
        seed: int | None = None,
        is_first_clean: bool = False,
        drop_last: bool = False,
        batch_scope: str = "device",
    ):
        super().__init__()
        if isinstance(datasets, (Mapping, str, bytes)):
            datasets = [datasets]
        self.dataset_cfgs = [self._check_dataset(d, k) for k, d in enumerate(datasets)]
        if not self.dataset_cfgs:
            raise ConfigError("MotionDataModule needs at least one dataset ({name, dir})")
        for key, value in (("train_slice", train_slice), ("val_slice", val_slice)):
            if value not in SLICING_MODES:
                raise ConfigError(f"{key}={value!r} is unknown; use one of {list(SLICING_MODES)}")
        if val_slice == "random_uniform_len":
            raise ConfigError("val_slice='random_uniform_len' is not reproducible; use 'deterministic' or 'first'")
        def hint(key: str) -> str:  # the command-line key of train.py that sets it
            return f"set it with {key}=<value>"

        self.sequence_len = require_number("sequence_len", sequence_len, integer=True, minimum=1,
                                           hint=hint("stage.sequence_len"))
        self.person_num = require_number("person_num", person_num, integer=True, minimum=1,
                                         hint=hint("stage.num_persons"))
        self.batch_size = require_number("batch_size", batch_size, integer=True, minimum=1,
                                         hint=hint("stage.batch_size"))
        self.val_batch_size = (require_number("val_batch_size", val_batch_size, integer=True, minimum=1,
                                              hint=hint("data.val_batch_size"))
                               if val_batch_size is not None else self.batch_size)
        self.num_workers = require_number("num_workers", num_workers, integer=True, minimum=0,
                                          hint=hint("data.num_workers"))
        if epoch_length is not None:
            require_number("epoch_length", epoch_length, integer=True, minimum=1, hint=hint("data.epoch_length"))
        if batch_scope not in BATCH_SCOPES:
            raise ConfigError(f"batch_scope={batch_scope!r} is unknown; use one of {list(BATCH_SCOPES)} "
                              "(stage.batch_scope=)")
        self.batch_scope = batch_scope
        self.train_slice = train_slice
        self.val_slice = val_slice
        self.weights = self._resolve_weights(weights)
        self.epoch_length = int(epoch_length) if epoch_length is not None else None
        self.cache_size_gb = float(cache_size_gb)
        self.shuffle_persons = bool(shuffle_persons)
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = (self.num_workers > 0) if persistent_workers is None else bool(persistent_workers)
        self.seed = seed
        self.is_first_clean = bool(is_first_clean)
        self.drop_last = bool(drop_last)
        self.layout = PackedLayout(self.person_num)
        self._stats: MotionStats | None = None
        self._seed: int | None = None
        self.train_set: MixedDataset | None = None
        self.val_set: MixedDataset | None = None
        self.test_set: MixedDataset | None = None

    # ---------------------------------------------------------------------------------------------- config

    @staticmethod
    def _check_dataset(cfg: Mapping[str, Any], k: int) -> dict[str, Any]:
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"dataset #{k} must be a mapping {{name, dir, ...}}, got {type(cfg).__name__}")
        cfg = {key: cfg[key] for key in cfg}
        unknown = sorted(set(cfg) - set(DATASET_KEYS))
        if unknown:
            raise ConfigError(f"dataset #{k} has unknown key(s) {unknown}; allowed: {list(DATASET_KEYS)}")
        if not cfg.get("name") or cfg.get("dir") is None:
            raise ConfigError(f"dataset #{k} needs `name` and `dir` (got {cfg})")
        files = dataset_files(cfg["dir"], cfg["name"])
        return {
            "name": files.name,
            "dir": Path(cfg["dir"]),
            "hdf5": Path(cfg["hdf5"]) if cfg.get("hdf5") else files.hdf5,
            "split_file": Path(cfg["split_file"]) if cfg.get("split_file") else files.split_yaml,
            "stats": Path(cfg["stats"]) if cfg.get("stats") else None,
            "default_stats": files.stats,
            "weight": cfg.get("weight"),
        }

    def _resolve_weights(self, weights: Sequence[float] | None) -> list[float] | None:
        per_dataset = [d["weight"] for d in self.dataset_cfgs]
        if weights is not None:
            weights = [float(w) for w in weights]
            if len(weights) != len(self.dataset_cfgs):
                raise ConfigError(f"weights {weights} must have one entry per dataset ({len(self.dataset_cfgs)})")
            return weights
        if all(w is None for w in per_dataset):
            return None
        if any(w is None for w in per_dataset):
            raise ConfigError(f"dataset weights {per_dataset} must be all null or all numbers")
        return [float(w) for w in per_dataset]

    def _check_files(self, cfg: dict[str, Any]) -> None:
        if not cfg["dir"].is_dir():
            raise DataError(
                f"dataset {cfg['name']!r}: directory {cfg['dir']} not found; build it with magnet-preprocess "
                f"(--output {cfg['dir']} --name {cfg['name']}) or use dataset=synthetic"
            )
        if not cfg["hdf5"].is_file():
            raise DataError(
                f"dataset {cfg['name']!r}: {cfg['hdf5']} not found; build it with magnet-preprocess "
                f"(--output {cfg['dir']} --name {cfg['name']}) or use dataset=synthetic"
            )

    @property
    def stats(self) -> MotionStats:
        """The :class:`MotionStats` every dataset is normalised with (the first dataset's)."""
        if self._stats is None:
            first = self.dataset_cfgs[0]
            path = first["stats"] or first["default_stats"]
            for cfg in self.dataset_cfgs[1:]:
                if cfg["stats"] is not None and Path(cfg["stats"]).resolve() != Path(path).resolve():
                    raise ConfigError(
                        f"dataset {cfg['name']!r} names stats {cfg['stats']} but a mix is normalised with one file "
                        f"({path}, from dataset {first['name']!r}); remove `stats` from the later datasets"
                    )
            if first["stats"] is None:
                self._check_files(first)
            self._stats = MotionStats.load(path)
        return self._stats

    def _resolved_seed(self) -> int:
        if self._seed is None:
            self._seed = int(self.seed) if self.seed is not None else int(torch.initial_seed() % 2**63)
        return self._seed

    # ----------------------------------------------------------------------------------------------- setup

    def _build(self, split: str, slicing: str, shuffle_persons: bool, allow_empty: bool) -> MixedDataset:
        per_dataset_gb = self.cache_size_gb / len(self.dataset_cfgs)
        parts = []
        for k, cfg in enumerate(self.dataset_cfgs):
            self._check_files(cfg)
            parts.append(
                HDF5WindowDataset(
                    cfg["hdf5"], split, stats=self.stats, split_file=cfg["split_file"],
                    sequence_len=self.sequence_len, person_num=self.person_num, slicing=slicing,
                    is_first_clean=self.is_first_clean, shuffle_persons=shuffle_persons,
                    cache_size_gb=per_dataset_gb, allow_empty=allow_empty, dataset_index=k,
                    seed=self._resolved_seed(),
                )
            )
        return MixedDataset(parts)

    def setup(self, stage: str | None = None) -> None:
        """Scan the split lists and sequence shapes (no clip is read yet). ``stage``: fit/validate/test/None."""
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = self._build("train", self.train_slice, self.shuffle_persons, allow_empty=False)
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = self._build("val", self.val_slice, False, allow_empty=True)
            if len(self.val_set) == 0:
                log.warning("no validation sequences in %s; validation is skipped",
                            ", ".join(c["name"] for c in self.dataset_cfgs))
        if stage in (None, "test") and self.test_set is None:
            self.test_set = self._build("test", self.val_slice, False, allow_empty=stage is None)

    # ---------------------------------------------------------------------------------------------- loaders

    def per_process(self, size: int, what: str = "batch_size") -> int:
        """Windows per loader batch of this process for a configured ``size`` (``batch_scope``, see the class)."""
        if self.batch_scope == "device":
            return size
        world = int(getattr(self.trainer, "world_size", 1) or 1) if self.trainer is not None else 1
        if size % world:
            raise ConfigError(f"{what}={size} is the global batch (batch_scope=global) and does not divide among the "
                              f"{world} training processes; use a multiple of {world}, or stage.batch_scope=device for "
                              f"{size} windows per process")
        return size // world

    def _loader(self, dataset: MixedDataset, sampler: WindowSampler, batch_size: int, drop_last: bool) -> DataLoader:
        return MotionDataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            # its own generator: starting an iteration draws a worker base seed, which would otherwise come from
            # the global torch RNG and shift the model's random stream after a mid-epoch resume
            generator=torch.Generator().manual_seed(int(sampler.seed)),
            num_workers=self.num_workers,
            collate_fn=passthrough_collate,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            drop_last=drop_last,
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        sampler = WindowSampler(
            self.train_set, shuffle=True, weights=self.weights, epoch_length=self.epoch_length,
            slicing=self.train_slice, shuffle_persons=self.shuffle_persons, is_first_clean=self.is_first_clean,
            random=True, seed=self._resolved_seed(),
        )
        return self._loader(self.train_set, sampler, self.per_process(self.batch_size), self.drop_last)

    def _eval_loader(self, dataset: MixedDataset) -> DataLoader | list:
        if len(dataset) == 0:
            return []
        sampler = WindowSampler(dataset, shuffle=False, slicing=self.val_slice, random=False, seed=0)
        return self._loader(dataset, sampler, self.per_process(self.val_batch_size, "val_batch_size"), False)

    def val_dataloader(self) -> DataLoader | list:
        """The val loader, or ``[]`` (Lightning then skips validation) when no dataset has val sequences."""
        if self.val_set is None:
            self.setup("validate")
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader | list:
        if self.test_set is None:
            self.setup("test")
        return self._eval_loader(self.test_set)


__all__ = ["BATCH_SCOPES", "DATASET_KEYS", "MotionDataModule"]

