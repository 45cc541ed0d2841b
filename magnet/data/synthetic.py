"""Procedural multi-person interaction generator: the embedded default dataset.

Every model trains on this data on a fresh machine without licensed motion capture (``make demo``), so the
motion has real, learnable and checkable structure:

* **Gait with planted feet.** Footsteps are planned along each person's (curved) path; a planted foot keeps its
  world position (its foot joint is the pivot, the heel lifts before toe-off), the swing foot moves on an arc,
  the pelvis follows the smoothed mid-point of the feet with a small vertical bob and lateral sway, and
  hip/knee/ankle come from an analytic two-bone IK that uses the bone lengths of the person's own skeleton
  (``BodyModel.rest_joints(betas)``), so forward kinematics puts the foot joints exactly where they were
  planned. The arms swing opposite to the legs. Speed 0.6-1.6 m/s, cadence and step length follow the speed.
* **Idle standing**: feet planted, breathing, slight sway and head drift.
* **Scenarios** (:data:`SCENARIOS`): ``mirror`` (B is the mirror image of A, left/right swapped),
  ``lead_follow`` (B walks A's path about 1.5 m behind; some clips are a solo walk), ``turn_taking``
  (speaker/listener roles alternate every 2-4 s), ``approach_greet`` (walk towards each other from 4-6 m,
  stop at about 1 m, wave), ``circle_dance`` (2-4 persons evenly spaced on a circle, stepping round it together).

Conventions: 30 fps, metres, Y-up, the floor at y = 0, a person faces +z in its own frame and the pelvis x axis is
the body's left (SMPL-X). A heading ``yaw`` means the forward direction ``(sin yaw, 0, cos yaw)``.
Output is a :class:`magnet.data.raw.RawSequence` (axis-angle SMPL-X parameters, ``transl`` = world pelvis minus
the rest pelvis). :func:`ensure_synthetic_dataset` turns the clips into a cached dataset through
:func:`magnet.data.preprocess.build_dataset`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from magnet.errors import ConfigError, DataError, MagnetError

__all__ = [
    "DATASET_NAME",
    "DEFAULT_FRAMES",
    "DEFAULT_NUM_CLIPS",
    "FPS",
    "GENERATOR_VERSION",
    "PERSON_COUNTS",
    "SCENARIOS",
    "clip_plan",
    "ensure_synthetic_dataset",
    "generate_sequence",
    "main",
]

GENERATOR_VERSION = 2  # bump when the motion changes: cached datasets are rebuilt
# Random streams are keyed by this, not by the version, so a motion change keeps every seed's draws (speeds,
# paths, body sizes) and only changes what is done with them.
RNG_STREAM = 1
FPS = 30.0
SCENARIOS = ("mirror", "lead_follow", "turn_taking", "approach_greet", "circle_dance")
DATASET_NAME = "synthetic"
DEFAULT_NUM_CLIPS = 120
DEFAULT_FRAMES = (150, 300)
MANIFEST_NAME = "manifest.json"

# Persons per scenario: allowed counts (for ``num_persons``).
PERSON_COUNTS = {
    "mirror": (2,),
    "lead_follow": (1, 2),
    "turn_taking": (2,),
    "approach_greet": (2,),
    "circle_dance": (2, 3, 4),
}

TOE_HEIGHT = 0.025  # height of a planted foot (toe-base) joint above the floor (m)
REACH = 0.996  # the IK never stretches a leg beyond this fraction of its full length
LEFT, RIGHT = 0, 1
_SIDES = ("l_", "r_")

# SMPL-X joint ids used here
_HIP, _KNEE, _ANKLE, _FOOT = (1, 2), (4, 5), (7, 8), (10, 11)
_SPINE = (3, 6, 9)
_NECK, _HEAD = 12, 15
_COLLAR, _SHOULDER, _ELBOW, _WRIST = (13, 14), (16, 17), (18, 19), (20, 21)

# Per-frame motion parameters of a person (radians / metres). Sided ones exist as ``l_<name>`` and ``r_<name>``
# and are defined for the left side; the right side uses the mirror image of the same rotation.
_CENTRAL = ("spine_pitch", "spine_yaw", "spine_roll", "head_pitch", "head_yaw", "head_roll")
_PELVIS = ("pelvis_yaw", "pelvis_pitch", "pelvis_roll", "pelvis_dx", "pelvis_dz", "pelvis_dy")
_SIDED = ("collar_up", "collar_fwd", "sh_flex", "sh_down", "sh_twist", "elbow", "wrist", "finger")
PARAM_NAMES = _CENTRAL + _PELVIS + tuple(s + n for s in _SIDES for n in _SIDED)
# parameters whose sign flips under a left/right mirror (yaw, roll and lateral offsets)
_NEGATE_ON_MIRROR = frozenset(
    {"spine_yaw", "spine_roll", "head_yaw", "head_roll", "pelvis_yaw", "pelvis_roll", "pelvis_dx"}
)


# ---------------------------------------------------------------------------------------------- numpy helpers


def _rot(axis: int, angle) -> np.ndarray:
    """Rotation ``[..., 3, 3]`` by ``angle[...]`` radians about the x (0), y (1) or z (2) axis."""
    a = np.asarray(angle, dtype=np.float64)
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    if axis == 0:
        rows = ((o, z, z), (z, c, -s), (z, s, c))
    elif axis == 1:
        rows = ((c, z, s), (z, o, z), (-s, z, c))
    else:
        rows = ((c, -s, z), (s, c, z), (z, z, o))
    return np.stack([np.stack(r, -1) for r in rows], -2)


_MIRROR_SIGNS = np.array([-1.0, 1.0, 1.0])
_MIRROR_MAT = np.outer(_MIRROR_SIGNS, _MIRROR_SIGNS)


def _mirror_rot(R: np.ndarray) -> np.ndarray:
    """Left/right mirror image ``M R M`` (M = diag(-1, 1, 1)) of rotations ``[..., 3, 3]``."""
    return R * _MIRROR_MAT


def _rotate_xz(v: np.ndarray, yaw) -> np.ndarray:
    """Rotate horizontal vectors ``v[..., 2]`` = (x, z) by ``yaw[...]`` about +y."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.stack([c * v[..., 0] + s * v[..., 1], -s * v[..., 0] + c * v[..., 1]], -1)


def _wrap(a):
    """Angles wrapped to [-pi, pi)."""
    return (np.asarray(a) + np.pi) % (2.0 * np.pi) - np.pi


