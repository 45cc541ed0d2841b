"""Built-in default skeleton: SMPL-X topology with adult proportions of our own (no SMPL-X model data).

Used when no SMPL-X model file is available. All numbers below were written for this project by hand.

Rest pose (model coordinates, metres): Y-up, the person faces +z, the body's left side is at +x (as in SMPL-X,
the pelvis x axis points to the body's left), T-pose with the arms along +-x and the palms facing down.
The pelvis (joint 0) sits at the model origin ``REST_PELVIS = (0, 0, 0)``. Standing in the rest pose with
``betas = 0`` the soles are ``STANDING_PELVIS_HEIGHT = 0.93`` m below the pelvis, so the ankles are about 6.5 cm
and the foot (toe-base) joints about 2.5 cm above the floor. The body is about 1.75 m tall.

Shape model (linear, like SMPL-X's ``J_regressor @ (v_template + shapedirs @ betas)``): each bone offset ``o_j``
(joint minus its parent) is changed by

* ``beta0``: overall size, ``+6 %`` of every offset per unit (so all joints scale about the pelvis);
* ``beta1``: width, ``+5 %`` of the lateral (x) part of the hip, collar and shoulder offsets per unit;
* ``beta2``: leg length, ``+4 %`` of the thigh and shin offsets (hip->knee, knee->ankle) per unit;
* ``beta3``: arm length, ``+4 %`` of the upper-arm and forearm offsets (shoulder->elbow, elbow->wrist) per unit;
* ``beta4 .. beta9``: no effect.

The joint positions are the cumulative sums of the offsets along the tree, so they are linear in the betas:
``J(betas) = JOINT_TEMPLATE + JOINT_SHAPEDIRS @ betas``.
"""

from __future__ import annotations

import torch

from magnet.body.kinematic_tree import JOINT_INDEX, JOINT_NAMES, MIRROR_INDEX, NUM_JOINTS, PARENTS

NUM_BETAS = 10
REST_PELVIS = (0.0, 0.0, 0.0)
STANDING_PELVIS_HEIGHT = 0.93

# Absolute rest positions of the central and left-side joints (right side = mirror in x).
_CENTRAL_AND_LEFT: dict[str, tuple[float, float, float]] = {
    "pelvis": (0.0, 0.0, 0.0),
    "left_hip": (0.085, -0.085, -0.005),
    "spine1": (0.0, 0.105, -0.015),
    "left_knee": (0.100, -0.475, 0.005),
    "spine2": (0.0, 0.235, 0.000),
    "left_ankle": (0.095, -0.865, -0.035),
    "spine3": (0.0, 0.290, 0.010),
    "left_foot": (0.115, -0.905, 0.085),
    "neck": (0.0, 0.505, -0.020),
    "left_collar": (0.075, 0.420, -0.005),
    "head": (0.0, 0.595, 0.015),
    "left_shoulder": (0.180, 0.455, -0.020),
    "left_elbow": (0.440, 0.450, -0.035),
    "left_wrist": (0.690, 0.450, -0.030),
    "jaw": (0.0, 0.560, 0.045),
    "left_eye": (0.032, 0.660, 0.090),
}

# Finger offsets of the left hand, each relative to its parent joint (wrist -> 1 -> 2 -> 3).
_LEFT_FINGER_OFFSETS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "index": ((0.090, 0.000, 0.025), (0.035, 0.000, 0.002), (0.024, 0.000, 0.001)),
    "middle": ((0.095, 0.002, 0.003), (0.040, 0.000, 0.000), (0.027, 0.000, 0.000)),
    "pinky": ((0.078, -0.006, -0.040), (0.024, 0.000, -0.004), (0.018, 0.000, -0.002)),
    "ring": ((0.088, -0.002, -0.018), (0.036, 0.000, -0.002), (0.025, 0.000, -0.001)),
    "thumb": ((0.025, -0.012, 0.030), (0.030, -0.006, 0.022), (0.026, -0.004, 0.016)),
}

_WIDTH_JOINTS = ("left_hip", "right_hip", "left_collar", "right_collar", "left_shoulder", "right_shoulder")
_LEG_JOINTS = ("left_knee", "right_knee", "left_ankle", "right_ankle")
_ARM_JOINTS = ("left_elbow", "right_elbow", "left_wrist", "right_wrist")


def _rest_positions() -> list[list[float]]:
    pos: list[list[float] | None] = [None] * NUM_JOINTS
    for name, p in _CENTRAL_AND_LEFT.items():
        pos[JOINT_INDEX[name]] = list(p)
    for finger, offsets in _LEFT_FINGER_OFFSETS.items():
        parent = list(_CENTRAL_AND_LEFT["left_wrist"])
        for k, off in enumerate(offsets, start=1):
            parent = [a + b for a, b in zip(parent, off)]
            pos[JOINT_INDEX[f"left_{finger}{k}"]] = parent
    for j, name in enumerate(JOINT_NAMES):
        if name.startswith("right_"):
            x, y, z = pos[MIRROR_INDEX[j]]
            pos[j] = [-x, y, z]
    assert all(p is not None for p in pos)
    return pos  # type: ignore[return-value]


def default_joint_model(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """The default skeleton as a linear joint model.

    Returns ``(template [55, 3], shapedirs [55, 3, 10])`` with ``J(betas) = template + shapedirs @ betas``.
    """
    template = torch.tensor(_rest_positions(), dtype=torch.float64)
    parents = torch.tensor(PARENTS[1:])
    offsets = torch.zeros(NUM_JOINTS, 3, dtype=torch.float64)
    offsets[1:] = template[1:] - template[parents]
    offsets[0] = template[0]

    off_dirs = torch.zeros(NUM_JOINTS, 3, NUM_BETAS, dtype=torch.float64)
    off_dirs[1:, :, 0] = 0.06 * offsets[1:]
    for name in _WIDTH_JOINTS:
        j = JOINT_INDEX[name]
        off_dirs[j, 0, 1] = 0.05 * offsets[j, 0]
    for name in _LEG_JOINTS:
        j = JOINT_INDEX[name]
        off_dirs[j, :, 2] = 0.04 * offsets[j]
    for name in _ARM_JOINTS:
        j = JOINT_INDEX[name]
        off_dirs[j, :, 3] = 0.04 * offsets[j]

    shapedirs = torch.zeros_like(off_dirs)
    for j in range(1, NUM_JOINTS):  # parents precede children
        shapedirs[j] = shapedirs[PARENTS[j]] + off_dirs[j]
    return template.to(dtype), shapedirs.to(dtype)
