"""Training-loader throughput of MotionDataModule (windows per second, one process, num_workers=0).

Builds a synthetic-shaped dataset in a temporary directory (random values in the reference HDF5 layout), then
measures the train loader with a cold clip cache (first epoch: reads + normalises every clip) and a warm one.

    .venv/bin/python bench/bench_datamodule.py [--clips 200 --frames 300 --persons 2 --batch 256 --seconds 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _data import build_random_dataset

from datamodules import MotionDataModule


def windows_per_second(dm: MotionDataModule, seconds: float, max_epochs: int | None = None) -> tuple[float, int]:
    """Iterate train epochs for at least ``seconds`` (or ``max_epochs``); return (windows/s, windows)."""
    count, epochs, t0 = 0, 0, time.perf_counter()
    while True:
        for batch in dm.train_dataloader():
            count += batch["x"].shape[0]
        epochs += 1
        elapsed = time.perf_counter() - t0
        if (max_epochs is not None and epochs >= max_epochs) or (max_epochs is None and elapsed >= seconds):
            return count / elapsed, count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--persons", type=int, default=2, help="persons per clip and per window")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--sequence-len", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=5.0, help="warm-cache measuring time")
    args = ap.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        build_random_dataset(root, args.clips, args.frames, args.persons)
        size = (root / "bench_dataset.hdf5").stat().st_size / 1e6
        print(f"dataset: {args.clips} clips x {args.frames} frames x {args.persons} persons "
              f"({size:.0f} MB HDF5, built in {time.perf_counter() - t0:.1f} s)")

        def datamodule() -> MotionDataModule:
            dm = MotionDataModule([{"name": "bench", "dir": root}], sequence_len=args.sequence_len,
                                  person_num=args.persons, batch_size=args.batch, num_workers=0, seed=0)
            dm.setup("fit")
            return dm

        dm = datamodule()
        epoch = len(dm.train_set)
        cold, n = windows_per_second(dm, 0.0, max_epochs=1)
        print(f"cold cache (first epoch, {n} windows, reads + normalises every clip): {cold:,.0f} windows/s")
        warm, n = windows_per_second(dm, args.seconds)
        print(f"warm cache ({n} windows, epoch = {epoch}, batch {args.batch} x {args.sequence_len} frames x "
              f"{args.persons} persons, 1 process): {warm:,.0f} windows/s")
        mb = dm.train_set.datasets[0].cache.nbytes / 1e6
        print(f"clip cache: {len(dm.train_set.datasets[0].cache)} clips, {mb:.0f} MB")


if __name__ == "__main__":
    main()