def _smoothstep(u):
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def _minjerk(u):
    u = np.clip(u, 0.0, 1.0)
    return u**3 * (10.0 - 15.0 * u + 6.0 * u * u)


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of ``x[T, ...]`` along time (``sigma`` in frames, edges held constant)."""
    x = np.asarray(x, dtype=np.float64)
    if sigma <= 0 or x.shape[0] < 2:
        return x.copy()
    r = math.ceil(3.0 * sigma)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.concatenate([np.repeat(x[:1], r, 0), x, np.repeat(x[-1:], r, 0)], 0)
    T = x.shape[0]
    out = np.zeros_like(x)
    for i, w in enumerate(k):
        out += w * pad[i : i + T]
    return out


def _max_filter(x: np.ndarray, radius: int) -> np.ndarray:
    """Running maximum of ``x[T]`` over ``[t - radius, t + radius]``."""
    T = x.shape[0]
    pad = np.concatenate([np.full(radius, x[0]), x, np.full(radius, x[-1])])
    out = x.copy()
    for i in range(2 * radius + 1):
        out = np.maximum(out, pad[i : i + T])
    return out


def _envelope(t: np.ndarray, t0: float, t1: float, ramp: float = 0.4) -> np.ndarray:
    """0 -> 1 -> 0 window over ``[t0, t1]`` with smooth ramps of ``ramp`` seconds (at most half the window)."""
    ramp = max(min(ramp, 0.5 * (t1 - t0)), 1e-3)
    return _smoothstep((t - t0) / ramp) * _smoothstep((t1 - t) / ramp)


def _noise(rng: np.random.Generator, t: np.ndarray, freq: float, n: int = 3) -> np.ndarray:
    """Smooth random signal of unit RMS made of ``n`` sinusoids around ``freq`` Hz."""
    out = np.zeros_like(t)
    for _ in range(n):
        f = freq * rng.uniform(0.5, 1.5)
        out += np.sin(2.0 * np.pi * f * t + rng.uniform(0.0, 2.0 * np.pi))
    return out / math.sqrt(n / 2.0)


def _heading_of(v) -> float:
    """Heading yaw of a horizontal direction ``(x, z)``."""
    return math.atan2(float(v[0]), float(v[1]))


# ---------------------------------------------------------------------------------------------- skeleton


@dataclass
class _Leg:
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


class _Skeleton:
    """Bone geometry of one person, taken from the body model's rest joints for its betas."""

    def __init__(self, rest_joints: np.ndarray):
        J = np.asarray(rest_joints, dtype=np.float64)[:22]
        self.rest = J
        self.legs = [
            _Leg(J[h] - J[0], J[k] - J[h], J[a] - J[k], J[f] - J[a], J[f] - J[0])
            for h, k, a, f in zip(_HIP, _KNEE, _ANKLE, _FOOT)
        ]
        toe_y = 0.5 * (J[_FOOT[0], 1] + J[_FOOT[1], 1])
        self.stand_height = TOE_HEIGHT + J[0, 1] - toe_y  # pelvis height standing in the rest pose
        self.head_off = J[_HEAD] - J[0]
        self.leg_length = 0.5 * (self.legs[0].length + self.legs[1].length)


# ---------------------------------------------------------------------------------------------- plans


@dataclass
class _Step:
    """One footstep: foot ``side`` lifts at ``t_lift`` and is planted at ``t_land`` (seconds).

    ``ref`` (x, z) is the standing reference of the foot: the point the pelvis is above when both feet stand at
    their references in the rest stance; ``yaw`` the foot's heading; ``arc`` the path position when planned
    along a path.
    """

    side: int
    t_lift: float
    t_land: float
    ref: np.ndarray
    yaw: float
    clearance: float
    arc: float = float("nan")


@dataclass
class _Plan:
    """Everything that defines one person's motion, independent of the skeleton's bone lengths."""

    T: int
    init_ref: np.ndarray  # [2, 2] (x, z) per foot
    init_yaw: np.ndarray  # [2]
    style: dict[str, float]
    params: dict[str, np.ndarray]  # name -> [T]
    steps: list[_Step] = field(default_factory=list)
    look_at: int | None = None  # index of the person to look at
    cur_ref: np.ndarray | None = None
    cur_yaw: np.ndarray | None = None
    free_at: float = 0.0  # time (s) after which both feet are free to step again

    def __post_init__(self):
        if self.cur_ref is None:
            self.cur_ref = self.init_ref.copy()
            self.cur_yaw = self.init_yaw.copy()

    @property
    def t(self) -> np.ndarray:
        return np.arange(self.T) / FPS

    def step(self, side: int, t_lift: float, t_land: float, ref, yaw: float, arc: float = float("nan")):
        """Append a step of foot ``side``; the yaw is unwrapped against the foot's current heading."""
        prev = float(self.cur_yaw[side])
        yaw = prev + float(_wrap(yaw - prev))
        ref = np.asarray(ref, dtype=np.float64).copy()
        self.steps.append(_Step(side, t_lift, t_land, ref, yaw, self.style["clearance"], arc))
        self.cur_ref[side] = ref
        self.cur_yaw[side] = yaw
        self.free_at = max(self.free_at, t_land)

    def add(self, name: str, values) -> None:
        self.params[name] = self.params[name] + values

    def copy(self) -> _Plan:
        return _Plan(
            self.T,
            self.init_ref.copy(),
            self.init_yaw.copy(),
            dict(self.style),
            {k: v.copy() for k, v in self.params.items()},
            [_Step(s.side, s.t_lift, s.t_land, s.ref.copy(), s.yaw, s.clearance, s.arc) for s in self.steps],
            self.look_at,
            self.cur_ref.copy(),
            self.cur_yaw.copy(),
            self.free_at,
        )


def _random_style(rng: np.random.Generator, leg_length: float) -> dict[str, float]:
    return {
        "clearance": rng.uniform(0.06, 0.10),
        "sway": rng.uniform(0.015, 0.03),
        "bob": rng.uniform(0.01, 0.022),
        "arm_gain": rng.uniform(0.3, 0.6),  # arm swing (rad) per metre of foot separation
        "hip_yaw_gain": rng.uniform(0.08, 0.16),
        "toe_out": rng.uniform(0.0, 0.12),
        "cadence": rng.uniform(0.95, 1.05) * math.sqrt(0.78 / leg_length),
        "lean": rng.uniform(0.02, 0.08),
    }


def _new_plan(T: int, ref, yaw: float, rng: np.random.Generator, leg_length: float) -> _Plan:
    """A person standing at ``ref`` facing ``yaw`` with a random posture, gait style and idle motion."""
    ref = np.asarray(ref, dtype=np.float64)
    plan = _Plan(
        T,
        np.stack([ref, ref]),
        np.array([yaw, yaw], dtype=np.float64),
        _random_style(rng, leg_length),
        {k: np.zeros(T) for k in PARAM_NAMES},
    )
    # posture: arms hanging at the sides, soft elbows, relaxed fingers
    down, elbow, finger = rng.uniform(1.35, 1.5), rng.uniform(0.15, 0.35), rng.uniform(0.2, 0.5)
    for s in _SIDES:
        plan.add(s + "sh_down", down + rng.uniform(-0.04, 0.04))
        plan.add(s + "sh_flex", rng.uniform(-0.05, 0.1))
        plan.add(s + "sh_twist", rng.uniform(-0.1, 0.2))
        plan.add(s + "elbow", elbow + rng.uniform(-0.05, 0.05))
        plan.add(s + "wrist", rng.uniform(0.0, 0.2))
        plan.add(s + "finger", finger)
        plan.add(s + "collar_up", rng.uniform(-0.05, 0.05))
    plan.add("spine_pitch", rng.uniform(-0.03, 0.08))
    plan.add("head_pitch", rng.uniform(-0.05, 0.1))
    _add_idle(plan, rng, 1.0)
    return plan


