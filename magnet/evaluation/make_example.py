"""Make an evaluation directory from held-out clips: GT plus perturbed copies of it as "samples".

Until a trained sampler exists this gives :mod:`magnet.evaluation` (and ``evaluate.py``) real input in the output
format of spec 7.1. Row 0 is the clip's GT read from a preprocessed HDF5 (betas, ``T_world_root`` 9D -> 7D, body
6D -> quaternions, hands zero as in the reference); rows 1..S copy it and, from the first frame after the
context on, rotate every body joint and the root by a per-(sample, person, joint) random rotation of angle
~ ``noise`` radians (faded in over 8 frames so the motion stays continuous at the context boundary) and move the
root horizontally at ``root_drift`` m/s in a random direction. ``noise = root_drift = 0`` gives samples equal to
the GT. For the conditioning tasks (partner_prediction, ...) person 0 is left untouched, as a sampler would
feed it from GT. The same seed gives the same files; the perturbation is drawn at unit scale and multiplied by
``noise``, so larger noise gives larger errors.

Command line::

    python -m magnet.evaluation.make_example --data data/synthetic_dataset.hdf5 --out outputs/example \
        [--split test] [--num-samples 3] [--noise 0.05] [--root-drift 0.05] [--context 32] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

from magnet.data.hdf5 import open_dataset
from magnet.errors import DataError, MagnetError
from magnet.evaluation.io import check_task, write_inference_config, write_output_npz
from magnet.evaluation.run import CONDITIONED_TASKS
from magnet.geometry import axis_angle_to_matrix, matrix_to_quat, tf7_from_rt
from magnet.representation import unpack

__all__ = ["FADE_FRAMES", "main", "make_perturbed_outputs", "perturb_clip"]

FADE_FRAMES = 8


def _resolve_hdf5(data: str | os.PathLike) -> Path:
    """``data`` itself, or the single ``*_dataset.hdf5`` inside a dataset directory or one of its subdirectories
    (``python -m magnet.data.synthetic --out DIR`` writes ``DIR/synthetic/synthetic_dataset.hdf5``)."""
    path = Path(data)
    if path.is_dir():
        found = sorted(path.glob("*_dataset.hdf5")) or sorted(path.glob("*/*_dataset.hdf5"))
        if len(found) != 1:
            names = ", ".join(str(f) for f in found[:3])
            raise DataError(f"{path} holds {len(found)} *_dataset.hdf5 files{' (' + names + ')' if names else ''}; "
                            "pass --data <file.hdf5>")
        return found[0]
    if not path.is_file():
        raise DataError(f"dataset file not found: {path}; build one (python -m magnet.data.synthetic --out data) "
                        "and pass --data <file.hdf5 or its directory>")
    return path


def perturb_clip(x: np.ndarray, num_samples: int, noise: float, root_drift: float, context: int,
                 rng: np.random.Generator, persons: list[int] | None = None, fps: float = 30.0
                 ) -> dict[str, np.ndarray]:
    """GT + perturbed samples of one packed clip ``x [T, P, D(P)]`` (raw values).

    Returns float32 arrays ``betas [1+S, T, P, 10]``, ``T_world_root [1+S, T, P, 7]``,
    ``body_joint_rotations [1+S, T, P, 21, 4]``; ``persons`` are the perturbed persons (None = all).
    """
    u = unpack(torch.as_tensor(np.asarray(x)).to(torch.float64))
    T, P = x.shape[:2]
    S = num_samples
    root_R, root_t = u["world_root"]  # [T, P, 3, 3], [T, P, 3]
    body_R = u["body_rot"]  # [T, P, 21, 3, 3]
    # unit-scale draws, scaled by noise / root_drift (same seed -> same directions for every noise level)
    axis = torch.from_numpy(rng.standard_normal((S, 1, P, 22, 3)))
    heading = torch.from_numpy(rng.uniform(0.0, 2.0 * np.pi, (S, 1, P)))
    steps = torch.arange(T, dtype=torch.float64) - context
    fade = ((steps + 1) / FADE_FRAMES).clamp(0.0, 1.0)[None, :, None, None, None]  # [1, T, 1, 1, 1]
    mask = torch.ones(P, dtype=torch.float64) if persons is None else torch.zeros(P, dtype=torch.float64)
    if persons is not None:
        mask[persons] = 1.0
    offset = axis_angle_to_matrix(noise * fade * axis * mask[None, None, :, None, None])  # [S, T, P, 22, 3, 3]
    sample_root_R = offset[..., 0, :, :] @ root_R
    sample_body_R = offset[..., 1:, :, :] @ body_R
    dist = root_drift * steps.clamp_min(0.0)[None, :, None] / fps * mask[None, None, :]  # [S, T, P]
    dx, dz = dist * torch.cos(heading), dist * torch.sin(heading)  # [S, T, P]
    shift = torch.stack([dx, torch.zeros_like(dx), dz], dim=-1)
    sample_root_t = root_t + shift
    all_root = torch.cat([tf7_from_rt(root_R, root_t)[None], tf7_from_rt(sample_root_R, sample_root_t)], dim=0)
    all_body = torch.cat([matrix_to_quat(body_R)[None], matrix_to_quat(sample_body_R)], dim=0)
    betas = u["betas"][None].expand(S + 1, T, P, 10)
    return {
        "betas": betas.to(torch.float32).numpy(),
        "T_world_root": all_root.to(torch.float32).numpy(),
        "body_joint_rotations": all_body.to(torch.float32).numpy(),
    }


def make_perturbed_outputs(
    hdf5: str | os.PathLike,
    split: str,
    out_dir: str | os.PathLike,
    num_samples: int = 3,
    noise: float = 0.05,
    seed: int = 0,
    *,
    root_drift: float = 0.0,
    context: int = 32,
    max_clips: int | None = None,
    num_frames: int | None = None,
    task: str = "joint",
    fps: int = 30,
) -> list[Path]:
    """Write ``<clip>.npz`` for the clips of ``split`` in ``hdf5`` plus ``inf_cfg.yaml`` into ``out_dir``.

    Args:
        hdf5: the dataset file (or a directory holding exactly one ``*_dataset.hdf5``).
        split: split to read (``test`` for held-out clips).
        num_samples: S perturbed copies per clip.
        noise: rotation perturbation in radians (per-axis standard deviation); 0 = no rotation change.
        seed: seeds the perturbation (clip i uses ``[seed, i]``).
        root_drift: horizontal root drift speed in m/s after the context.
        context: ``context_timesteps`` written to the files (frames before it stay GT).
        max_clips / num_frames: keep the first clips / frames only.
        task: written as ``mode`` and ``sampling_task`` (one of :data:`~magnet.evaluation.io.SAMPLING_TASKS`); for
            conditioning tasks person 0 stays GT.

    Returns the npz paths. Raises :class:`DataError` for an empty split or clips too short for the context,
    :class:`ConfigError` for an unknown task (nothing is written).
    """
    check_task(task, "make_example --task")
    if num_samples < 1:
        raise DataError(f"num_samples must be >= 1, got {num_samples}")
    if noise < 0 or root_drift < 0 or context < 0:
        raise DataError(f"noise ({noise}), root_drift ({root_drift}) and context ({context}) must be >= 0")
    path = _resolve_hdf5(hdf5)
    out_dir = Path(out_dir)
    written: list[Path] = []
    with open_dataset(path) as f:
        names = f.sequences(split)
        if not names:
            raise DataError(f"{path}: split {split!r} has no sequences; choose another split with --split")
        names = names[:max_clips] if max_clips is not None else names
        clips = []
        for name in names:  # read and check every clip before writing anything (no partial output)
            x = f.read(split, name)
            if num_frames is not None:
                x = x[:num_frames]
            if x.shape[0] < context + 2:
                raise DataError(f"{path} {split}/{name}: {x.shape[0]} frames, need at least context + 2 = "
                                f"{context + 2}; lower --context")
            clips.append((name, x))
        for i, (name, x) in enumerate(clips):
            T, P = x.shape[:2]
            persons = list(range(1, P)) if task in CONDITIONED_TASKS and P > 1 else None
            rng = np.random.default_rng([int(seed), i])
            arrays = perturb_clip(x, num_samples, noise, root_drift, context, rng, persons, fps)
            written.append(write_output_npz(
                out_dir / f"{name}.npz", **arrays, context_timesteps=context, timesteps=T, gt_timesteps=T,
                mode=task, joint_phase_start_timesteps=-1,
            ))
    write_inference_config(out_dir, {
        "sampling_task": task,
        "smpl_path": None,
        "context_seq_len": context,
        "sampling_num": num_samples,
        "fps": fps,
        "example": {
            "generator": "magnet.evaluation.make_example (perturbed GT, not a model)",
            "data": str(path),
            "split": split,
            "noise_rad": noise,
            "root_drift_m_per_s": root_drift,
            "seed": seed,
        },
    })
    return written


def _parser() -> argparse.ArgumentParser:
    from magnet.cli import OneLineArgumentParser

    p = OneLineArgumentParser(prog="python -m magnet.evaluation.make_example",
                              description="Write an evaluation directory of GT + perturbed-GT samples.")
    p.add_argument("--data", required=True, help="preprocessed dataset HDF5 (or its directory)")
    p.add_argument("--out", required=True, help="output directory (npz files + inf_cfg.yaml)")
    p.add_argument("--split", default="test")
    p.add_argument("--num-samples", type=int, default=3)
    p.add_argument("--noise", type=float, default=0.05, help="rotation noise in radians")
    p.add_argument("--root-drift", type=float, default=0.05, help="root drift in m/s")
    p.add_argument("--context", type=int, default=32, help="context frames (kept GT)")
    p.add_argument("--max-clips", type=int, default=None)
    p.add_argument("--frames", type=int, default=None, help="keep only the first N frames of each clip")
    p.add_argument("--task", default="joint", help="sampling task written to inf_cfg.yaml (joint, "
                   "partner_prediction, ...; see magnet.evaluation.io.SAMPLING_TASKS)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns 0, or 2 after printing ``error: <message>`` for a user error."""
    args = _parser().parse_args(argv)
    try:
        files = make_perturbed_outputs(args.data, args.split, args.out, args.num_samples, args.noise, args.seed,
                                       root_drift=args.root_drift, context=args.context, max_clips=args.max_clips,
                                       num_frames=args.frames, task=args.task)
    except MagnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(files)} clips and inf_cfg.yaml to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
