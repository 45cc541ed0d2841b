"""Sampler outputs as motion: which npz files a path names, which body model the run used, world joints of rows.

Shared by the video renderer (:mod:`magnet.visualize.render`), the viewer (:mod:`magnet.visualize.view`) and the
exporters (:mod:`magnet.export`). Files are the sampler's output npz format (:mod:`magnet.evaluation.io`: row 0 =
ground truth, rows 1..S = samples), ours or the reference's.

* :func:`output_files`: an npz file, or every output npz of a run directory (``plan.npz`` / ``plan_<clip>.npz``
  written by ``sample.py plan_only=true`` are skipped);
* :func:`run_body_model`: the body model for a file or run directory, resolved as ``evaluate.py`` does: an explicit
  SMPL-X path, else ``smpl_path`` of the run's ``inf_cfg.yaml``, else ``$MAGNET_SMPLX_MODEL``, else the built-in
  default skeleton;
* :func:`select_rows`, :func:`row_frames`, :func:`row_label`: rows to show and their valid frame counts;
* :func:`clip_joints`: world joints 0..21 (pelvis + 21 body joints, metres, Y-up) of chosen rows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from magnet.body import BodyModel, default_body_model, load_body_model
from magnet.errors import BodyModelError, ConfigError, DataError
from magnet.evaluation.io import INF_CFG_NAME, ClipOutput, load_yaml, read_inference_config

__all__ = [
    "NUM_SKELETON_JOINTS",
    "add_body_model_arguments",
    "body_model_argument",
    "clip_joints",
    "output_files",
    "row_frames",
    "row_label",
    "run_body_model",
    "run_directory",
    "run_fps",
    "select_rows",
]

NUM_SKELETON_JOINTS = 22  # pelvis + the 21 SMPL-X body joints


def _is_plan(path: Path) -> bool:
    return path.name == "plan.npz" or path.name.startswith("plan_")


def output_files(path: str | os.PathLike) -> list[Path]:
    """``[path]`` for an npz file; for a directory its output npz files sorted by name (plan files skipped).

    Raises:
        DataError: the path does not exist, is not an ``.npz`` file, or the directory holds no output npz.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.npz") if p.is_file() and not _is_plan(p))
        if not files:
            raise DataError(f"no output *.npz files in {path}; pass a sampler output file or the run directory "
                            "sample.py wrote (python sample.py ... out_dir=<dir>)")
        return files
    if not path.exists():
        raise DataError(f"not found: {path}; pass a sampler output .npz file or a run directory holding them")
    if path.suffix != ".npz":
        raise DataError(f"{path} is not an .npz file; pass a sampler output .npz file or a run directory")
    return [path]


def run_directory(path: str | os.PathLike) -> Path:
    """The run directory of ``path`` (itself for a directory, else the file's folder)."""
    path = Path(path)
    return path if path.is_dir() else path.parent


def run_fps(path: str | os.PathLike, default: float = 30.0) -> float:
    """The frame rate of the outputs at ``path``: a positive number under ``fps`` in the run's ``inf_cfg.yaml``,
    else ``default`` (magnet and the reference sample at 30 fps)."""
    cfg_path = run_directory(path) / INF_CFG_NAME
    if not cfg_path.is_file():
        return float(default)
    try:
        cfg = load_yaml(cfg_path.read_text())
    except yaml.YAMLError:
        return float(default)  # read_inference_config reports a malformed file where it matters
    value = cfg.get("fps") if isinstance(cfg, dict) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return float(default)


