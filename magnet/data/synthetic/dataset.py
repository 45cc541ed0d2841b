"""The synthetic dataset: a deterministic clip list with splits, built through the preprocessing into
``<data_dir>/synthetic/`` and cached (:func:`ensure_synthetic_dataset`); the command line
``python -m magnet.data.synthetic`` (:func:`main`)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from magnet.data.synthetic.generate import (
    DEFAULT_FRAMES,
    GENERATOR_VERSION,
    RNG_STREAM,
    default_body,
    generate_sequence,
)
from magnet.data.synthetic.plan import FPS
from magnet.data.synthetic.scenarios import SCENARIOS
from magnet.errors import ConfigError, DataError, MagnetError

DATASET_NAME = "synthetic"
DEFAULT_NUM_CLIPS = 120
MANIFEST_NAME = "manifest.json"


def _check_dataset_args(num_clips, frames) -> tuple[int, int]:
    if isinstance(num_clips, bool) or not isinstance(num_clips, int) or num_clips < 1:
        raise ConfigError(f"num_clips must be a positive integer, got {num_clips!r}")
    try:
        lo, hi = (int(frames[0]), int(frames[1]))
    except (TypeError, ValueError, IndexError):
        raise ConfigError(f"frames must be a pair (min, max) of clip lengths, got {frames!r}") from None
    if not 30 <= lo <= hi:
        raise ConfigError(f"frames must satisfy 30 <= min <= max (clip lengths at 30 fps), got {frames!r}")
    return lo, hi


def clip_plan(
    num_clips: int = DEFAULT_NUM_CLIPS, seed: int = 0, frames: Sequence[int] = DEFAULT_FRAMES
) -> list[dict[str, Any]]:
    """The clips of a synthetic dataset: ``[{name, scenario, seed, num_frames, split}]`` (deterministic).

    Scenarios take turns (clip ``i`` has scenario ``i % 5``). Splits are about 80/10/10 within every scenario, so
    each scenario appears in train, val and test once it has at least 3 clips (2 clips: train + val or test).
    """
    lo, hi = _check_dataset_args(num_clips, frames)
    clips = []
    for i in range(num_clips):
        ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, i, RNG_STREAM])
        clip_seed, length = (int(x) for x in ss.generate_state(2))
        scenario = SCENARIOS[i % len(SCENARIOS)]
        clips.append(
            {
                "name": f"synth_{i:04d}_{scenario}",
                "scenario": scenario,
                "seed": clip_seed,
                "num_frames": lo + length % (hi - lo + 1),
                "split": "train",
            }
        )
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 7919])
    for k, scenario in enumerate(SCENARIOS):
        idx = [i for i, c in enumerate(clips) if c["scenario"] == scenario]
        idx = [idx[j] for j in rng.permutation(len(idx))]
        n = len(idx)
        if n >= 3:
            n_held = max(1, round(0.1 * n))
            for i in idx[:n_held]:
                clips[i]["split"] = "val"
            for i in idx[n_held : 2 * n_held]:
                clips[i]["split"] = "test"
        elif n == 2:
            clips[idx[1]]["split"] = "val" if k % 2 == 0 else "test"
    return clips


def _manifest_key(num_clips, seed, frames, body_model) -> dict[str, Any]:
    return {
        "generator_version": GENERATOR_VERSION,
        "num_clips": int(num_clips),
        "seed": int(seed),
        "frames": [int(frames[0]), int(frames[1])],
        "body_model": str(getattr(body_model, "source", "default skeleton")),
    }


def _cache_check(out: Path, key: dict[str, Any]) -> str | None:
    """None if ``out`` holds a complete, readable build for ``key``; else why not: "" when there is no build for
    these arguments (nothing to report), or the damage found in a build for them (a file missing or unreadable,
    e.g. a truncated HDF5, or sequence / frame counts that differ from the manifest)."""
    import h5py

    from magnet.data import dataset_files

    try:
        manifest = json.loads((out / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return ""
    if not isinstance(manifest, dict) or any(manifest.get(k) != v for k, v in key.items()):
        return ""
    files = dataset_files(out, DATASET_NAME)
    for path in (files.hdf5, files.split_yaml, files.stats):
        if not path.is_file():
            return f"{path.name} is missing"
    if not files.split_csv_dir.is_dir():
        return f"{files.split_csv_dir.name}/ is missing"
    try:
        with np.load(files.stats) as stats:
            if stats["mean"].shape != (361,) or stats["std"].shape != (361,):
                return f"{files.stats.name} has the wrong shapes"
        with h5py.File(files.hdf5, "r") as f:
            for split, count in (manifest.get("sequences") or {}).items():
                group = f.get(split)
                names = list(group) if isinstance(group, h5py.Group) else []
                frames = sum(int(group[name][()].shape[0]) for name in names)  # reads every value
                if len(names) != count or frames != (manifest.get("frames_per_split") or {}).get(split):
                    return (f"{files.hdf5.name} split {split!r} holds {len(names)} sequences / {frames} frames, "
                            f"the manifest {count} / {manifest['frames_per_split'].get(split)}")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"a file cannot be read ({' '.join(str(exc).split())[:120]})"
    return None


def _cache_hit(out: Path, key: dict[str, Any]) -> bool:
    return _cache_check(out, key) is None


@contextlib.contextmanager
def _build_lock(data_dir: Path) -> Iterator[None]:
    """Serialise builds of the same data directory across processes (no-op where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(data_dir / f".{DATASET_NAME}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_synthetic_dataset(
    data_dir: str | os.PathLike,
    num_clips: int = DEFAULT_NUM_CLIPS,
    seed: int = 0,
    frames: Sequence[int] = DEFAULT_FRAMES,
    force: bool = False,
    *,
    body_model=None,
    progress: bool = False,
) -> Path:
    """Build (or reuse) the synthetic dataset in ``<data_dir>/synthetic/`` and return that directory.

    The directory holds ``synthetic_dataset.hdf5`` (each clip with an HDF5 attr ``scenario``),
    ``synthetic_dataset_files.txt``, ``synthetic_mean_std.npz``, ``synthetic_data_split/*.csv`` and
    ``manifest.json`` (generator version, arguments, body model, clip list). A later call with the same arguments
    returns at once (cache hit: the manifest matches and every file reads back with the counts it records); other
    arguments, a new generator version, a damaged build (e.g. a truncated HDF5; with a warning) or ``force=True``
    rebuild. Builds run into a temporary directory that replaces the old one only when complete, under a lock file,
    so concurrent or interrupted builds never leave half a dataset.

    Args:
        data_dir: parent directory (created if needed).
        num_clips: number of clips (scenarios take turns); splits are about 80/10/10 per scenario.
        seed: dataset seed (clip seeds, lengths and splits derive from it).
        frames: ``(min, max)`` clip length in frames at 30 fps.
        force: rebuild even when the cache matches.
        body_model: skeleton for the IK and the preprocessing (default: :func:`magnet.body.load_body_model`
            without a warning, i.e. ``MAGNET_SMPLX_MODEL`` or the built-in skeleton).
        progress: show a progress bar while building.
    """
    from magnet.data.preprocess import build_dataset

    frames = _check_dataset_args(num_clips, frames)
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    out = data_dir / DATASET_NAME
    body_model = body_model if body_model is not None else default_body()
    key = _manifest_key(num_clips, seed, frames, body_model)
    if not force and _cache_hit(out, key):
        return out
    with _build_lock(data_dir):
        if not force:
            problem = _cache_check(out, key)  # another process may have finished the same build meanwhile
            if problem is None:
                return out
            if problem:
                warnings.warn(f"the synthetic dataset in {out} is damaged ({problem}); rebuilding it", stacklevel=2)
        clips = clip_plan(num_clips, seed, frames)
        splits = {s: [c["name"] for c in clips if c["split"] == s] for s in ("train", "val", "test")}
        tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp = data_dir / f".{DATASET_NAME}.tmp-{tag}"
        old = data_dir / f".{DATASET_NAME}.old-{tag}"
        try:
            sequences = (
                generate_sequence(
                    c["scenario"], c["seed"], c["num_frames"], body_model=body_model, name=c["name"]
                )
                for c in clips
            )
            start = time.perf_counter()
            summary = build_dataset(sequences, tmp, DATASET_NAME, splits, body_model, progress=progress)
            if summary["rejected"]:
                first = summary["rejected"][0]
                raise DataError(
                    f"synthetic clip '{first['name']}' was rejected by the preprocessing ({first['reason']}); "
                    "please report this generator bug"
                )
            manifest = dict(key)
            manifest.update(
                {
                    "dataset_name": DATASET_NAME,
                    "build_seconds": round(time.perf_counter() - start, 3),
                    "sequences": summary["sequences"],
                    "frames_per_split": summary["frames"],
                    "clips": clips,
                }
            )
            (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
            if out.exists():
                os.replace(out, old)
            os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m magnet.data.synthetic --out data --clips 120 --seed 0``: build the dataset, print a summary."""
    parser = argparse.ArgumentParser(
        prog="python -m magnet.data.synthetic",
        description="Build the synthetic multi-person interaction dataset (cached in <out>/synthetic/).",
    )
    parser.add_argument("--out", default="data", help="data directory (the dataset goes to <out>/synthetic)")
    parser.add_argument("--clips", type=int, default=DEFAULT_NUM_CLIPS, help="number of clips")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed")
    parser.add_argument(
        "--min-frames", type=int, default=DEFAULT_FRAMES[0], help="shortest clip (frames, 30 fps)"
    )
    parser.add_argument(
        "--max-frames", type=int, default=DEFAULT_FRAMES[1], help="longest clip (frames, 30 fps)"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if a matching cache exists")
    parser.add_argument(
        "--smplx", default=None, help="SMPL-X model file (default: $MAGNET_SMPLX_MODEL or built-in)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        from magnet.body import load_body_model

        body = load_body_model(args.smplx, warn=False)
        frames = _check_dataset_args(args.clips, (args.min_frames, args.max_frames))
        key = _manifest_key(args.clips, args.seed, frames, body)
        cached = not args.force and _cache_hit(Path(args.out) / DATASET_NAME, key)
        start = time.perf_counter()
        out = ensure_synthetic_dataset(
            args.out,
            args.clips,
            args.seed,
            (args.min_frames, args.max_frames),
            args.force,
            body_model=body,
            progress=not args.no_progress,
        )
        seconds = time.perf_counter() - start
        manifest = json.loads((out / MANIFEST_NAME).read_text())
    except MagnetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    clips = manifest["clips"]
    print(
        f"synthetic dataset: {out} ({'cached' if cached else 'built'} in {seconds:.1f} s, "
        f"generator v{manifest['generator_version']}, body model: {manifest['body_model']})"
    )
    total = sum(manifest["frames_per_split"].values())
    print(f"  clips: {len(clips)}, frames: {total} ({total / FPS / 60:.1f} min at 30 fps)")
    for split in ("train", "val", "test"):
        print(
            f"  {split:5s}: {manifest['sequences'].get(split, 0):4d} clips, "
            f"{manifest['frames_per_split'].get(split, 0):6d} frames"
        )
    for scenario in SCENARIOS:
        n = {
            s: sum(1 for c in clips if c["scenario"] == scenario and c["split"] == s)
            for s in ("train", "val", "test")
        }
        print(f"  {scenario:15s} train {n['train']:3d}  val {n['val']:3d}  test {n['test']:3d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