def _add_idle(plan: _Plan, rng: np.random.Generator, scale: float) -> None:
    """Breathing, weight shifts (sway) and head drift."""
    t = plan.t
    breath = np.sin(2.0 * np.pi * rng.uniform(0.2, 0.3) * t + rng.uniform(0, 2 * np.pi))
    plan.add("spine_pitch", scale * 0.012 * breath)
    for s in _SIDES:
        plan.add(s + "collar_up", scale * 0.01 * breath)
    plan.add("pelvis_dx", scale * 0.012 * _noise(rng, t, 0.15))
    plan.add("pelvis_roll", scale * 0.015 * _noise(rng, t, 0.15))
    for side in _SIDES:
        plan.add(side + "sh_flex", scale * 0.03 * _noise(rng, t, 0.2))
        plan.add(side + "elbow", scale * 0.03 * _noise(rng, t, 0.2))
    plan.add("head_yaw", scale * 0.08 * _noise(rng, t, 0.1))
    plan.add("head_pitch", scale * 0.04 * _noise(rng, t, 0.12))


# ---------------------------------------------------------------------------------------------- walking


class _Path:
    """A planar path sampled by arc length ``s`` (metres); straight backwards for ``s < 0``."""

    def __init__(
        self,
        start,
        heading: float,
        length: float,
        curvature: Callable[[np.ndarray], np.ndarray],
        back: float = 0.0,
        ds: float = 0.02,
    ):
        n_back, n_fwd = math.ceil(back / ds), math.ceil(length / ds) + 1
        s = np.arange(-n_back, n_fwd + 1) * ds
        kappa = np.where(s < 0, 0.0, curvature(s))
        cum = np.concatenate([[0.0], np.cumsum(kappa[:-1] * ds)])
        i0 = n_back
        psi = heading + cum - cum[i0]
        d = np.stack([np.sin(psi), np.cos(psi)], -1)
        pos = np.concatenate([np.zeros((1, 2)), np.cumsum(d[:-1] * ds, 0)])
        self.s, self.psi = s, psi
        self.pos = np.asarray(start, dtype=np.float64) + pos - pos[i0]

    def point(self, s: float) -> np.ndarray:
        return np.array([np.interp(s, self.s, self.pos[:, 0]), np.interp(s, self.s, self.pos[:, 1])])

    def heading(self, s: float) -> float:
        return float(np.interp(s, self.s, self.psi))


def _cadence(v: float, style: dict[str, float]) -> float:
    """Steps per second at speed ``v`` m/s (step length = v / cadence grows with speed)."""
    return style["cadence"] * (1.55 + 0.55 * v)


def _walk(
    plan: _Plan,
    path: _Path,
    s0: float,
    s_goal: float,
    t_start: float,
    t_stop: float,
    speed: Callable[[int], float],
    first: int,
) -> tuple[float, float]:
    """Plan footsteps from standing at arc ``s0`` towards ``s_goal``; stop (feet together) at the goal or once
    ``t_stop`` is reached. ``speed(k)`` gives the speed of step ``k``. Returns (time both feet are planted, arc).
    """
    to = plan.style["toe_out"]
    foot_s = [s0, s0]
    side, t, k = first, t_start, 0
    while True:
        lead = max(foot_s)
        v = speed(k)
        ts = 1.0 / _cadence(v, plan.style)
        swing, double = 0.8 * ts, 0.2 * ts
        if t >= t_stop or lead >= s_goal - 1e-9:
            side = int(np.argmin(foot_s))
            if foot_s[side] < lead - 1e-6:  # closing step: the trailing foot joins the leading one
                plan.step(
                    side,
                    t,
                    t + swing,
                    path.point(lead),
                    path.heading(lead) + (to if side == LEFT else -to),
                    arc=lead,
                )
                t += swing
            return t, lead
        target = lead + v * ts
        if target > s_goal - 0.3 * v * ts:
            target = s_goal
        plan.step(
            side,
            t,
            t + swing,
            path.point(target),
            path.heading(target) + (to if side == LEFT else -to),
            arc=target,
        )
        foot_s[side] = target
        t += swing + double
        side = 1 - side
        k += 1


def _side_step(plan: _Plan, t0: float, direction, dist: float, step_time: float) -> float:
    """Step sideways by ``dist`` along the horizontal ``direction``: the foot on that side leads, the other
    closes. Returns the time both feet are planted again."""
    direction = np.asarray(direction, dtype=np.float64)
    direction = direction / np.linalg.norm(direction)
    yaw = float(np.mean(plan.cur_yaw))
    left = np.array([math.cos(yaw), -math.sin(yaw)])
    lead = LEFT if direction @ left > 0 else RIGHT
    target = np.mean(plan.cur_ref, 0) + dist * direction
    for i, side in enumerate((lead, 1 - lead)):
        lift = t0 + i * (step_time + 0.1)
        plan.step(side, lift, lift + step_time, target, plan.cur_yaw[side])
    return t0 + 2 * step_time + 0.1


# ---------------------------------------------------------------------------------------------- gestures


def _g_arm_raise(plan, rng, t0, t1, side):
    """Raise one arm forward with rhythmic beats (talking / showing)."""
    t = plan.t
    env = _envelope(t, t0, t1)
    f, beat = rng.uniform(1.2, 2.5), rng.uniform(0.1, 0.25)
    plan.add(side + "sh_flex", env * (rng.uniform(0.9, 1.7) + beat * np.sin(2 * np.pi * f * (t - t0))))
    plan.add(side + "elbow", env * rng.uniform(0.2, 0.9))
    plan.add(side + "sh_down", -env * rng.uniform(0.0, 0.4))


def _g_side_raise(plan, rng, t0, t1, sides):
    """Lift the arms sideways (one or both)."""
    env = _envelope(plan.t, t0, t1)
    amount, el = rng.uniform(0.8, 1.4), rng.uniform(0.0, 0.3)
    for s in sides:
        plan.add(s + "sh_down", -env * amount)
        plan.add(s + "elbow", env * el)


def _g_wave(plan, rng, t0, t1, side):
    """Wave: upper arm out to the side, forearm up, the forearm swinging side to side."""
    t = plan.t
    env = _envelope(t, t0, t1, 0.35)
    i0 = min(int(t0 * FPS), plan.T - 1)
    down_now = plan.params[side + "sh_down"][i0]
    f = rng.uniform(1.8, 3.0)
    plan.add(side + "sh_down", -env * (down_now - rng.uniform(0.15, 0.45)))
    plan.add(side + "sh_flex", env * rng.uniform(0.2, 0.5))
    plan.add(side + "sh_twist", -env * rng.uniform(1.3, 1.6))
    plan.add(
        side + "elbow",
        env * (rng.uniform(1.4, 1.8) + rng.uniform(0.25, 0.45) * np.sin(2 * np.pi * f * (t - t0))),
    )
    plan.add(side + "finger", -env * 0.8 * plan.params[side + "finger"][i0])


def _g_open_arms(plan, rng, t0, t1):
    """Both forearms up and forward, beating (explaining)."""
    t = plan.t
    env = _envelope(t, t0, t1)
    f, beat = rng.uniform(1.5, 2.5), rng.uniform(0.1, 0.25)
    flex, el = rng.uniform(0.4, 0.9), rng.uniform(0.8, 1.3)
    for s in _SIDES:
        b = beat * np.sin(2 * np.pi * f * (t - t0) + (0.0 if s == "l_" else rng.uniform(0, 1.0)))
        plan.add(s + "sh_flex", env * (flex + b))
        plan.add(s + "sh_down", -env * rng.uniform(0.2, 0.5))
        plan.add(s + "elbow", env * (el + b))
        plan.add(s + "sh_twist", -env * rng.uniform(0.3, 0.6))