def run_body_model(path: str | os.PathLike, smplx: str | os.PathLike | BodyModel | None = None) -> BodyModel:
    """The body model for the outputs at ``path`` (a file or run directory).

    ``smplx`` (a :class:`BodyModel`, or a path to ``SMPLX_NEUTRAL.npz`` / its folder) wins; else ``smpl_path`` of the
    run's ``inf_cfg.yaml`` (relative paths tried from the working directory, then the run directory); else
    ``$MAGNET_SMPLX_MODEL``; else the built-in default skeleton (no warning). A missing ``inf_cfg.yaml`` is fine.

    Raises:
        BodyModelError: a named SMPL-X file is missing or malformed.
        ConfigError: ``inf_cfg.yaml`` is malformed.
    """
    if isinstance(smplx, BodyModel):
        return smplx
    if smplx not in (None, ""):
        return load_body_model(smplx)
    run_dir = run_directory(path)
    cfg = read_inference_config(run_dir, allow_missing=True)
    if cfg.smpl_path is not None:
        p = Path(cfg.smpl_path).expanduser()
        if not p.is_absolute() and not p.exists() and (run_dir / p).exists():
            p = run_dir / p
        if not p.exists():
            raise BodyModelError(f"{run_dir / INF_CFG_NAME} names smpl_path {cfg.smpl_path}, which does not exist; "
                                 "put the SMPL-X file there, pass --smplx <path to SMPLX_NEUTRAL.npz>, or "
                                 "--default-skeleton to use the built-in skeleton")
        return load_body_model(p)
    return load_body_model(None, warn=False)


def add_body_model_arguments(parser) -> None:
    """``--smplx PATH`` and ``--default-skeleton`` for the command lines that read outputs."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--smplx", default=None, help="SMPL-X model file (SMPLX_NEUTRAL.npz or its folder) for forward "
                       "kinematics (default: the run's smpl_path, else $MAGNET_SMPLX_MODEL, else the default "
                       "skeleton)")
    group.add_argument("--default-skeleton", action="store_true",
                       help="use the built-in default skeleton whatever inf_cfg.yaml names (e.g. a reference run "
                            "whose smpl_path points to another machine)")


def body_model_argument(args) -> BodyModel | str | None:
    """What ``run_body_model(path, smplx=...)`` gets from the parsed ``--smplx`` / ``--default-skeleton``."""
    if getattr(args, "default_skeleton", False):
        return default_body_model()
    return args.smplx


def select_rows(clip: ClipOutput, samples: int | Sequence[int] | None = None, *, ground_truth: bool = True
                ) -> list[int]:
    """Rows of ``clip`` to use: row 0 (the ground truth, unless ``ground_truth=False``) then the samples.

    ``samples``: None = every sample; an int N = samples 1..N; a sequence = those sample indices (1..S).

    Raises:
        ConfigError: N or an index outside 1..S (the message names the file and S).
    """
    count = clip.num_samples
    if samples is None:
        chosen = list(range(1, count + 1))
    elif isinstance(samples, (int, np.integer)):
        n = int(samples)
        if not 0 <= n <= count:
            raise ConfigError(f"{clip.path} holds {count} sample(s); asked for {n}, pass a count from 0 to {count}")
        chosen = list(range(1, n + 1))
    else:
        chosen = [int(k) for k in samples]
        for k in chosen:
            if not 1 <= k <= count:
                raise ConfigError(f"sample {k} is out of range: {clip.path} holds samples 1..{count} "
                                  "(0 = the ground truth)")
    return ([0] if ground_truth else []) + chosen


def row_frames(clip: ClipOutput, row: int) -> int:
    """Valid frames of a row: ``gt_end`` for the ground truth (row 0), ``timesteps`` for a sample."""
    return clip.gt_end if row == 0 else clip.timesteps


def row_label(row: int) -> str:
    """``"ground truth"`` for row 0, ``"sample k"`` otherwise."""
    return "ground truth" if row == 0 else f"sample {row}"


def clip_joints(clip: ClipOutput, body_model: BodyModel, rows: Sequence[int] | None = None,
                frames: int | None = None) -> np.ndarray:
    """World joints 0..21 of ``rows`` (default all) and the first ``frames`` frames (default all):
    float32 ``[R, T, P, 22, 3]`` (metres, Y-up) by forward kinematics of the clip's betas, root and body rotations.
    """
    import torch

    from magnet.evaluation.features import forward_joints

    rows = list(range(clip.num_samples + 1)) if rows is None else list(rows)
    end = clip.num_frames if frames is None else max(1, min(int(frames), clip.num_frames))
    with torch.no_grad():
        joints = forward_joints(body_model, clip.betas[rows, :end], clip.T_world_root[rows, :end],
                                clip.body_joint_rotations[rows, :end])
    out = joints.numpy().astype(np.float32)
    if not np.isfinite(out).all():
        raise DataError(f"{clip.path}: forward kinematics gave NaN/Inf joints; check the body model and the file")
    return out
