"""Evaluation features (spec 5.1): world positions of the 21 body joints by forward kinematics, and velocities.

For one output clip, row 0 is the GT and rows 1..S the samples. The evaluated frames are ``[ctx, end)`` with
``ctx = context_timesteps`` and, by frame mode:

* default: samples ``1..sample_num`` (all when None), generated and GT frames ``[ctx, gt_end)``;
* ``whole_seq``: generated frames ``[ctx, T)``, GT frames ``[ctx, gt_end)``;
* ``seq_len=L``: generated frames ``[ctx, L)``, GT frames ``[ctx, min(gt_end, L))``;

with ``gt_end = gt_timesteps`` (or ``timesteps`` for VQ-VAE outputs). The reference ignores ``sample_num`` in the
last two modes (``reference=True`` keeps that); otherwise it applies everywhere.

Features (float64, metres, Y-up world): ``g = [..., T, P, 63]`` positions of SMPL-X joints 1..21 (pelvis
excluded), ``k = diff(g) * fps`` ``[..., T-1, P, 63]`` in m/s, and the pelvis (root) positions ``[..., T, P, 3]``
for the capsule penetration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from magnet.body import BodyModel
from magnet.errors import ConfigError, DataError
from magnet.evaluation.io import ClipOutput
from magnet.geometry import quat_to_matrix

__all__ = ["ClipFeatures", "FrameSelection", "clip_features", "forward_joints", "select_frames"]


@dataclass(frozen=True)
class FrameSelection:
    """Which rows and frames of a clip are evaluated: samples ``rows`` (indices into axis 0, GT excluded),
    generated frames ``[gen_start, gen_end)`` and GT frames ``[gt_start, gt_end)``."""

    rows: tuple[int, ...]
    gen_start: int
    gen_end: int
    gt_start: int
    gt_end: int


def select_frames(clip: ClipOutput, *, whole_seq: bool = False, seq_len: int | None = None,
                  sample_num: int | None = None, reference: bool = False) -> FrameSelection:
    """The :class:`FrameSelection` of ``clip`` for the frame mode (see the module docstring).

    Raises:
        ConfigError: both ``whole_seq`` and ``seq_len``; ``sample_num`` < 1, or above the clip's sample count
            (outside reference mode, which silently takes what is there).
        DataError: fewer than 2 frames to evaluate.
    """
    if whole_seq and seq_len is not None:
        raise ConfigError("whole_seq=true and seq_len are exclusive; pass one of them")
    if sample_num is not None and sample_num < 1:
        raise ConfigError(f"sample_num must be >= 1, got {sample_num}")
    num = clip.num_samples
    if sample_num is not None and sample_num > num and not reference:
        raise ConfigError(f"sample_num={sample_num} but {clip.path} holds only {num} samples; "
                          f"pass sample_num<={num}")
    ctx, gt_end, total = clip.context_timesteps, clip.gt_end, clip.num_frames
    use_all = reference and (whole_seq or seq_len is not None)
    count = num if sample_num is None or use_all else min(sample_num, num)
    rows = tuple(range(1, count + 1))
    if whole_seq:
        gen_end = total
    elif seq_len is not None:
        if seq_len < 1:
            raise ConfigError(f"seq_len must be >= 1, got {seq_len}")
        gen_end = min(seq_len, total)
        gt_end = min(gt_end, seq_len)
    else:
        gen_end = gt_end
    for what, end in (("generated", gen_end), ("GT", gt_end)):
        if end - ctx < 2:
            raise DataError(f"{clip.path}: only {max(end - ctx, 0)} {what} frame(s) between context_timesteps={ctx} "
                            f"and frame {end}; at least 2 are needed (check seq_len or the file)")
    return FrameSelection(rows=rows, gen_start=ctx, gen_end=gen_end, gt_start=ctx, gt_end=gt_end)


def forward_joints(body_model: BodyModel, betas: np.ndarray | Tensor, T_world_root: np.ndarray | Tensor,
                   body_quats: np.ndarray | Tensor) -> Tensor:
    """World positions of SMPL-X joints 0..21 in float64: ``betas [..., 10]``, ``T_world_root [..., 7]`` (wxyz +
    xyz, the pelvis pose), ``body_quats [..., 21, 4]`` (local, any non-zero norm) -> ``[..., 22, 3]``."""
    def f64(x):
        return torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).to(torch.float64)

    betas, root, quats = f64(betas), f64(T_world_root), f64(body_quats)
    positions, _ = body_model.forward_kinematics(quat_to_matrix(quats), quat_to_matrix(root[..., :4]),
                                                 root[..., 4:7], betas)
    return positions


@dataclass
class ClipFeatures:
    """Features of one clip (float64 CPU tensors).

    ``gen_joints [S, Tp, P, 22, 3]`` and ``gt_joints [1, Tg, P, 22, 3]`` hold SMPL-X joints 0..21 (0 = pelvis);
    ``last_context [1, 1, P, 22, 3]`` is the GT at frame ctx-1 (None when ctx = 0), used for the static-pose
    baseline. ``g``/``k``/``root`` are derived on demand.
    """

    name: str
    gen_joints: Tensor
    gt_joints: Tensor
    last_context: Tensor | None
    selection: FrameSelection

    @property
    def num_samples(self) -> int:
        return int(self.gen_joints.shape[0])

    @property
    def num_persons(self) -> int:
        return int(self.gen_joints.shape[2])

    @staticmethod
    def g_of(joints: Tensor) -> Tensor:
        """``[..., T, P, 22, 3] -> [..., T, P, 63]`` positions of joints 1..21."""
        return joints[..., 1:, :].reshape(*joints.shape[:-2], 63)

    @staticmethod
    def k_of(joints: Tensor, fps: float) -> Tensor:
        """``[..., T, P, 22, 3] -> [..., T-1, P, 63]`` velocities (m/s) of joints 1..21."""
        return torch.diff(ClipFeatures.g_of(joints), dim=-3) * fps


def clip_features(clip: ClipOutput, body_model: BodyModel, selection: FrameSelection) -> ClipFeatures:
    """Run forward kinematics for the selected rows and frames of ``clip`` (see :class:`ClipFeatures`)."""
    s = selection
    rows = list(s.rows)

    def joints(row_idx, start: int, end: int) -> Tensor:
        return forward_joints(body_model, clip.betas[row_idx, start:end], clip.T_world_root[row_idx, start:end],
                              clip.body_joint_rotations[row_idx, start:end])

    gen = joints(rows, s.gen_start, s.gen_end)
    gt = joints([0], s.gt_start, s.gt_end)
    last = joints([0], s.gt_start - 1, s.gt_start) if s.gt_start > 0 else None
    return ClipFeatures(name=clip.name, gen_joints=gen, gt_joints=gt, last_context=last, selection=s)
