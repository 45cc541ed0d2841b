"""Simple baselines a generative model must beat, written as output directories of the same clips and frames.

``make_baseline_dir(run_dir, name, out_dir)`` reads a sampler output directory (its npz files and
``inf_cfg.yaml``: dataset file, split, task, driven persons), builds one "sample" per clip from the clip's ground
truth and writes it in the same output format, with the same ground-truth row, frame counts and context, so
``evaluate_directory`` scores it on exactly the frames the model was scored on:

* ``hold_last_pose``: every generated person freezes at the last context frame (body and root);
* ``mirror_driven``: every generated person mirrors the first driven person (left/right swapped body, mirrored
  canonical root and canonical motion, integrated from its own last context frame);
* ``repeat_context``: every person replays its context frames in a loop (bodies and canonical motion, integrated
  from the last context frame, so the motion continues where the context ends);
* ``random_training_clip``: the same frames of a training clip drawn at random (seeded), as they are.

The first two suit the conditioning tasks (the driven persons stay their ground truth), the last two joint
generation (``BASELINES_FOR_TASK``).
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from magnet.body.kinematic_tree import MIRROR_INDEX
from magnet.data.hdf5 import open_dataset
from magnet.errors import ConfigError, DataError
from magnet.evaluation.io import list_output_files, load_output_npz, load_yaml, write_output_npz
from magnet.geometry import matrix_to_quat, rot6d_to_matrix, tf9_compose, tf9_identity, tf9_to_tf7
from magnet.representation import PackedLayout, select_persons

__all__ = ["BASELINES", "BASELINES_FOR_TASK", "baseline_motion", "make_baseline_dir", "mirror_6d", "mirror_tf9"]

BASELINES = ("hold_last_pose", "mirror_driven", "repeat_context", "random_training_clip")
BASELINES_FOR_TASK = {
    "joint": ("repeat_context", "random_training_clip"),
    "partner_prediction": ("hold_last_pose", "mirror_driven"),
    "motion_control_live": ("hold_last_pose", "mirror_driven"),
    "partner_inpainting": ("hold_last_pose", "mirror_driven"),
    "inbetweening": ("hold_last_pose",),
}


def mirror_6d(r6: Tensor) -> Tensor:
    """A 6D rotation ``[..., 6]`` mirrored across the body's sagittal plane (x -> -x): ``M R M``, M = diag(-1,1,1)."""
    sign = r6.new_tensor([1.0, -1.0, -1.0, -1.0, 1.0, 1.0])
    return r6 * sign


def mirror_tf9(x: Tensor) -> Tensor:
    """A 9D transform ``[..., 9]`` mirrored across x = 0 (rotation as :func:`mirror_6d`, translation x negated)."""
    out = x.clone()
    out[..., :6] = mirror_6d(x[..., :6])
    out[..., 6] = -x[..., 6]
    return out


_BODY_MIRROR = [MIRROR_INDEX[j + 1] - 1 for j in range(21)]


def _mirror_body(body6: Tensor) -> Tensor:
    """Body 6D rotations ``[..., 126]`` of a mirrored body: left and right joints swapped, each rotation mirrored."""
    b = body6.reshape(*body6.shape[:-1], 21, 6)[..., _BODY_MIRROR, :]
    return mirror_6d(b).reshape(body6.shape)


def _pad(x: Tensor, frames: int, lay: PackedLayout) -> Tensor:
    if x.shape[0] >= frames:
        return x[:frames].clone()
    pad = x[-1:].expand(frames - x.shape[0], -1, -1).clone()
    pad[..., lay.delta] = tf9_identity(pad.shape[:-1], dtype=x.dtype)
    return torch.cat([x, pad], dim=0)


def _integrate(x: Tensor, p: int, ctx: int, lay: PackedLayout) -> None:
    """World canonical frames and roots of person ``p`` from frame ``ctx`` on, from its deltas and canonical root."""
    C = x[ctx - 1, p, lay.world_canon]
    for t in range(ctx, x.shape[0]):
        C = tf9_compose(C, x[t, p, lay.delta])
        x[t, p, lay.world_canon] = C
        x[t, p, lay.world_root] = tf9_compose(C, x[t, p, lay.canon_root])


def baseline_motion(name: str, gt: Tensor, frames: int, context: int, driven: list[int] | None = None,
                    other: Tensor | None = None) -> Tensor:
    """The baseline's raw packed motion ``[frames, P, D]`` from the clip's ground truth ``gt[T, P, D]`` (raw
    packed, float64 advised); ``context`` frames are kept; ``other``: the random training clip ``[T', P, D]``."""
    lay = PackedLayout(gt.shape[1])
    P = gt.shape[1]
    x = _pad(gt, frames, lay)
    ctx = max(int(context), 1)
    if ctx >= frames:
        return x
    driven = list(driven or [])
    generated = [p for p in range(P) if p not in driven] if driven else list(range(P))
    if name == "hold_last_pose":
        for p in generated:
            x[ctx:, p] = x[ctx - 1, p]
            x[ctx:, p, lay.delta] = tf9_identity((frames - ctx,), dtype=x.dtype)
    elif name == "mirror_driven":
        if not driven:
            raise ConfigError("the mirror_driven baseline needs a driven person (a conditioning task)")
        d = driven[0]
        for p in generated:
            x[ctx:, p, lay.body_rot] = _mirror_body(x[ctx:, d, lay.body_rot])
            x[ctx:, p, lay.canon_root] = mirror_tf9(x[ctx:, d, lay.canon_root])
            x[ctx:, p, lay.delta] = mirror_tf9(x[ctx:, d, lay.delta])
            _integrate(x, p, ctx, lay)
    elif name == "repeat_context":
        src = torch.arange(frames - ctx) % ctx
        for p in generated:
            for field in (lay.body_rot, lay.canon_root, lay.delta):
                x[ctx:, p, field] = x[src, p, field]
            _integrate(x, p, ctx, lay)
    elif name == "random_training_clip":
        if other is None:
            raise ConfigError("the random_training_clip baseline needs a training clip")
        src = torch.arange(ctx, frames) % other.shape[0]
        x[ctx:] = other[src].to(x.dtype)
    else:
        raise ConfigError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    return x