def _g_nod(plan, rng, t0, amplitude, count=None):
    """A few head nods starting at ``t0``."""
    t = plan.t
    f = rng.uniform(1.5, 2.5)
    n = count or int(rng.integers(1, 4))
    t1 = t0 + n / f
    inside = (t >= t0) & (t <= t1)
    plan.add("head_pitch", np.where(inside, amplitude * 0.5 * (1 - np.cos(2 * np.pi * f * (t - t0))), 0.0))


def _g_lean(plan, rng, t0, t1):
    env = _envelope(plan.t, t0, t1)
    if rng.random() < 0.6:
        plan.add("spine_pitch", env * rng.uniform(0.1, 0.35))
    else:
        plan.add("spine_roll", env * rng.choice([-1, 1]) * rng.uniform(0.08, 0.2))


def _g_twist(plan, rng, t0, t1):
    env = _envelope(plan.t, t0, t1)
    a = rng.choice([-1, 1]) * rng.uniform(0.2, 0.5)
    plan.add("spine_yaw", env * a)
    plan.add("head_yaw", env * 0.5 * a)


def _g_head_tilt(plan, rng, t0, t1):
    env = _envelope(plan.t, t0, t1)
    plan.add("head_roll", env * rng.choice([-1, 1]) * rng.uniform(0.1, 0.3))


def _g_shrug(plan, rng, t0, t1):
    env = _envelope(plan.t, t0, t1, 0.3)
    up = rng.uniform(0.15, 0.3)
    for s in _SIDES:
        plan.add(s + "collar_up", env * up)
        plan.add(s + "elbow", env * 0.6)
        plan.add(s + "sh_twist", -env * 0.4)


def _g_squat(plan, rng, t0, t1):
    env = _envelope(plan.t, t0, t1, 0.6)
    plan.add("pelvis_dy", -env * rng.uniform(0.1, 0.25))
    plan.add("pelvis_pitch", env * rng.uniform(0.1, 0.3))
    plan.add("pelvis_dz", -env * 0.04)
    plan.add("spine_pitch", env * 0.1)
    for s in _SIDES:
        plan.add(s + "sh_flex", env * rng.uniform(0.3, 0.9))


def _speaker_gesture(plan, rng, t0, t1):
    """One 'talking' gesture: always moves the arms, sometimes the head or torso as well."""
    kind = rng.choice(["arm", "open", "open", "arm"])
    if kind == "arm":
        _g_arm_raise(plan, rng, t0, t1, rng.choice(_SIDES))
    else:
        _g_open_arms(plan, rng, t0, t1)
    extra = rng.random()
    if extra < 0.35:
        _g_nod(plan, rng, t0 + rng.uniform(0, 0.5 * (t1 - t0)), rng.uniform(0.12, 0.25))
    elif extra < 0.6:
        _g_lean(plan, rng, t0, t1)
    elif extra < 0.75:
        _g_head_tilt(plan, rng, t0, t1)
    elif extra < 0.85:
        _g_shrug(plan, rng, t0 + 0.1, min(t1, t0 + 1.2))


# ---------------------------------------------------------------------------------------------- scenarios


def _pair_refs(dist: float) -> tuple[np.ndarray, np.ndarray]:
    return np.array([0.0, 0.0]), np.array([0.0, dist])


def _scene_mirror(rng, T, P, legs):
    """A moves (arm and torso gestures, side steps, squats); B, facing A, is its mirror image."""
    dur = T / FPS
    dist = rng.uniform(1.0, 2.0)
    a = _new_plan(T, [0.0, 0.0], 0.0, rng, legs[0])
    home = np.zeros(2)
    t = rng.uniform(0.2, 0.6)
    while t < dur - 0.5:
        length = rng.uniform(1.0, 2.5)
        t1 = min(t + length, dur + 0.5)
        kind = rng.choice(
            ["arm", "side", "wave", "lean", "twist", "nod", "squat", "step", "open"],
            p=[0.18, 0.14, 0.1, 0.1, 0.08, 0.08, 0.08, 0.14, 0.1],
        )
        if kind == "step" and t < a.free_at:
            kind = "arm"
        if kind == "arm":
            _g_arm_raise(a, rng, t, t1, rng.choice(_SIDES))
        elif kind == "side":
            _g_side_raise(a, rng, t, t1, _SIDES if rng.random() < 0.5 else (rng.choice(_SIDES),))
        elif kind == "wave":
            _g_wave(a, rng, t, t1, rng.choice(_SIDES))
        elif kind == "lean":
            _g_lean(a, rng, t, t1)
        elif kind == "twist":
            _g_twist(a, rng, t, t1)
        elif kind == "nod":
            _g_nod(a, rng, t, rng.uniform(0.15, 0.3))
            t1 = t + 1.0
        elif kind == "squat":
            _g_squat(a, rng, t, t1)
        elif kind == "open":
            _g_open_arms(a, rng, t, t1)
        else:  # side step, heading back towards home when away from it
            offset = float(np.mean(a.cur_ref, 0)[0] - home[0])
            sign = -np.sign(offset) if abs(offset) > 0.3 else rng.choice([-1.0, 1.0])
            t1 = _side_step(a, t, [sign, 0.0], rng.uniform(0.2, 0.4), rng.uniform(0.4, 0.55))
        if rng.random() < 0.25 and kind not in ("nod", "step"):
            _g_head_tilt(a, rng, t, t1)
        t = t1 - rng.uniform(0.0, 0.3) + rng.uniform(0.05, 0.5)
    lag = int(rng.integers(0, 5))
    b = _mirror_plan(a, dist, lag)
    return [a, b], {"mirror_lag_frames": lag, "mirror_distance_m": float(dist)}


def _mirror_plan(a: _Plan, dist: float, lag: int) -> _Plan:
    """The mirror image of ``a`` in the plane z = dist / 2 (left and right swapped), delayed by ``lag`` frames."""

    def reflect(p):
        return np.array([p[0], dist - p[1]])

    def shift(x):
        return x if lag == 0 else np.concatenate([np.repeat(x[:1], lag), x[:-lag]])

    params = {}
    for name, v in a.params.items():
        if name[:2] in _SIDES:
            src = ("r_" if name[:2] == "l_" else "l_") + name[2:]
            params[name] = shift(a.params[src])
        else:
            params[name] = shift(-v if name in _NEGATE_ON_MIRROR else v)
    init_ref = np.stack([reflect(a.init_ref[RIGHT]), reflect(a.init_ref[LEFT])])
    init_yaw = np.array([np.pi - a.init_yaw[RIGHT], np.pi - a.init_yaw[LEFT]])
    b = _Plan(a.T, init_ref, init_yaw, dict(a.style), params)
    for s in a.steps:
        b.step(1 - s.side, s.t_lift + lag / FPS, s.t_land + lag / FPS, reflect(s.ref), np.pi - s.yaw)
    return b


