"""From a plan and its ground tracks to joint rotations on one person's own skeleton.

The bone lengths come from the body model's rest joints for the person's betas (:class:`Skeleton`), so forward
kinematics puts the foot joints exactly where the gait planned them: the legs are solved by an analytic
two-bone IK (hip, knee, ankle), the pelvis is lowered smoothly where a leg could not reach its foot, and the
spine, head (turned towards a partner) and arms (swinging opposite to the legs while walking) follow the plan's
parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from magnet.data.synthetic.gait import Ground
from magnet.data.synthetic.plan import (
    LEFT,
    RIGHT,
    SIDES,
    Plan,
    max_filter,
    mirror_rot,
    rot,
    rotate_xz,
    smooth,
    wrap_angle,
)

TOE_HEIGHT = 0.025  # height of a planted foot (toe-base) joint above the floor (m)
REACH = 0.996  # the IK never stretches a leg beyond this fraction of its full length

# SMPL-X joint ids used here
_HIP, _KNEE, _ANKLE, _FOOT = (1, 2), (4, 5), (7, 8), (10, 11)
_SPINE = (3, 6, 9)
_NECK, _HEAD = 12, 15
_COLLAR, _SHOULDER, _ELBOW, _WRIST = (13, 14), (16, 17), (18, 19), (20, 21)


# ---------------------------------------------------------------------------------------------- skeleton


@dataclass
class Leg:
    """Rest geometry of one leg (model coordinates, metres) and its knee solution constants."""

    hip_off: np.ndarray  # hip - pelvis [3]
    thigh: np.ndarray  # knee - hip [3]
    shin: np.ndarray  # ankle - knee [3]
    foot: np.ndarray  # foot (toe-base) joint - ankle [3]
    toe_off: np.ndarray  # foot joint - pelvis [3]

    def __post_init__(self):
        a, b = self.thigh, self.shin
        p = a[1] * b[1] + a[2] * b[2]
        q = a[2] * b[1] - a[1] * b[2]
        # |thigh + Rx(theta) shin|^2 = c0 + 2 k cos(theta - phi)
        self.k = math.hypot(p, q)
        self.phi = math.atan2(q, p)
        self.c0 = float(a @ a + b @ b + 2.0 * a[0] * b[0])
        self.length = math.sqrt(self.c0 + 2.0 * self.k)  # full reach (hip to ankle)

    def knee_angle(self, dist: np.ndarray) -> np.ndarray:
        """Knee flexion (about the thigh's x axis) that puts the ankle ``dist[...]`` metres from the hip."""
        c = (dist**2 - self.c0) / (2.0 * self.k)
        return self.phi + np.arccos(np.clip(c, -1.0, 1.0))


class Skeleton:
    """Bone geometry of one person, taken from the body model's rest joints for its betas."""

    def __init__(self, rest_joints: np.ndarray):
        J = np.asarray(rest_joints, dtype=np.float64)[:22]
        self.rest = J
        self.legs = [
            Leg(J[h] - J[0], J[k] - J[h], J[a] - J[k], J[f] - J[a], J[f] - J[0])
            for h, k, a, f in zip(_HIP, _KNEE, _ANKLE, _FOOT)
        ]
        toe_y = 0.5 * (J[_FOOT[0], 1] + J[_FOOT[1], 1])
        self.stand_height = TOE_HEIGHT + J[0, 1] - toe_y  # pelvis height standing in the rest pose
        self.head_off = J[_HEAD] - J[0]
        self.leg_length = 0.5 * (self.legs[0].length + self.legs[1].length)


# ---------------------------------------------------------------------------------------------- IK


def _solve_leg(leg: Leg, R_p, hip, toe, R_foot, knee_dir):
    """Two-bone IK: local rotations (hip, knee, ankle) ``[T, 3, 3]`` putting the foot joint at ``toe[T, 3]`` with
    world orientation ``R_foot``; ``knee_dir[T, 3]`` is the direction of the knee axis (the foot's left)."""
    ankle = toe - np.einsum("tij,j->ti", R_foot, leg.foot)
    d_vec = ankle - hip
    dist = np.linalg.norm(d_vec, axis=-1)
    theta = leg.knee_angle(dist)
    R_knee = rot(0, theta)
    L = leg.thigh + np.einsum("tij,j->ti", R_knee, leg.shin)
    x = np.array([1.0, 0.0, 0.0])

    def frame(e1, n):
        e1 = e1 / np.linalg.norm(e1, axis=-1, keepdims=True)
        n = n - (n * e1).sum(-1, keepdims=True) * e1
        n = n / np.linalg.norm(n, axis=-1, keepdims=True)
        return np.stack([e1, n, np.cross(e1, n)], -1)

    F_rest = frame(L, np.broadcast_to(x, L.shape))
    F_tgt = frame(d_vec, knee_dir)
    R_thigh = F_tgt @ np.swapaxes(F_rest, -1, -2)
    hip_local = np.swapaxes(R_p, -1, -2) @ R_thigh
    ankle_local = np.swapaxes(R_thigh @ R_knee, -1, -2) @ R_foot
    error = np.abs(np.linalg.norm(L, axis=-1) - dist)
    return hip_local, R_knee, ankle_local, error


@dataclass
class Pose:
    root_R: np.ndarray  # [T, 3, 3]
    root_pos: np.ndarray  # [T, 3] world pelvis
    body: np.ndarray  # [T, 21, 3, 3] local rotations of joints 1..21
    hands: np.ndarray  # [T, 30, 3, 3]
    ik_error: float


def _left_arm(p: dict[str, np.ndarray], s: str):
    """Local rotations (collar, shoulder, elbow, wrist) ``[T, 3, 3]`` of an arm built with the left-arm law."""
    collar = rot(1, -p[s + "collar_fwd"]) @ rot(2, p[s + "collar_up"])
    shoulder = rot(0, -p[s + "sh_flex"]) @ rot(2, -p[s + "sh_down"]) @ rot(0, p[s + "sh_twist"])
    elbow = rot(1, -p[s + "elbow"])
    wrist = rot(2, -p[s + "wrist"])
    return collar, shoulder, elbow, wrist


def _left_hand(curl: np.ndarray) -> np.ndarray:
    """Finger rotations ``[T, 15, 3, 3]`` of a left hand curled by ``curl[T]`` (index, middle, pinky, ring,
    thumb; three joints each)."""
    out = []
    for finger in range(5):
        for k, w in enumerate((0.8, 1.0, 0.7)):
            if finger < 4:
                out.append(rot(2, -curl * w * (1.0 + 0.15 * finger)))
            else:
                out.append(rot(1, 0.2 * curl) @ rot(2, -0.3 * curl * w))
    return np.stack(out, 1)


def solve_person(plan: Plan, g: Ground, skel: Skeleton, look_target: np.ndarray | None) -> Pose:
    """Pelvis, legs (IK), spine, head and arms of one person for its skeleton."""
    T = plan.T
    p = {k: v.copy() for k, v in plan.params.items()}
    st = plan.style

    # walking couples the upper body to the legs: arms swing opposite to the legs, thorax counter-rotates
    p["l_sh_flex"] -= st["arm_gain"] * g.d_fwd
    p["r_sh_flex"] += st["arm_gain"] * g.d_fwd
    p["l_elbow"] += 0.6 * np.maximum(-st["arm_gain"] * g.d_fwd, 0.0)
    p["r_elbow"] += 0.6 * np.maximum(st["arm_gain"] * g.d_fwd, 0.0)
    p["spine_yaw"] += 0.25 * g.d_fwd
    p["spine_pitch"] += st["lean"] * g.walk

    yaw_p = g.pel_yaw + p["pelvis_yaw"] - st["hip_yaw_gain"] * g.d_fwd
    R_p = rot(1, yaw_p) @ rot(0, p["pelvis_pitch"] + 0.04 * g.walk) @ rot(2, p["pelvis_roll"])
    left = np.stack([np.cos(g.pel_yaw), -np.sin(g.pel_yaw)], -1)
    fwd = np.stack([np.sin(g.pel_yaw), np.cos(g.pel_yaw)], -1)
    dx = p["pelvis_dx"] + st["sway"] * g.support
    xz = g.pel_xz + dx[:, None] * left + p["pelvis_dz"][:, None] * fwd
    height = skel.stand_height + p["pelvis_dy"] + st["bob"] * g.single - 0.015 * g.walk
    root = np.stack([xz[:, 0], height, xz[:, 1]], -1)

    # feet: the foot joint is at its reference + the rest offset, turned by the foot heading
    toes, R_feet, knee_dirs = [], [], []
    for side in (LEFT, RIGHT):
        off = skel.legs[side].toe_off
        txz = g.ref[side] + rotate_xz(np.broadcast_to(off[[0, 2]], (T, 2)), g.yaw[side])
        toes.append(np.stack([txz[:, 0], TOE_HEIGHT + g.lift[side], txz[:, 1]], -1))
        R_feet.append(rot(1, g.yaw[side]) @ rot(0, g.pitch[side]))
        knee_dirs.append(np.stack([np.cos(g.yaw[side]), np.zeros(T), -np.sin(g.yaw[side])], -1))

    # lower the pelvis where a leg could not reach its foot (smoothly, never less than needed)
    need = np.zeros(T)
    for side in (LEFT, RIGHT):
        leg = skel.legs[side]
        hip = root + np.einsum("tij,j->ti", R_p, leg.hip_off)
        ankle = toes[side] - np.einsum("tij,j->ti", R_feet[side], leg.foot)
        horiz2 = ((hip - ankle)[:, [0, 2]] ** 2).sum(-1)
        reach2 = (REACH * leg.length) ** 2
        vert = np.sqrt(np.maximum(reach2 - horiz2, (0.3 * leg.length) ** 2))
        need = np.maximum(need, (hip[:, 1] - ankle[:, 1]) - vert)
    need = np.maximum(need, 0.0)
    if need.any():
        sigma = 2.0
        drop = smooth(max_filter(need, int(2 * sigma) + 1), sigma)
        root[:, 1] -= np.maximum(drop, need) + 1e-4 * (need > 0)

    body = np.tile(np.eye(3), (T, 21, 1, 1))
    err = 0.0
    for side in (LEFT, RIGHT):
        leg = skel.legs[side]
        hip = root + np.einsum("tij,j->ti", R_p, leg.hip_off)
        h, k, a, e = _solve_leg(leg, R_p, hip, toes[side], R_feet[side], knee_dirs[side])
        body[:, _HIP[side] - 1], body[:, _KNEE[side] - 1], body[:, _ANKLE[side] - 1] = h, k, a
        body[:, _FOOT[side] - 1] = rot(0, -g.pitch[side])  # toes stay flat while the heel is up
        err = max(err, float(e.max()))

    if look_target is not None:  # turn the head towards the partner's head
        head = root + np.einsum("tij,j->ti", rot(1, yaw_p), skel.head_off)
        v = look_target - head
        want = np.arctan2(v[:, 0], v[:, 2])
        rel = wrap_angle(want - yaw_p - p["spine_yaw"])
        p["head_yaw"] += np.clip(rel, -1.1, 1.1)
        p["head_pitch"] += np.clip(np.arctan2(-v[:, 1], np.hypot(v[:, 0], v[:, 2])), -0.4, 0.4)

    for j, f in zip(_SPINE, (0.3, 0.35, 0.35)):
        body[:, j - 1] = (
            rot(1, f * p["spine_yaw"]) @ rot(0, f * p["spine_pitch"]) @ rot(2, f * p["spine_roll"])
        )
    for j, f in ((_NECK, 0.4), (_HEAD, 0.6)):
        body[:, j - 1] = (
            rot(1, f * p["head_yaw"]) @ rot(0, f * p["head_pitch"]) @ rot(2, f * p["head_roll"])
        )
    hands = []
    for side, s in enumerate(SIDES):
        rots = _left_arm(p, s)
        hand = _left_hand(p[s + "finger"])
        if side == RIGHT:
            rots = [mirror_rot(r) for r in rots]
            hand = mirror_rot(hand)
        for j, r in zip((_COLLAR[side], _SHOULDER[side], _ELBOW[side], _WRIST[side]), rots):
            body[:, j - 1] = r
        hands.append(hand)
    return Pose(R_p, root, body, np.concatenate(hands, 1), err)
