"""Preprocessing: raw SMPL-X sequences -> packed 30 fps clips -> HDF5 + split files + mean/std.

Per sequence (:func:`preprocess_sequence`):

1. reject the whole sequence (:class:`RejectedSequence`) if any frame of any person has an all-zero body pose
   (a "T-pose" placeholder) or if fewer than 2 frames remain at 30 fps;
2. resample to 30 fps onto ``int(T * 30 / fps)`` timestamps spaced 1/30 s apart (source frame ``k * fps / 30``):
   slerp for rotations, lerp for translations (nothing changes for 30 fps data);
3. z-up data: pre-multiply the root orientation and the world pelvis by a -90 degree rotation about x;
4. world pelvis = ``transl + J0(betas)`` (SMPL-X ``global_orient`` rotates about the pelvis joint J0), then the
   up-axis change of step 3 is applied to that point;
5. floor: forward kinematics of the body joints, heights (y) of joints 10 and 11 over all frames and persons,
   1-D DBSCAN (eps 0.005, min_samples 3); the floor is the median of the lowest cluster (the minimum height when
   there is no cluster) minus 0.01 m, and is subtracted from the pelvis y (a resting foot joint sits at +0.01 m);
6. contacts per body joint 1..21: it moved less than 0.005 m since the previous frame and is less than 0.04 m
   above the floor; frame 0 copies frame 1;
7. pack with :func:`magnet.representation.pack_sequence` (x/z recentred on the persons' canonical frames).

:func:`build_dataset` streams sequences (one in memory at a time) into ``<name>_dataset.hdf5`` and writes
``<name>_dataset_files.txt`` (YAML splits), ``<name>_data_split/{train,val,test}_data.csv`` and
``<name>_mean_std.npz`` (train split only). Every output is written under a temporary name and renamed into place
only when the whole build succeeded. The command line tool is ``magnet-preprocess`` (or
``python -m magnet.data.preprocess``); see :func:`main`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sized
from pathlib import Path
from typing import Any

import numpy as np
import torch

from magnet import geometry as geo
from magnet.data import SPLITS, dataset_files
from magnet.data.raw import FORMATS, RawDirectory, RawSequence
from magnet.errors import ConfigError, DataError, MagnetError
from magnet.utils import atomic_path

TARGET_FPS = 30
LEFT_FOOT, RIGHT_FOOT = 10, 11
FLOOR_EPS = 0.005  # DBSCAN neighbourhood radius (m)
FLOOR_MIN_SAMPLES = 3
FLOOR_OFFSET = 0.01  # a resting foot joint sits this far above the floor (m)
CONTACT_MOVE = 0.005  # max displacement per 30 fps frame for a contact (m)
CONTACT_HEIGHT = 0.04  # max height above the floor for a contact (m)
MIN_FRAMES = 2

# -90 degrees about x: (x, y, z) -> (x, z, -y), so the raw +z (up) becomes +y
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


class RejectedSequence(DataError):
    """A raw sequence that cannot be used (all-zero body pose, too short); :func:`build_dataset` skips and counts it."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"sequence '{name}' rejected: {reason}")
        self.name = name
        self.reason = reason


# --------------------------------------------------------------------------------------------- building blocks