def _scene_lead_follow(rng, T, P, legs):
    """A walks a curved path (sometimes pausing); B follows about 1.5 m behind on the same path."""
    dur = T / FPS
    v0 = rng.uniform(0.8, 1.3) if P == 2 else rng.uniform(0.6, 1.6)
    dv = rng.uniform(0.0, 0.25)
    n_v, ph = rng.uniform(6, 14), rng.uniform(0, 2 * np.pi)
    lo, hi = (0.7, 1.4) if P == 2 else (0.6, 1.6)

    def speed(k):
        return float(np.clip(v0 + dv * np.sin(2 * np.pi * k / n_v + ph), lo, hi))

    ka, kb, lam, kph = (
        rng.uniform(0.0, 0.3),
        rng.uniform(-0.15, 0.15),
        rng.uniform(4, 10),
        rng.uniform(0, 6.3),
    )
    path_len = hi * dur + 3.0
    lag = rng.uniform(0.5, 0.8)
    offset = max(1.5 - v0 * lag, 0.9)

    def curvature(s):
        return np.clip(ka * np.sin(2 * np.pi * s / lam + kph) + kb, -0.4, 0.4)

    path = _Path([0.0, 0.0], 0.0, path_len, curvature, back=offset + 1.0)
    a = _new_plan(T, path.point(0.0), path.heading(0.0), rng, legs[0])
    t = rng.uniform(0.2, 0.8)
    t_end = dur - rng.uniform(0.0, 1.0)
    s = 0.0
    pause = P == 1 and rng.random() < 0.5 or P == 2 and rng.random() < 0.25
    if pause and dur > 4.0:
        t, s = _walk(
            a, path, s, path_len, t, t + rng.uniform(0.35, 0.55) * (t_end - t), speed, int(rng.integers(2))
        )
        t += rng.uniform(0.6, 1.5)
    _walk(a, path, s, path_len, t, t_end, speed, int(rng.integers(2)))
    plans = [a]
    meta: dict[str, Any] = {"solo": P == 1}
    if P == 2:
        b = _new_plan(T, path.point(-offset), path.heading(-offset), rng, legs[1])
        to = b.style["toe_out"]
        for st in a.steps:
            arc = st.arc - offset
            b.step(
                st.side,
                st.t_lift + lag,
                st.t_land + lag,
                path.point(arc),
                path.heading(arc) + (to if st.side == LEFT else -to),
                arc=arc,
            )
        b.look_at = 0
        plans.append(b)
        meta.update({"follow_lag_s": float(lag), "follow_offset_m": float(offset)})
    return plans, meta


def _scene_turn_taking(rng, T, P, legs):
    """Two persons face each other and alternate between talking (gesturing) and listening every 2-4 s."""
    dur = T / FPS
    dist = rng.uniform(1.0, 1.8)
    ra, rb = _pair_refs(dist)
    plans = [
        _new_plan(T, ra, rng.uniform(-0.25, 0.25), rng, legs[0]),
        _new_plan(T, rb, np.pi + rng.uniform(-0.25, 0.25), rng, legs[1]),
    ]
    plans[0].look_at, plans[1].look_at = 1, 0
    turns = []
    speaker = int(rng.integers(2))
    t = 0.0
    while t < dur - 0.3:
        t1 = min(t + rng.uniform(2.0, 4.0), dur)
        if dur - t1 < 1.0:
            t1 = dur
        turns.append([round(t * FPS), round(t1 * FPS), speaker])
        sp, li = plans[speaker], plans[1 - speaker]
        g = t + rng.uniform(0.1, 0.3)
        while g < t1 - 0.6:
            g1 = min(g + rng.uniform(1.0, 2.2), t1 - 0.1)
            _speaker_gesture(sp, rng, g, g1)
            g = g1 - rng.uniform(0.1, 0.3)
        if rng.random() < 0.7:  # the listener nods now and then
            _g_nod(li, rng, rng.uniform(t, max(t, t1 - 1.0)), rng.uniform(0.05, 0.1))
        speaker = 1 - speaker
        t = t1
    return plans, {"turns": turns}


def _scene_approach_greet(rng, T, P, legs):
    """Walk towards each other from 4-6 m (less in short clips), stop about 1 m apart, one or both wave."""
    dur = T / FPS
    final = rng.uniform(0.9, 1.2)
    greet = min(rng.uniform(1.3, 2.2), 0.35 * dur)
    starts = [rng.uniform(0.2, 0.7), rng.uniform(0.2, 1.0)]
    dists, speeds = [], []
    for i in range(2):
        v = rng.uniform(0.9, 1.5)
        # step period at the slowest cadence this body may get (the longest steps): a safe time budget
        ts = 1.0 / _cadence(v, {"cadence": 0.95 * math.sqrt(0.78 / legs[i])})
        budget = dur - starts[i] - greet - 0.3
        d_max = max((budget / ts - 1.5) * v * ts, 0.3)
        dists.append(min(rng.uniform(1.5, 2.5), d_max))
        speeds.append(v)
    d0 = final + sum(dists)
    plans = []
    ends = []
    for i, (start, heading) in enumerate((([0.0, 0.0], 0.0), ([0.0, d0], np.pi))):
        path = _Path(start, heading, dists[i] + 1.0, lambda s: np.zeros_like(s))
        p = _new_plan(T, path.point(0.0), heading, rng, legs[i])
        v = speeds[i]
        end, _ = _walk(p, path, 0.0, dists[i], starts[i], dur, lambda k, v=v: v, int(rng.integers(2)))
        p.look_at = 1 - i
        plans.append(p)
        ends.append(end)
    arrive = max(ends)
    who = rng.choice(["A", "B", "both"], p=[0.35, 0.35, 0.3])
    wavers = {"A": [0], "B": [1], "both": [0, 1]}[who]
    for i in range(2):
        t0 = max(ends[i], arrive - 0.3) + rng.uniform(0.0, 0.3)
        if i in wavers:
            side = "r_" if rng.random() < 0.8 else "l_"
            _g_wave(plans[i], rng, t0, min(t0 + greet, dur + 0.3), side)
        else:
            _g_nod(plans[i], rng, t0, rng.uniform(0.1, 0.2), count=1)
    return plans, {
        "start_distance_m": float(d0),
        "final_distance_m": float(final),
        "wavers": [int(w) for w in wavers],
        "arrival_frame": round(arrive * FPS),
    }


