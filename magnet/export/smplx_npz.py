"""Generated motion as SMPL-X parameters in an AMASS-style npz (one person of one row per file).

Keys written (float64 arrays unless said otherwise; T = the row's valid frames):

========================== ================ ==========================================================
key                        shape            content
========================== ================ ==========================================================
``poses``                  [T, 165]         axis-angle, SMPL-X layout: 0:3 root (global_orient), 3:66 the 21
                                            body joints, 66:69 jaw, 69:75 eyes (zero), 75:120 left hand,
                                            120:165 right hand (zero when the output has no hands)
``trans``                  [T, 3]           SMPL-X ``transl``: world pelvis minus the rest pelvis J0(betas)
``betas``                  [10]             SMPL-X shape (the row's betas; their mean if they vary)
``num_betas``              int              10
``gender``                 str              ``neutral``
``surface_model_type``     str              ``smplx``
``mocap_framerate``        float            frames per second (also ``mocap_frame_rate``, AMASS's SMPL-X name)
``mocap_time_length``      float            T / fps seconds
``root_orient``,           [T, 3], [T, 63], the same rotations split as in AMASS's SMPL-X release
``pose_body``, ``pose_hand``  [T, 90],
``pose_jaw``, ``pose_eye``    [T, 3], [T, 6]
``up_axis``                str              ``y`` (magnet's world, default) or ``z`` (AMASS's)
``body_model``             str              the body model ``trans`` was computed for
========================== ================ ==========================================================

SMPL-X's ``global_orient`` rotates the body about the pelvis joint J0, so the world pelvis is ``trans + J0(betas)``
and ``trans`` depends on the body model: with a real SMPL-X file J0 is about 0.3 m above the model origin, with the
built-in default skeleton it is the origin (then ``trans`` is the pelvis itself). Export with the model the motion
will be played with (``--smplx``). ``up_axis="z"`` rotates the world so that z is up (AMASS's convention: the
inverse of the rotation ``magnet.data.preprocess`` applies to z-up data); ``magnet.data.raw.load_raw(path,
"amass")`` reads such a file back.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from magnet.body import BodyModel
from magnet.errors import ConfigError, DataError
from magnet.evaluation.io import ClipOutput
from magnet.geometry import axis_angle_to_matrix, matrix_to_axis_angle, quat_to_matrix
from magnet.utils import atomic_path

__all__ = [
    "UP_AXES",
    "Y_UP_TO_Z_UP",
    "SmplxParams",
    "read_smplx_npz",
    "save_npz",
    "smplx_arrays",
    "smplx_params",
    "write_smplx_npz",
]

UP_AXES = ("y", "z")
# magnet.data.preprocess.Z_UP_TO_Y_UP transposed: (x, y, z) y-up -> (x, -z, y) z-up
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
NUM_POSE = 165


@dataclass
class SmplxParams:
    """SMPL-X parameters of one person in magnet's Y-up world (float64 numpy).

    ``betas [10]``, ``root_rot [T, 3, 3]`` (global orientation), ``body_rot [T, 21, 3, 3]`` (local),
    ``hand_rot [T, 30, 3, 3]`` or None, ``pelvis [T, 3]`` (world pelvis), ``fps``.
    """

    betas: np.ndarray
    root_rot: np.ndarray
    body_rot: np.ndarray
    hand_rot: np.ndarray | None
    pelvis: np.ndarray
    fps: float

    @property
    def num_frames(self) -> int:
        return int(self.root_rot.shape[0])

    def joints(self, body_model: BodyModel) -> np.ndarray:
        """World joints 0..21 ``[T, 22, 3]`` (forward kinematics, float64)."""
        f64 = torch.float64
        pos, _ = body_model.forward_kinematics(torch.as_tensor(self.body_rot, dtype=f64),
                                               torch.as_tensor(self.root_rot, dtype=f64),
                                               torch.as_tensor(self.pelvis, dtype=f64),
                                               torch.as_tensor(self.betas, dtype=f64))
        return pos.numpy()


def smplx_params(clip: ClipOutput, row: int, person: int, fps: float = 30.0) -> SmplxParams:
    """The SMPL-X parameters of ``person`` in ``row`` (0 = ground truth) of ``clip``, over the row's valid frames.

    Betas that vary over the frames are averaged (a warning gives the largest deviation).
    """
    from magnet.motion_files import row_frames

    if not 0 <= row <= clip.num_samples:
        raise ConfigError(f"sample {row} is out of range: {clip.path} holds samples 1..{clip.num_samples} "
                          "(0 = the ground truth)")
    if not 0 <= person < clip.num_persons:
        raise ConfigError(f"person {person} is out of range: {clip.path} holds persons 0..{clip.num_persons - 1}")
    end = row_frames(clip, row)
    f64 = torch.float64
    betas_t = clip.betas[row, :end, person].astype(np.float64)  # [T, 10]
    betas = betas_t.mean(axis=0)
    spread = float(np.abs(betas_t - betas).max())
    if spread > 1e-5:
        warnings.warn(f"{clip.path} row {row} person {person}: betas vary over the frames (up to {spread:.3g}); "
                      "exported their mean", stacklevel=2)
    root = torch.as_tensor(clip.T_world_root[row, :end, person], dtype=f64)
    body = quat_to_matrix(torch.as_tensor(clip.body_joint_rotations[row, :end, person], dtype=f64))
    hands = clip.hand_joint_rotations[row, :end, person]
    hand_rot = None
    if np.abs(hands).max() > 0:  # all zeros = "no hands" (the reference's convention)
        norms = np.linalg.norm(hands, axis=-1)
        if (norms < 1e-6).any():
            raise DataError(f"{clip.path}: hand_joint_rotations mixes zero and non-zero quaternions in row {row}, "
                            f"person {person}; regenerate the file")
        hand_rot = quat_to_matrix(torch.as_tensor(hands, dtype=f64)).numpy()
    return SmplxParams(betas=betas, root_rot=quat_to_matrix(root[:, :4]).numpy(), body_rot=body.numpy(),
                       hand_rot=hand_rot, pelvis=root[:, 4:7].numpy(), fps=float(fps))


def _axis_angle(R: np.ndarray) -> np.ndarray:
    return matrix_to_axis_angle(torch.as_tensor(R, dtype=torch.float64)).numpy()


def smplx_arrays(params: SmplxParams, body_model: BodyModel, up_axis: str = "y") -> dict[str, np.ndarray]:
    """The npz content (see the module docstring) of ``params`` for ``body_model``."""
    if up_axis not in UP_AXES:
        raise ConfigError(f"up_axis must be one of {', '.join(UP_AXES)}, got {up_axis!r}")
    T = params.num_frames
    root_rot, pelvis = params.root_rot, params.pelvis
    if up_axis == "z":
        root_rot = Y_UP_TO_Z_UP @ root_rot
        pelvis = pelvis @ Y_UP_TO_Z_UP.T
    rest_pelvis = body_model.rest_joints(torch.as_tensor(params.betas, dtype=torch.float64))[0].numpy()
    poses = np.zeros((T, NUM_POSE))
    poses[:, 0:3] = _axis_angle(root_rot)
    poses[:, 3:66] = _axis_angle(params.body_rot).reshape(T, 63)
    if params.hand_rot is not None:
        poses[:, 75:165] = _axis_angle(params.hand_rot).reshape(T, 90)
    return {
        "poses": poses,
        "trans": pelvis - rest_pelvis,
        "betas": params.betas.astype(np.float64),
        "num_betas": np.asarray(params.betas.shape[0], dtype=np.int64),
        "gender": np.asarray("neutral"),
        "surface_model_type": np.asarray("smplx"),
        "mocap_framerate": np.asarray(params.fps, dtype=np.float64),
        "mocap_frame_rate": np.asarray(params.fps, dtype=np.float64),
        "mocap_time_length": np.asarray(T / params.fps, dtype=np.float64),
        "root_orient": poses[:, 0:3].copy(),
        "pose_body": poses[:, 3:66].copy(),
        "pose_jaw": poses[:, 66:69].copy(),
        "pose_eye": poses[:, 69:75].copy(),
        "pose_hand": poses[:, 75:165].copy(),
        "up_axis": np.asarray(up_axis),
        "body_model": np.asarray(body_model.source),
    }


def write_smplx_npz(path: str | os.PathLike, params: SmplxParams, body_model: BodyModel, up_axis: str = "y") -> Path:
    """Write ``params`` as an AMASS-style SMPL-X npz (atomically); returns the path."""
    return save_npz(path, smplx_arrays(params, body_model, up_axis))


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """``np.savez`` to ``path`` atomically (temporary name, renamed when complete); returns the path."""
    path = Path(path)
    # a file object: np.savez would append .npz to the temporary name
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return path


def read_smplx_npz(path: str | os.PathLike, body_model: BodyModel) -> SmplxParams:
    """Read an SMPL-X parameter npz (ours, or AMASS-style with ``poses [T,165]``, ``trans``, ``betas``, a frame rate)
    back into magnet's Y-up world; the pelvis is ``trans + J0(betas)`` of ``body_model``. The up axis is the
    file's ``up_axis`` key (``z`` when absent: AMASS's convention).

    Raises:
        DataError: missing file or key, wrong shapes.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"SMPL-X parameter file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable npz file ({type(exc).__name__})") from exc
    with data:
        for key in ("poses", "trans", "betas"):
            if key not in data.files:
                raise DataError(f"{path}: key '{key}' is missing; not an SMPL-X parameter file")
        poses = np.asarray(data["poses"], dtype=np.float64)
        trans = np.asarray(data["trans"], dtype=np.float64)
        betas_all = np.asarray(data["betas"], dtype=np.float64).reshape(-1)
        up_axis = str(data["up_axis"]) if "up_axis" in data.files else "z"
        fps = next((float(data[k]) for k in ("mocap_framerate", "mocap_frame_rate", "fps") if k in data.files), 30.0)
    if poses.ndim != 2 or poses.shape[1] != NUM_POSE or trans.shape != (poses.shape[0], 3):
        raise DataError(f"{path}: poses {poses.shape} / trans {trans.shape}, expected [T, 165] / [T, 3]")
    if up_axis not in UP_AXES:
        raise DataError(f"{path}: key 'up_axis' is {up_axis!r}, expected y or z")
    betas = np.zeros(10)
    betas[: min(10, betas_all.shape[0])] = betas_all[:10]
    T = poses.shape[0]
    f64 = torch.float64

    def mats(aa: np.ndarray) -> np.ndarray:
        return axis_angle_to_matrix(torch.as_tensor(aa, dtype=f64)).numpy()

    root_rot = mats(poses[:, 0:3])
    rest_pelvis = body_model.rest_joints(torch.as_tensor(betas, dtype=f64))[0].numpy()
    pelvis = trans + rest_pelvis
    if up_axis == "z":
        root_rot = Y_UP_TO_Z_UP.T @ root_rot
        pelvis = pelvis @ Y_UP_TO_Z_UP
    hands = poses[:, 75:165].reshape(T, 30, 3)
    return SmplxParams(betas=betas, root_rot=root_rot, body_rot=mats(poses[:, 3:66].reshape(T, 21, 3)),
                       hand_rot=mats(hands) if np.abs(hands).max() > 0 else None, pelvis=pelvis, fps=fps)
