"""Throughput of the preprocessing pipeline (magnet.data.preprocess.build_dataset) on random raw sequences.

    .venv/bin/python bench/bench_preprocess.py [--num 20] [--frames 600] [--persons 2] [--fast-every 4]

Generates ``--num`` random raw sequences of ``--frames`` frames and ``--persons`` persons (every
``--fast-every``-th one at 120 fps, the others at 30 fps), builds a dataset with the default skeleton into a
temporary folder and prints raw frames/s and output (30 fps) frames/s of the whole build (HDF5, splits, stats).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator

import numpy as np

from magnet.body import load_body_model
from magnet.data.preprocess import build_dataset
from magnet.data.raw import RawSequence


def random_sequences(num: int, frames: int, persons: int, fast_every: int, seed: int = 0) -> Iterator[RawSequence]:
    """Random raw sequences, generated lazily (one in memory at a time)."""
    rng = np.random.default_rng(seed)
    for i in range(num):
        fps = 120.0 if fast_every > 0 and i % fast_every == fast_every - 1 else 30.0
        P, T = persons, frames
        yield RawSequence(
            name=f"bench_{i:04d}",
            fps=fps,
            betas=0.5 * rng.normal(size=(P, 10)),
            global_orient=0.2 * rng.normal(size=(P, T, 3)),
            body_pose=0.1 + 0.2 * rng.normal(size=(P, T, 21, 3)),
            hand_pose=0.2 * rng.normal(size=(P, T, 30, 3)),
            transl=np.cumsum(0.01 * rng.normal(size=(P, T, 3)), axis=1),
            up_axis="y",
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num", type=int, default=20)
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--persons", type=int, default=2)
    ap.add_argument("--fast-every", type=int, default=4, help="every k-th sequence is 120 fps (0: none)")
    args = ap.parse_args()
    body = load_body_model(warn=False)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        summary = build_dataset(
            random_sequences(args.num, args.frames, args.persons, args.fast_every),
            out, "bench", None, body, val_fraction=0.1, test_fraction=0.1, progress=False,
        )
        seconds = time.perf_counter() - start
    raw, packed = summary["source_frames"], summary["total_frames"]
    print(
        f"build_dataset ({body.source}): {args.num} sequences x {args.frames} frames x {args.persons} persons, "
        f"{raw} raw frames -> {packed} frames at 30 fps in {seconds:.2f} s: "
        f"{raw / seconds:,.0f} raw frames/s, {packed / seconds:,.0f} output frames/s"
    )


if __name__ == "__main__":
    main()