def _scene_circle_dance(rng, T, P, legs):
    """2-4 persons evenly spaced on a circle, stepping round it in sync (facing the centre or the tangent)."""
    dur = T / FPS
    radius = rng.uniform(0.8, 1.4) if P < 4 else rng.uniform(1.0, 1.4)
    theta0 = rng.uniform(0, 2 * np.pi)
    mode = "centre" if rng.random() < 0.5 else "tangent"
    direction = float(rng.choice([-1.0, 1.0]))

    def on_circle(th):
        return radius * np.array([math.cos(th), math.sin(th)])

    def facing_centre(th):
        return math.atan2(-math.cos(th), -math.sin(th))

    if mode == "centre":
        p0 = _new_plan(T, on_circle(theta0), facing_centre(theta0), rng, legs[0])
        chord = rng.uniform(0.25, 0.4)
        dth = chord / radius
        step_t = rng.uniform(0.35, 0.45)
        t = rng.uniform(0.2, 0.6)
        th = theta0
        reverse_at = rng.uniform(0.4, 0.7) * dur if rng.random() < 0.5 else np.inf
        while t < dur:
            if t > reverse_at:
                direction, reverse_at = -direction, np.inf
                t += rng.uniform(0.2, 0.6)
            yaw = facing_centre(th)
            left = np.array([math.cos(yaw), -math.sin(yaw)])
            th_next = th + direction * dth
            move = on_circle(th_next) - on_circle(th)
            lead = LEFT if move @ left > 0 else RIGHT
            for i, side in enumerate((lead, 1 - lead)):
                lift = t + i * (step_t + 0.1)
                p0.step(side, lift, lift + step_t, on_circle(th_next), facing_centre(th_next))
            th = th_next
            t += 2 * (step_t + 0.1)
        # hands joined with the neighbours: arms out and a little forward, bouncing with the steps
        bounce = np.sin(2 * np.pi * p0.t / (2 * (step_t + 0.1)))
        for s in _SIDES:
            p0.add(s + "sh_down", -rng.uniform(0.3, 0.55) + 0.05 * bounce)
            p0.add(s + "sh_flex", rng.uniform(0.2, 0.5))
    else:
        v = rng.uniform(0.6, 1.0)
        sign = direction

        def curvature(s):
            return np.full_like(s, -sign / radius)

        heading = _heading_of(sign * np.array([-math.sin(theta0), math.cos(theta0)]))
        path = _Path(on_circle(theta0), heading, v * dur + 2.0, curvature)
        p0 = _new_plan(T, path.point(0.0), heading, rng, legs[0])
        _walk(
            p0,
            path,
            0.0,
            1e9,
            rng.uniform(0.2, 0.6),
            dur - rng.uniform(0.0, 0.8),
            lambda k: v,
            int(rng.integers(2)),
        )
        for s in _SIDES:
            p0.add(s + "sh_down", -rng.uniform(0.1, 0.4))
    if rng.random() < 0.4:  # everybody raises the arms together once
        t0 = rng.uniform(0.3, 0.7) * dur
        _g_side_raise(p0, rng, t0, t0 + rng.uniform(0.8, 1.5), _SIDES)
    plans = []
    for i in range(P):
        alpha = 2 * np.pi * i / P
        p = _rotate_plan(p0, alpha)
        if i > 0:
            _add_idle(p, rng, 0.5)
        plans.append(p)
    return plans, {"circle_radius_m": float(radius), "circle_mode": mode, "circle_direction": int(direction)}


def _rotate_plan(plan: _Plan, alpha: float) -> _Plan:
    """The plan turned by ``alpha`` about the origin of the (x, z) plane (positions angle + alpha)."""
    c, s = math.cos(alpha), math.sin(alpha)
    rot = np.array([[c, -s], [s, c]])
    p = plan.copy()
    p.init_ref = p.init_ref @ rot.T
    p.init_yaw = p.init_yaw - alpha
    p.cur_ref = p.cur_ref @ rot.T
    p.cur_yaw = p.cur_yaw - alpha
    for st in p.steps:
        st.ref = rot @ st.ref
        st.yaw = st.yaw - alpha
    return p


_SCENES = {
    "mirror": _scene_mirror,
    "lead_follow": _scene_lead_follow,
    "turn_taking": _scene_turn_taking,
    "approach_greet": _scene_approach_greet,
    "circle_dance": _scene_circle_dance,
}


# ---------------------------------------------------------------------------------------------- tracks + IK


@dataclass
class _Ground:
    """Skeleton-independent tracks of one person: feet and pelvis reference."""

    ref: np.ndarray  # [2, T, 2] foot standing references (x, z)
    yaw: np.ndarray  # [2, T] foot headings
    lift: np.ndarray  # [2, T] swing height of the foot joint (m)
    pitch: np.ndarray  # [2, T] foot pitch about the foot joint (heel up > 0)
    swing: np.ndarray  # [2, T] bool
    pel_xz: np.ndarray  # [T, 2]
    pel_yaw: np.ndarray  # [T]
    support: np.ndarray  # [T] smoothed +1 left-only support, -1 right-only, 0 double/standing
    single: np.ndarray  # [T] smoothed |support|
    walk: np.ndarray  # [T] 0 standing .. ~1 walking
    d_fwd: np.ndarray  # [T] left-minus-right foot reference along the heading (m)


def _ground(plan: _Plan) -> _Ground:
    T, t = plan.T, plan.t
    ref = np.empty((2, T, 2))
    yaw = np.empty((2, T))
    lift = np.zeros((2, T))
    pitch = np.zeros((2, T))
    swing = np.zeros((2, T), dtype=bool)
    for side in (LEFT, RIGHT):
        ref[side] = plan.init_ref[side]
        yaw[side] = plan.init_yaw[side]
        prev_ref, prev_yaw, prev_land = plan.init_ref[side], float(plan.init_yaw[side]), -np.inf
        for st in (s for s in plan.steps if s.side == side):
            span = st.t_land - st.t_lift
            after = t >= st.t_land
            ref[side, after] = st.ref
            yaw[side, after] = st.yaw
            inside = (t > st.t_lift) & (t < st.t_land)
            u = (t[inside] - st.t_lift) / span
            # The foot rises almost vertically (full clearance by u = 0.25), travels horizontally only while it is
            # up (u in [0.2, 0.8]) and comes down vertically, so a foot near the floor never moves horizontally:
            # ground-truth foot sliding stays near zero under a height-threshold contact test.
            m = _minjerk(np.clip((u - 0.2) / 0.6, 0.0, 1.0))
            ref[side, inside] = prev_ref + m[:, None] * (st.ref - prev_ref)
            yaw[side, inside] = prev_yaw + m * (st.yaw - prev_yaw)
            lift[side, inside] = (st.clearance * _smoothstep(np.clip(u / 0.25, 0.0, 1.0))
                                  * _smoothstep(np.clip((1.0 - u) / 0.2, 0.0, 1.0)))
            swing[side, inside] = True
            heel = min(0.4, 0.3 * float(np.linalg.norm(st.ref - prev_ref)))
            ho = min(0.25, 0.5 * (st.t_lift - prev_land))
            if heel > 0 and ho > 0:  # heel-off before the lift, back to flat early in the swing
                before = (t > st.t_lift - ho) & (t <= st.t_lift)
                pitch[side, before] = heel * _smoothstep((t[before] - st.t_lift + ho) / ho)
                pitch[side, inside] = heel * (1.0 - _smoothstep(u / 0.6))
            prev_ref, prev_yaw, prev_land = st.ref, st.yaw, st.t_land
    pel_xz = _smooth(0.5 * (ref[0] + ref[1]), 4.0)
    mean_yaw = np.arctan2(np.sin(yaw[0]) + np.sin(yaw[1]), np.cos(yaw[0]) + np.cos(yaw[1]))
    pel_yaw = _smooth(np.unwrap(mean_yaw), 4.0)
    sup = np.where(swing[1] & ~swing[0], 1.0, 0.0) - np.where(swing[0] & ~swing[1], 1.0, 0.0)
    fwd = np.stack([np.sin(pel_yaw), np.cos(pel_yaw)], -1)
    d_fwd = ((ref[0] - ref[1]) * fwd).sum(-1)
    return _Ground(
        ref,
        yaw,
        lift,
        pitch,
        swing,
        pel_xz,
        pel_yaw,
        _smooth(sup, 4.0),
        _smooth(np.abs(sup), 3.0),
        np.clip(_smooth(np.abs(sup), 12.0) * 1.5, 0.0, 1.0),
        d_fwd,
    )