def _training_clip(hdf5: Path, persons: int, seed: int, name: str) -> Tensor:
    with open_dataset(hdf5) as f:
        if not f.has_split("train"):
            raise DataError(f"{hdf5} has no train split for the random_training_clip baseline")
        names = [n for n in f.sequences("train") if f.shape("train", n)[1] >= persons]
        if not names:
            raise DataError(f"{hdf5}: no training clip has {persons} persons")
        rng = np.random.default_rng((int(seed) * 7919 + zlib.crc32(name.encode())) % (2**32))
        pick = names[int(rng.integers(len(names)))]
        x = torch.as_tensor(f.read("train", pick), dtype=torch.float64)
    return select_persons(x, list(range(persons))) if x.shape[1] != persons else x


def make_baseline_dir(run_dir: str | os.PathLike, name: str, out_dir: str | os.PathLike, seed: int = 0,
                      dataset: str | os.PathLike | None = None) -> Path:
    """Write baseline ``name`` for every clip of the sampler output ``run_dir`` into ``out_dir`` (see the module
    docstring); ``dataset``: the HDF5 file (default: ``dataset_path`` of ``inf_cfg.yaml``). Returns ``out_dir``."""
    if name not in BASELINES:
        raise ConfigError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    cfg_path = run_dir / "inf_cfg.yaml"
    if not cfg_path.is_file():
        raise ConfigError(f"{cfg_path} is missing; baselines need the sampler's inf_cfg.yaml (dataset and split)")
    cfg = load_yaml(cfg_path.read_text()) or {}
    sub = cfg.get("sampling_cfg") or {}
    hdf5 = Path(dataset or cfg.get("dataset_path") or "")
    split = cfg.get("dataset_split") or "test"
    if not hdf5.is_file():
        raise DataError(f"dataset file {hdf5} (from {cfg_path}) not found; pass dataset=<the HDF5 the run sampled>")
    task = str(cfg.get("sampling_task") or sub.get("sampling_task") or "joint")
    driven = [int(i) for i in sub.get("driven", [0])] if task in BASELINES_FOR_TASK and task != "joint" else []
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in list_output_files(run_dir):
        clip = load_output_npz(path)
        P, T = clip.num_persons, clip.num_frames
        with open_dataset(hdf5) as f:
            if not f.has_split(split) or path.stem not in f.sequences(split):
                raise DataError(f"clip {path.stem} of {run_dir} is not in split {split!r} of {hdf5}")
            gt = torch.as_tensor(f.read(split, path.stem), dtype=torch.float64)
        if gt.shape[1] != P:
            gt = select_persons(gt, list(range(P)))
        other = _training_clip(hdf5, P, seed, path.stem) if name == "random_training_clip" else None
        x = baseline_motion(name, gt, T, clip.context_timesteps, driven, other)
        lay = PackedLayout(P)
        body = matrix_to_quat(rot6d_to_matrix(x[..., lay.body_rot].reshape(T, P, 21, 6))).float().numpy()
        root = tf9_to_tf7(x[..., lay.world_root]).float().numpy()
        write_output_npz(
            out_dir / path.name,
            betas=clip.betas[:2], T_world_root=np.stack([clip.T_world_root[0], root]),
            body_joint_rotations=np.stack([clip.body_joint_rotations[0], body]),
            context_timesteps=clip.context_timesteps, timesteps=clip.timesteps, gt_timesteps=clip.gt_timesteps,
            mode=clip.mode, joint_phase_start_timesteps=clip.joint_phase_start_timesteps)
    (out_dir / "inf_cfg.yaml").write_text(cfg_path.read_text())
    return out_dir


def main(argv: list[str] | None = None) -> int:
    """``python -m magnet.evaluation.baselines RUN_DIR --name NAME --out DIR [--seed S] [--dataset HDF5]``."""
    import sys

    from magnet.cli import OneLineArgumentParser
    from magnet.errors import MagnetError

    ap = OneLineArgumentParser(prog="python -m magnet.evaluation.baselines",
                               description="Write a baseline for every clip of a sampler output directory.")
    ap.add_argument("run_dir")
    ap.add_argument("--name", required=True, choices=BASELINES)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dataset", default=None, help="the HDF5 file (default: dataset_path of inf_cfg.yaml)")
    args = ap.parse_args(argv)
    try:
        out = make_baseline_dir(args.run_dir, args.name, args.out, seed=args.seed, dataset=args.dataset)
    except MagnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}; evaluate with: python evaluate.py run_dir={out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