def dbscan_1d(values: Any, eps: float = FLOOR_EPS, min_samples: int = FLOOR_MIN_SAMPLES) -> np.ndarray:
    """DBSCAN of scalars ``values[N]`` -> labels ``int [N]`` (-1 = noise), clusters numbered by ascending value.

    A point is a core point when at least ``min_samples`` points (itself included) lie within ``eps`` (inclusive).
    Core points within ``eps`` of each other share a cluster; a non-core point within ``eps`` of a core point is
    a border point of that cluster. In 1-D a border point can touch two clusters; general DBSCAN then depends on
    the visiting order, here it joins the nearer core point's cluster (the lower one on a tie).
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    labels = np.full(x.shape[0], -1, dtype=np.int64)
    if x.size == 0:
        return labels
    order = np.argsort(x, kind="stable")
    s = x[order]
    counts = np.searchsorted(s, s + eps, side="right") - np.searchsorted(s, s - eps, side="left")
    core = np.flatnonzero(counts >= min_samples)
    if core.size == 0:
        return labels
    cs = s[core]
    cluster = np.concatenate([[0], np.cumsum(np.diff(cs) > eps)])
    sorted_labels = np.full(s.shape[0], -1, dtype=np.int64)
    sorted_labels[core] = cluster
    other = np.setdiff1d(np.arange(s.shape[0]), core)
    if other.size:
        v = s[other]
        right = np.searchsorted(cs, v, side="left")  # first core >= v
        left = right - 1
        d_left = np.where(left >= 0, v - cs[np.clip(left, 0, None)], np.inf)
        d_right = np.where(right < cs.size, cs[np.clip(right, None, cs.size - 1)] - v, np.inf)
        use_left = d_left <= d_right
        nearest = np.where(use_left, left, right)
        dist = np.where(use_left, d_left, d_right)
        ok = dist <= eps
        sorted_labels[other[ok]] = cluster[nearest[ok]]
    labels[order] = sorted_labels
    return labels


def estimate_floor(
    heights: Any, eps: float = FLOOR_EPS, min_samples: int = FLOOR_MIN_SAMPLES, offset: float = FLOOR_OFFSET
) -> float:
    """Floor height from foot-joint heights ``[N]``: median of the lowest DBSCAN cluster minus ``offset``.

    Without any cluster (too few or too scattered heights) the minimum height is used instead of the median.
    """
    h = np.asarray(heights, dtype=np.float64).reshape(-1)
    if h.size == 0:
        raise DataError("estimate_floor: no foot heights")
    labels = dbscan_1d(h, eps, min_samples)
    if (labels >= 0).any():
        lowest = h[labels == labels[labels >= 0][np.argmin(h[labels >= 0])]]
        ref = float(np.median(lowest))
    else:
        ref = float(h.min())
    return ref - offset


def resample_positions(num_frames: int, fps: float, target_fps: float = TARGET_FPS) -> np.ndarray:
    """Source-frame positions ``[int(T * target / fps)]`` of the resampled frames: ``k * fps / target``.

    The timestamps are 1/target s apart from the first frame; positions past the last frame (upsampling) are
    clamped to ``T - 1``.
    """
    n = math.floor(num_frames * target_fps / fps + 1e-9)
    pos = np.arange(n, dtype=np.float64) * (fps / target_fps)
    return np.minimum(pos, num_frames - 1)


def _split_positions(pos: np.ndarray, num_frames: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, num_frames - 1)
    w = pos - i0
    return torch.from_numpy(i0), torch.from_numpy(i1), torch.from_numpy(w)


def resample_rotations(aa: torch.Tensor, pos: np.ndarray) -> torch.Tensor:
    """Slerp axis-angle rotations ``aa[T, ..., 3]`` at source positions ``pos[T']`` -> matrices ``[T', ..., 3, 3]``."""
    T = aa.shape[0]
    i0, i1, w = _split_positions(pos, T)
    q = geo.axis_angle_to_quat(aa)
    if not torch.any(w != 0):
        return geo.quat_to_matrix(q[i0])
    w = w.to(q.dtype).reshape(-1, *([1] * (q.dim() - 2)))
    return geo.quat_to_matrix(geo.quat_slerp(q[i0], q[i1], w.expand(q[i0].shape[:-1])))


def resample_linear(x: torch.Tensor, pos: np.ndarray) -> torch.Tensor:
    """Linear interpolation of ``x[T, ...]`` at source positions ``pos[T']`` -> ``[T', ...]``."""
    i0, i1, w = _split_positions(pos, x.shape[0])
    w = w.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    return x[i0] * (1.0 - w) + x[i1] * w


def compute_contacts(
    joints: torch.Tensor | np.ndarray, move: float = CONTACT_MOVE, height: float = CONTACT_HEIGHT
) -> np.ndarray:
    """Contact flags ``[T, ...]`` (float 0/1) of joint positions ``joints[T, ..., 3]`` (y = height above the floor).

    A joint is in contact at frame t >= 1 when it moved less than ``move`` since frame t-1 and its y is below
    ``height``; frame 0 copies frame 1 (a single frame uses the height test only).
    """
    p = joints.detach().cpu().numpy() if isinstance(joints, torch.Tensor) else np.asarray(joints)
    low = p[..., 1] < height
    if p.shape[0] < 2:
        return low.astype(np.float64)
    still = np.linalg.norm(p[1:] - p[:-1], axis=-1) < move
    c = np.empty(low.shape, dtype=np.float64)
    c[1:] = still & low[1:]
    c[0] = c[1]
    return c


# --------------------------------------------------------------------------------------------- one sequence


def _check_tpose(raw: RawSequence) -> None:
    zero = np.all(np.asarray(raw.body_pose) == 0, axis=(2, 3))  # [P, T]
    if zero.any():
        p, t = np.argwhere(zero)[0]
        n = int(zero.sum())
        raise RejectedSequence(
            raw.name, f"all-zero body pose (T-pose) in {n} frame(s), first at frame {t} of person {p}"
        )


def preprocess_sequence(raw: RawSequence, body_model: Any, *, return_info: bool = False) -> Any:
    """Raw sequence -> packed clip ``float32 [T30, P, D(P)]`` (see the module docstring for the steps).

    ``body_model`` is a :class:`magnet.body.BodyModel`. Raises :class:`RejectedSequence` for unusable sequences
    and ``DataError`` for malformed ones. With ``return_info`` returns ``(clip, info)`` where ``info`` holds
    ``floor`` (m, in the y-up frame before the shift), ``source_frames`` and ``source_fps``.
    """
    raw.validate()
    _check_tpose(raw)
    P, T = raw.num_persons, raw.num_frames
    pos = resample_positions(T, float(raw.fps))
    T30 = pos.shape[0]
    if T30 < MIN_FRAMES:
        raise RejectedSequence(raw.name, f"too short ({T} frames at {raw.fps:g} fps give {T30} at 30 fps)")
    f64 = torch.float64

    def tp(a: np.ndarray) -> torch.Tensor:  # [P, T, ...] -> [T, P, ...] float64
        return torch.as_tensor(np.asarray(a), dtype=f64).transpose(0, 1)

    rots = [tp(raw.global_orient)[:, :, None], tp(raw.body_pose)]
    if raw.hand_pose is not None:
        rots.append(tp(raw.hand_pose))
    R_all = resample_rotations(torch.cat(rots, dim=2), pos)  # [T30, P, 1+21(+30), 3, 3]
    root_R, body_rot = R_all[:, :, 0], R_all[:, :, 1:22]
    hand_rot = R_all[:, :, 22:52] if raw.hand_pose is not None else None
    transl = resample_linear(tp(raw.transl), pos)  # [T30, P, 3]

    betas = torch.as_tensor(np.asarray(raw.betas), dtype=f64)  # [P, 10]
    rest = torch.as_tensor(body_model.rest_joints(betas), dtype=f64)  # [P, 55, 3]
    pelvis = transl + rest[:, 0]  # world pelvis in the raw frame
    if raw.up_axis == "z":
        R_up = torch.as_tensor(Z_UP_TO_Y_UP, dtype=f64)
        root_R = R_up @ root_R
        pelvis = pelvis @ R_up.T

    betas_t = betas.expand(T30, P, 10)
    joints = _body_joints(body_model, body_rot, root_R, pelvis, betas_t)  # [T30, P, 22, 3]
    floor = estimate_floor(joints[:, :, [LEFT_FOOT, RIGHT_FOOT], 1].reshape(-1).numpy())
    pelvis = pelvis.clone()
    pelvis[..., 1] -= floor
    joints = joints.clone()
    joints[..., 1] -= floor
    contacts = torch.as_tensor(compute_contacts(joints[:, :, 1:22]), dtype=f64)

    from magnet.representation import pack_sequence

    packed = pack_sequence(betas_t, body_rot, hand_rot, root_R, pelvis, contacts, recentre=True)
    clip = packed.detach().cpu().numpy().astype(np.float32)
    if not return_info:
        return clip
    return clip, {"floor": floor, "source_frames": T, "source_fps": float(raw.fps)}


def _body_joints(body_model: Any, body_rot, root_R, root_t, betas) -> torch.Tensor:
    """World positions ``[T, P, 22, 3]`` (float64) of joints 0..21 by body-only forward kinematics."""
    with torch.no_grad():
        positions, _ = body_model.forward_kinematics(body_rot, root_R, root_t, betas)
    return positions.detach().to(torch.float64).cpu()


# --------------------------------------------------------------------------------------------- whole dataset


def auto_split(name: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    """Deterministic split of one sequence from a hash of ``(seed, name)``: test with probability
    ``test_fraction``, val with ``val_fraction``, else train (independent of order and of other sequences)."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