def _solve_leg(leg: _Leg, R_p, hip, toe, R_foot, knee_dir):
    """Two-bone IK: local rotations (hip, knee, ankle) ``[T, 3, 3]`` putting the foot joint at ``toe[T, 3]`` with
    world orientation ``R_foot``; ``knee_dir[T, 3]`` is the direction of the knee axis (the foot's left)."""
    ankle = toe - np.einsum("tij,j->ti", R_foot, leg.foot)
    d_vec = ankle - hip
    dist = np.linalg.norm(d_vec, axis=-1)
    theta = leg.knee_angle(dist)
    R_knee = _rot(0, theta)
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
class _Pose:
    root_R: np.ndarray  # [T, 3, 3]
    root_pos: np.ndarray  # [T, 3] world pelvis
    body: np.ndarray  # [T, 21, 3, 3] local rotations of joints 1..21
    hands: np.ndarray  # [T, 30, 3, 3]
    ik_error: float


def _left_arm(p: dict[str, np.ndarray], s: str):
    """Local rotations (collar, shoulder, elbow, wrist) ``[T, 3, 3]`` of an arm built with the left-arm law."""
    collar = _rot(1, -p[s + "collar_fwd"]) @ _rot(2, p[s + "collar_up"])
    shoulder = _rot(0, -p[s + "sh_flex"]) @ _rot(2, -p[s + "sh_down"]) @ _rot(0, p[s + "sh_twist"])
    elbow = _rot(1, -p[s + "elbow"])
    wrist = _rot(2, -p[s + "wrist"])
    return collar, shoulder, elbow, wrist


def _left_hand(curl: np.ndarray) -> np.ndarray:
    """Finger rotations ``[T, 15, 3, 3]`` of a left hand curled by ``curl[T]`` (index, middle, pinky, ring,
    thumb; three joints each)."""
    out = []
    for finger in range(5):
        for k, w in enumerate((0.8, 1.0, 0.7)):
            if finger < 4:
                out.append(_rot(2, -curl * w * (1.0 + 0.15 * finger)))
            else:
                out.append(_rot(1, 0.2 * curl) @ _rot(2, -0.3 * curl * w))
    return np.stack(out, 1)


def _solve_person(plan: _Plan, g: _Ground, skel: _Skeleton, look_target: np.ndarray | None) -> _Pose:
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
    R_p = _rot(1, yaw_p) @ _rot(0, p["pelvis_pitch"] + 0.04 * g.walk) @ _rot(2, p["pelvis_roll"])
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
        txz = g.ref[side] + _rotate_xz(np.broadcast_to(off[[0, 2]], (T, 2)), g.yaw[side])
        toes.append(np.stack([txz[:, 0], TOE_HEIGHT + g.lift[side], txz[:, 1]], -1))
        R_feet.append(_rot(1, g.yaw[side]) @ _rot(0, g.pitch[side]))
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
        drop = _smooth(_max_filter(need, int(2 * sigma) + 1), sigma)
        root[:, 1] -= np.maximum(drop, need) + 1e-4 * (need > 0)

    body = np.tile(np.eye(3), (T, 21, 1, 1))
    err = 0.0
    for side in (LEFT, RIGHT):
        leg = skel.legs[side]
        hip = root + np.einsum("tij,j->ti", R_p, leg.hip_off)
        h, k, a, e = _solve_leg(leg, R_p, hip, toes[side], R_feet[side], knee_dirs[side])
        body[:, _HIP[side] - 1], body[:, _KNEE[side] - 1], body[:, _ANKLE[side] - 1] = h, k, a
        body[:, _FOOT[side] - 1] = _rot(0, -g.pitch[side])  # toes stay flat while the heel is up
        err = max(err, float(e.max()))

    if look_target is not None:  # turn the head towards the partner's head
        head = root + np.einsum("tij,j->ti", _rot(1, yaw_p), skel.head_off)
        v = look_target - head
        want = np.arctan2(v[:, 0], v[:, 2])
        rel = _wrap(want - yaw_p - p["spine_yaw"])
        p["head_yaw"] += np.clip(rel, -1.1, 1.1)
        p["head_pitch"] += np.clip(np.arctan2(-v[:, 1], np.hypot(v[:, 0], v[:, 2])), -0.4, 0.4)

    for j, f in zip(_SPINE, (0.3, 0.35, 0.35)):
        body[:, j - 1] = (
            _rot(1, f * p["spine_yaw"]) @ _rot(0, f * p["spine_pitch"]) @ _rot(2, f * p["spine_roll"])
        )
    for j, f in ((_NECK, 0.4), (_HEAD, 0.6)):
        body[:, j - 1] = (
            _rot(1, f * p["head_yaw"]) @ _rot(0, f * p["head_pitch"]) @ _rot(2, f * p["head_roll"])
        )
    hands = []
    for side, s in enumerate(_SIDES):
        rots = _left_arm(p, s)
        hand = _left_hand(p[s + "finger"])
        if side == RIGHT:
            rots = [_mirror_rot(r) for r in rots]
            hand = _mirror_rot(hand)
        for j, r in zip((_COLLAR[side], _SHOULDER[side], _ELBOW[side], _WRIST[side]), rots):
            body[:, j - 1] = r
        hands.append(hand)
    return _Pose(R_p, root, body, np.concatenate(hands, 1), err)


# ---------------------------------------------------------------------------------------------- public API


_DEFAULT_BODY = None


def _default_body():
    global _DEFAULT_BODY
    if _DEFAULT_BODY is None:
        from magnet.body import load_body_model

        _DEFAULT_BODY = load_body_model(None, warn=False)
    return _DEFAULT_BODY


