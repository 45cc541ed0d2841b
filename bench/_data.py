"""A random dataset in the reference HDF5 layout, shared by the benchmarks (values are noise, shapes are real)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import yaml

from magnet.representation import STATS_DIM, MotionStats, PackedLayout


def build_random_dataset(root: Path, clips: int, frames: int, persons: int, seed: int = 0,
                         unit_stats: bool = False) -> MotionStats:
    """``<root>/bench_dataset.hdf5`` (every clip in train), its YAML split file and ``bench_mean_std.npz``.

    ``unit_stats``: mean 0 / std 1 (normalisation is the identity) instead of random statistics.
    """
    rng = np.random.default_rng(seed)
    lay = PackedLayout(persons)
    names = [f"clip{i:04d}" for i in range(clips)]
    with h5py.File(root / "bench_dataset.hdf5", "w") as f:
        for split in ("train", "val", "test"):
            f.create_group(split)
        for name in names:
            x = rng.standard_normal((frames, persons, lay.dim), dtype=np.float32)
            x[..., lay.contacts] = x[..., lay.contacts] > 0
            x[..., lay.mask] = 1.0
            f["train"].create_dataset(name, data=x)
    (root / "bench_dataset_files.txt").write_text(yaml.safe_dump({"train": names, "val": [], "test": []}))
    if unit_stats:
        stats = MotionStats(np.zeros(STATS_DIM), np.ones(STATS_DIM))
    else:
        stats = MotionStats(rng.normal(size=STATS_DIM) * 0.1, rng.uniform(0.5, 2.0, size=STATS_DIM))
    stats.save(root / "bench_mean_std.npz")
    return stats