@contextlib.contextmanager
def _atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success it replaces ``path`` (old content removed)."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f"{path.name}.old-{os.getpid()}")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Run torch single-threaded inside the block (restored after).

    Preprocessing works on small tensors (one clip at a time), where intra-op threads gain nothing and, on a
    loaded machine, cost several times the single-threaded time in contention.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _remove_if_created(directory: Path) -> Iterator[None]:
    """Remove ``directory`` (and parents this call created) if the block fails and left them empty."""
    directory = Path(directory).absolute()
    created = []
    for d in [directory, *directory.parents]:
        if d.exists():
            break
        created.append(d)
    try:
        yield
    except BaseException:
        for d in created:  # deepest first
            with contextlib.suppress(OSError):
                d.rmdir()  # only empty folders: a concurrent writer's files are never touched
        raise


def _progress(enabled: bool, total: int | None):
    if not enabled:
        return contextlib.nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]preprocess[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )


def build_dataset(
    sequences: Iterable[RawSequence],
    out_dir: str | os.PathLike,
    name: str,
    splits: Mapping[str, Iterable[str]] | None = None,
    body_model: Any = None,
    *,
    val_fraction: float = 0.0,
    test_fraction: float = 0.0,
    seed: int = 0,
    progress: bool = True,
    compression: str | None = None,
) -> dict[str, Any]:
    """Preprocess ``sequences`` one at a time into dataset ``name`` under ``out_dir``; return a summary.

    ``splits`` maps ``train``/``val``/``test`` to sequence names; sequences in no split go to train, names listed
    but absent from the input give one warning. Without ``splits`` each sequence goes to test / val with
    probability ``test_fraction`` / ``val_fraction`` by a seeded hash of its name (deterministic, stable when the
    dataset grows; counts are approximate). ``body_model`` defaults to :func:`magnet.body.load_body_model`.

    Writes ``<name>_dataset.hdf5``, ``<name>_dataset_files.txt``, ``<name>_data_split/`` and
    ``<name>_mean_std.npz`` (train split, streaming); all appear together only if the build succeeds.
    Rejected sequences (:class:`RejectedSequence`) are skipped and listed. The summary holds ``files``,
    ``sequences`` and ``frames`` per split, ``total_frames``, ``source_frames``, ``rejected`` (list of
    ``{name, reason}``), ``missing`` (names in ``splits`` absent from the input) and ``seconds``.
    """
    from magnet.data.hdf5 import HDF5Writer
    from magnet.data.splits import write_split_csv, write_split_yaml
    from magnet.representation import StatsAccumulator

    if not (0.0 <= val_fraction < 1.0 and 0.0 <= test_fraction < 1.0 and val_fraction + test_fraction < 1.0):
        raise ConfigError(
            f"val_fraction {val_fraction} and test_fraction {test_fraction} must be >= 0 with a sum below 1"
        )
    assignment: dict[str, str] = {}
    if splits is not None:
        if val_fraction or test_fraction:
            raise ConfigError("give either explicit splits or val/test fractions, not both")
        unknown = [k for k in splits if k not in SPLITS]
        if unknown:
            raise ConfigError(f"unknown split(s) {unknown}; allowed: {list(SPLITS)}")
        for split in SPLITS:
            for n in splits.get(split) or []:
                if n in assignment and assignment[n] != split:
                    raise DataError(f"sequence '{n}' is listed in both the {assignment[n]} and {split} splits")
                assignment[n] = split
    if body_model is None:
        from magnet.body import load_body_model

        body_model = load_body_model()

    files = dataset_files(out_dir, name)
    start = time.perf_counter()
    written: dict[str, list[str]] = {s: [] for s in SPLITS}
    frames = dict.fromkeys(SPLITS, 0)
    source_frames = 0
    rejected: list[dict[str, str]] = []
    seen: set[str] = set()
    stats = StatsAccumulator()
    total = len(sequences) if isinstance(sequences, Sized) else None

    with contextlib.ExitStack() as stack:
        stack.enter_context(_remove_if_created(files.dir))
        stack.enter_context(_one_torch_thread())
        csv_tmp = stack.enter_context(_atomic_dir(files.split_csv_dir))
        writer = stack.enter_context(HDF5Writer(files.hdf5, compression=compression))
        yaml_tmp = stack.enter_context(atomic_path(files.split_yaml))
        stats_tmp = stack.enter_context(atomic_path(files.stats))
        bar = stack.enter_context(_progress(progress, total))
        task = bar.add_task(files.name, total=total) if bar is not None else None
        for raw in sequences:
            if raw.name in seen:
                raise DataError(f"{raw.source}: sequence name '{raw.name}' appears twice in the input; rename one")
            seen.add(raw.name)
            try:
                clip, info = preprocess_sequence(raw, body_model, return_info=True)
            except RejectedSequence as e:
                rejected.append({"name": raw.name, "reason": e.reason})
            else:
                split = assignment.get(raw.name) if splits is not None else None
                if split is None:
                    split = "train" if splits is not None else auto_split(raw.name, seed, val_fraction,
                                                                          test_fraction)
                attrs = {"source_fps": info["source_fps"], "source_frames": info["source_frames"]}
                if "scenario" in raw.meta:
                    attrs["scenario"] = str(raw.meta["scenario"])
                writer.add(split, raw.name, clip, attrs)
                written[split].append(raw.name)
                frames[split] += clip.shape[0]
                source_frames += raw.num_frames
                if split == "train":
                    stats.update(clip, name=raw.name)
            if bar is not None:
                bar.advance(task)
            del raw
        if not any(written.values()):
            why = ""
            if rejected:
                why = f" ({len(rejected)} rejected; first: '{rejected[0]['name']}', {rejected[0]['reason']})"
            raise DataError(f"no usable sequences in the input{why}; nothing was written to {files.dir}")
        if not written["train"]:
            raise DataError(
                f"the train split of '{files.name}' is empty; the mean/std need training sequences "
                "(check the split lists or the val/test fractions)"
            )
        result = stats.result()
        with open(stats_tmp, "wb") as f:
            np.savez(f, mean=result.mean, std=result.std)
        write_split_yaml(yaml_tmp, written)
        write_split_csv(csv_tmp, written)

    missing = sorted(n for n in assignment if n not in seen)
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        warnings.warn(
            f"{len(missing)} sequence(s) listed in the splits are not in the input: {shown}", stacklevel=2
        )
    if splits is None and val_fraction > 0 and not written["val"]:
        warnings.warn(f"the val split of '{files.name}' is empty (val_fraction {val_fraction})", stacklevel=2)
    seconds = time.perf_counter() - start
    return {
        "name": files.name,
        "files": {
            "hdf5": str(files.hdf5),
            "split_yaml": str(files.split_yaml),
            "split_csv_dir": str(files.split_csv_dir),
            "stats": str(files.stats),
        },
        "sequences": {s: len(v) for s, v in written.items()},
        "frames": frames,
        "total_frames": sum(frames.values()),
        "source_frames": source_frames,
        "rejected": rejected,
        "missing": missing,
        "seconds": seconds,
    }