def _rest_joints(body_model, betas: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return body_model.rest_joints(torch.as_tensor(betas, dtype=torch.float64)).cpu().numpy()


def _check_args(scenario: str, num_frames: int | None, num_persons: int | None) -> None:
    if scenario not in SCENARIOS:
        raise ConfigError(f"unknown synthetic scenario '{scenario}'; choose one of {', '.join(SCENARIOS)}")
    if num_frames is not None and (int(num_frames) != num_frames or num_frames < 30):
        raise ConfigError(f"num_frames must be an integer >= 30 (1 s at 30 fps), got {num_frames!r}")
    if num_persons is not None and num_persons not in PERSON_COUNTS[scenario]:
        raise ConfigError(
            f"scenario '{scenario}' supports {list(PERSON_COUNTS[scenario])} persons, got num_persons={num_persons!r}"
        )


def _synthesize(scenario: str, seed: int, num_frames: int | None, num_persons: int | None, body_model):
    """Core of :func:`generate_sequence`: numpy arrays of the clip (rotation matrices) and its meta data."""
    _check_args(scenario, num_frames, num_persons)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, SCENARIOS.index(scenario), RNG_STREAM])
    T = (
        int(num_frames)
        if num_frames is not None
        else int(rng.integers(DEFAULT_FRAMES[0], DEFAULT_FRAMES[1] + 1))
    )
    if num_persons is None:
        num_persons = {
            "mirror": 2,
            "lead_follow": 1 if rng.random() < 0.25 else 2,
            "turn_taking": 2,
            "approach_greet": 2,
            "circle_dance": int(rng.integers(3, 5)),
        }[scenario]
    P = int(num_persons)
    body_model = body_model if body_model is not None else _default_body()

    betas = np.zeros((P, 10))
    betas[:, 0] = rng.uniform(-2.0, 2.0, P)
    betas[:, 1:] = np.clip(rng.normal(0.0, 0.6, (P, 9)), -2.0, 2.0)
    rest = _rest_joints(body_model, betas)  # [P, 55, 3]
    skels = [_Skeleton(rest[i]) for i in range(P)]

    plans, meta = _SCENES[scenario](rng, T, P, [s.leg_length for s in skels])
    grounds = [_ground(p) for p in plans]
    heads = [
        np.stack([g.pel_xz[:, 0], np.full(T, s.stand_height + s.head_off[1]), g.pel_xz[:, 1]], -1)
        for g, s in zip(grounds, skels)
    ]
    poses = [
        _solve_person(plan, g, skel, heads[plan.look_at] if plan.look_at is not None else None)
        for plan, g, skel in zip(plans, grounds, skels)
    ]

    # random placement of the whole scene: a yaw about +y and a horizontal offset
    yaw = rng.uniform(0.0, 2.0 * np.pi)
    R_g = _rot(1, yaw)
    offset = np.array([rng.uniform(-2.0, 2.0), 0.0, rng.uniform(-2.0, 2.0)])
    root_R = np.stack([R_g @ q.root_R for q in poses])  # [P, T, 3, 3]
    root_pos = np.stack([q.root_pos @ R_g.T + offset for q in poses])  # [P, T, 3]
    meta = dict(meta)
    if "circle_radius_m" in meta:
        meta["circle_centre_xz"] = [float(offset[0]), float(offset[2])]
    meta.update(
        {
            "scenario": scenario,
            "seed": int(seed),
            "generator_version": GENERATOR_VERSION,
            "ik_max_error_m": max(q.ik_error for q in poses),
            "scene_yaw": float(yaw),
        }
    )
    return {
        "betas": betas,
        "root_R": root_R,
        "root_pos": root_pos,
        "body": np.stack([q.body for q in poses]),  # [P, T, 21, 3, 3]
        "hands": np.stack([q.hands for q in poses]),  # [P, T, 30, 3, 3]
        "rest_pelvis": rest[:, 0],  # [P, 3]
        "meta": meta,
    }


def _to_axis_angle(R: np.ndarray) -> np.ndarray:
    """Rotation matrices ``[..., 3, 3]`` -> axis-angle ``[..., 3]`` (angle in [0, pi]), numpy float64.

    Through the quaternion (the largest of w, x, y, z is computed first, so every case is well conditioned).
    """
    R = np.asarray(R, dtype=np.float64)
    m00, m11, m22 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
    cands = np.stack(
        [1.0 + m00 + m11 + m22, 1.0 + m00 - m11 - m22, 1.0 - m00 + m11 - m22, 1.0 - m00 - m11 + m22], -1
    )  # 4 * (w^2, x^2, y^2, z^2)
    best = cands.argmax(-1)
    r = np.sqrt(np.maximum(np.take_along_axis(cands, best[..., None], -1)[..., 0], 1e-30))  # 2 |q_best|
    h, k = 0.5 * r, 0.5 / r
    a, b, c = R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]
    d, e, f = R[..., 0, 1] + R[..., 1, 0], R[..., 0, 2] + R[..., 2, 0], R[..., 1, 2] + R[..., 2, 1]
    q = np.stack(
        [
            np.stack([h, a * k, b * k, c * k], -1),
            np.stack([a * k, h, d * k, e * k], -1),
            np.stack([b * k, d * k, h, f * k], -1),
            np.stack([c * k, e * k, f * k, h], -1),
        ],
        -2,
    )
    q = np.take_along_axis(q, best[..., None, None], -2)[..., 0, :]
    q = np.where(q[..., :1] < 0, -q, q)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    v = q[..., 1:]
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(n, q[..., :1])
    scale = np.where(n > 1e-12, angle / np.maximum(n, 1e-12), 2.0)
    return v * scale


def generate_sequence(
    scenario: str,
    seed: int,
    num_frames: int | None = None,
    num_persons: int | None = None,
    *,
    body_model=None,
    name: str | None = None,
):
    """One synthetic clip of ``scenario`` (deterministic for ``seed``).

    Args:
        scenario: one of :data:`SCENARIOS`.
        seed: random seed; the same seed (and arguments) gives identical arrays.
        num_frames: clip length at 30 fps (>= 30); default random in :data:`DEFAULT_FRAMES`.
        num_persons: persons in the clip (``PERSON_COUNTS[scenario]``); default: 2, lead_follow 1 or 2, circle_dance
            3 or 4.
        body_model: the :class:`magnet.body.BodyModel` whose bone lengths the IK uses (default: built-in skeleton,
            or the SMPL-X file named by ``MAGNET_SMPLX_MODEL``).
        name: sequence name (default ``<scenario>_<seed>``).

    Returns:
        ``RawSequence`` with ``betas [P, 10]``, ``global_orient [P, T, 3]``, ``body_pose [P, T, 21, 3]``,
        ``hand_pose [P, T, 30, 3]``, ``transl [P, T, 3]`` (float32, Y-up, 30 fps), ``meta["scenario"]`` and
        scenario details in ``meta`` (e.g. ``turns``, ``mirror_lag_frames``, ``circle_radius_m``).

    Raises:
        ConfigError: unknown scenario, bad ``num_frames`` or a person count the scenario does not support.
    """
    from magnet.data.raw import RawSequence

    out = _synthesize(scenario, seed, num_frames, num_persons, body_model)
    _P, _T = out["root_pos"].shape[:2]
    transl = out["root_pos"] - out["rest_pelvis"][:, None, :]
    return RawSequence(
        name=name or f"{scenario}_{int(seed)}",
        fps=FPS,
        betas=out["betas"].astype(np.float32),
        global_orient=_to_axis_angle(out["root_R"]).astype(np.float32),
        body_pose=_to_axis_angle(out["body"]).astype(np.float32),
        hand_pose=_to_axis_angle(out["hands"]).astype(np.float32),
        transl=transl.astype(np.float32),
        up_axis="y",
        meta=out["meta"],
    )


# ---------------------------------------------------------------------------------------------- dataset


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


def _cache_hit(out: Path, key: dict[str, Any]) -> bool:
    from magnet.data import dataset_files

    try:
        manifest = json.loads((out / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or any(manifest.get(k) != v for k, v in key.items()):
        return False
    files = dataset_files(out, DATASET_NAME)
    return (
        files.hdf5.is_file()
        and files.split_yaml.is_file()
        and files.stats.is_file()
        and files.split_csv_dir.is_dir()
    )


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
    returns at once (cache hit); other arguments, a new generator version or ``force=True`` rebuild. Builds run
    into a temporary directory that replaces the old one only when complete, under a lock file, so concurrent
    or interrupted builds never leave half a dataset.

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
    body_model = body_model if body_model is not None else _default_body()
    key = _manifest_key(num_clips, seed, frames, body_model)
    if not force and _cache_hit(out, key):
        return out
    with _build_lock(data_dir):
        if not force and _cache_hit(out, key):  # another process finished the same build meanwhile
            return out
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