# --------------------------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="magnet-preprocess",
        description="Build a MAGNet dataset (HDF5 + splits + mean/std) from raw SMPL-X sequences. "
        "Sequences in no split list go to train.",
    )
    p.add_argument("--format", required=True, choices=FORMATS, help="raw layout of the input files")
    p.add_argument("--input", required=True, help="folder with the raw sequence files (searched recursively)")
    p.add_argument("--output", required=True, help="dataset folder to write")
    p.add_argument("--name", default=None, help="dataset name (file prefix; default: the format)")
    p.add_argument("--splits", default=None, help="folder with {train,val,test}_data.csv split lists")
    p.add_argument("--val-fraction", type=float, default=0.0, help="automatic split share of val (no --splits)")
    p.add_argument("--test-fraction", type=float, default=0.0, help="automatic split share of test (no --splits)")
    p.add_argument("--seed", type=int, default=0, help="seed of the automatic split")
    p.add_argument("--smplx", default=None, help="SMPL-X model file (default: $MAGNET_SMPLX_MODEL or built-in)")
    p.add_argument("--fps", type=float, default=None, help="override the raw frame rate")
    p.add_argument("--up-axis", choices=("y", "z"), default=None, help="override the raw up axis")
    p.add_argument("--compression", choices=("gzip", "lzf"), default=None, help="HDF5 compression")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit code (0 ok, 2 on a user error, printed as one line)."""
    args = _parser().parse_args(argv)

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)

    try:
        if args.splits and (args.val_fraction or args.test_fraction):
            raise ConfigError("give either --splits or --val-fraction/--test-fraction, not both")
        with warnings.catch_warnings():
            warnings.showwarning = show
            from magnet.data.splits import read_split_csv

            if args.splits and not Path(args.splits).is_dir():
                raise DataError(
                    f"split directory not found: {args.splits} (--splits names the folder holding "
                    "{train,val,test}_data.csv with the column scene_name)"
                )
            splits = read_split_csv(args.splits) if args.splits else None
            sequences = RawDirectory(args.input, args.format, fps=args.fps, up_axis=args.up_axis)
            if len(sequences) == 0:
                raise DataError(f"{args.input}: no raw files (.npz, .pkl) found; check --input")
            from magnet.body import load_body_model

            body_model = load_body_model(args.smplx)
            summary = build_dataset(
                sequences,
                args.output,
                args.name or args.format,
                splits,
                body_model,
                val_fraction=args.val_fraction,
                test_fraction=args.test_fraction,
                seed=args.seed,
                progress=not args.no_progress,
                compression=args.compression,
            )
    except MagnetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{s} {summary['sequences'][s]} ({summary['frames'][s]} frames)" for s in SPLITS)
    print(f"wrote {summary['files']['hdf5']}: {counts}")
    for r in summary["rejected"]:
        print(f"rejected {r['name']}: {r['reason']}")
    fps = summary["source_frames"] / max(summary["seconds"], 1e-9)
    print(f"{len(summary['rejected'])} rejected; {summary['seconds']:.1f} s ({fps:.0f} raw frames/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
