"""The shared vocabulary of the synthetic generator: constants, numpy helpers and the person plan.

A :class:`Plan` is everything that defines one person's motion independently of the skeleton's bone lengths:
the per-frame motion parameters (:data:`PARAM_NAMES`, radians / metres), the planned footsteps (:class:`Step`),
the gait style and whom the person looks at. Scenarios (:mod:`.scenarios`) write plans, the gait (:mod:`.gait`)
adds footsteps and the IK (:mod:`.ik`) turns a plan into joint rotations.

Conventions: 30 fps, metres, Y-up, the floor at y = 0, a person faces +z in its own frame and the pelvis x axis
is the body's left (SMPL-X). A heading ``yaw`` means the forward direction ``(sin yaw, 0, cos yaw)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

FPS = 30.0
LEFT, RIGHT = 0, 1
SIDES = ("l_", "r_")

# Per-frame motion parameters of a person (radians / metres). Sided ones exist as ``l_<name>`` and ``r_<name>``
# and are defined for the left side; the right side uses the mirror image of the same rotation.
_CENTRAL = ("spine_pitch", "spine_yaw", "spine_roll", "head_pitch", "head_yaw", "head_roll")
_PELVIS = ("pelvis_yaw", "pelvis_pitch", "pelvis_roll", "pelvis_dx", "pelvis_dz", "pelvis_dy")
_SIDED = ("collar_up", "collar_fwd", "sh_flex", "sh_down", "sh_twist", "elbow", "wrist", "finger")
PARAM_NAMES = _CENTRAL + _PELVIS + tuple(s + n for s in SIDES for n in _SIDED)
# parameters whose sign flips under a left/right mirror (yaw, roll and lateral offsets)
NEGATE_ON_MIRROR = frozenset(
    {"spine_yaw", "spine_roll", "head_yaw", "head_roll", "pelvis_yaw", "pelvis_roll", "pelvis_dx"}
)


# ---------------------------------------------------------------------------------------------- numpy helpers


def rot(axis: int, angle) -> np.ndarray:
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


def mirror_rot(R: np.ndarray) -> np.ndarray:
    """Left/right mirror image ``M R M`` (M = diag(-1, 1, 1)) of rotations ``[..., 3, 3]``."""
    return R * _MIRROR_MAT


def rotate_xz(v: np.ndarray, yaw) -> np.ndarray:
    """Rotate horizontal vectors ``v[..., 2]`` = (x, z) by ``yaw[...]`` about +y."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.stack([c * v[..., 0] + s * v[..., 1], -s * v[..., 0] + c * v[..., 1]], -1)


def wrap_angle(a):
    """Angles wrapped to [-pi, pi)."""
    return (np.asarray(a) + np.pi) % (2.0 * np.pi) - np.pi


def smoothstep(u):
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def minjerk(u):
    u = np.clip(u, 0.0, 1.0)
    return u**3 * (10.0 - 15.0 * u + 6.0 * u * u)


def smooth(x: np.ndarray, sigma: float) -> np.ndarray:
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


def max_filter(x: np.ndarray, radius: int) -> np.ndarray:
    """Running maximum of ``x[T]`` over ``[t - radius, t + radius]``."""
    T = x.shape[0]
    pad = np.concatenate([np.full(radius, x[0]), x, np.full(radius, x[-1])])
    out = x.copy()
    for i in range(2 * radius + 1):
        out = np.maximum(out, pad[i : i + T])
    return out


def envelope(t: np.ndarray, t0: float, t1: float, ramp: float = 0.4) -> np.ndarray:
    """0 -> 1 -> 0 window over ``[t0, t1]`` with smooth ramps of ``ramp`` seconds (at most half the window)."""
    ramp = max(min(ramp, 0.5 * (t1 - t0)), 1e-3)
    return smoothstep((t - t0) / ramp) * smoothstep((t1 - t) / ramp)


def smooth_noise(rng: np.random.Generator, t: np.ndarray, freq: float, n: int = 3) -> np.ndarray:
    """Smooth random signal of unit RMS made of ``n`` sinusoids around ``freq`` Hz."""
    out = np.zeros_like(t)
    for _ in range(n):
        f = freq * rng.uniform(0.5, 1.5)
        out += np.sin(2.0 * np.pi * f * t + rng.uniform(0.0, 2.0 * np.pi))
    return out / math.sqrt(n / 2.0)


def heading_of(v) -> float:
    """Heading yaw of a horizontal direction ``(x, z)``."""
    return math.atan2(float(v[0]), float(v[1]))


# ---------------------------------------------------------------------------------------------- plans


@dataclass
class Step:
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
class Plan:
    """Everything that defines one person's motion, independent of the skeleton's bone lengths."""

    T: int
    init_ref: np.ndarray  # [2, 2] (x, z) per foot
    init_yaw: np.ndarray  # [2]
    style: dict[str, float]
    params: dict[str, np.ndarray]  # name -> [T]
    steps: list[Step] = field(default_factory=list)
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
        yaw = prev + float(wrap_angle(yaw - prev))
        ref = np.asarray(ref, dtype=np.float64).copy()
        self.steps.append(Step(side, t_lift, t_land, ref, yaw, self.style["clearance"], arc))
        self.cur_ref[side] = ref
        self.cur_yaw[side] = yaw
        self.free_at = max(self.free_at, t_land)

    def add(self, name: str, values) -> None:
        self.params[name] = self.params[name] + values

    def copy(self) -> Plan:
        return Plan(
            self.T,
            self.init_ref.copy(),
            self.init_yaw.copy(),
            dict(self.style),
            {k: v.copy() for k, v in self.params.items()},
            [Step(s.side, s.t_lift, s.t_land, s.ref.copy(), s.yaw, s.clearance, s.arc) for s in self.steps],
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


def new_plan(T: int, ref, yaw: float, rng: np.random.Generator, leg_length: float) -> Plan:
    """A person standing at ``ref`` facing ``yaw`` with a random posture, gait style and idle motion."""
    ref = np.asarray(ref, dtype=np.float64)
    plan = Plan(
        T,
        np.stack([ref, ref]),
        np.array([yaw, yaw], dtype=np.float64),
        _random_style(rng, leg_length),
        {k: np.zeros(T) for k in PARAM_NAMES},
    )
    # posture: arms hanging at the sides, soft elbows, relaxed fingers
    down, elbow, finger = rng.uniform(1.35, 1.5), rng.uniform(0.15, 0.35), rng.uniform(0.2, 0.5)
    for s in SIDES:
        plan.add(s + "sh_down", down + rng.uniform(-0.04, 0.04))
        plan.add(s + "sh_flex", rng.uniform(-0.05, 0.1))
        plan.add(s + "sh_twist", rng.uniform(-0.1, 0.2))
        plan.add(s + "elbow", elbow + rng.uniform(-0.05, 0.05))
        plan.add(s + "wrist", rng.uniform(0.0, 0.2))
        plan.add(s + "finger", finger)
        plan.add(s + "collar_up", rng.uniform(-0.05, 0.05))
    plan.add("spine_pitch", rng.uniform(-0.03, 0.08))
    plan.add("head_pitch", rng.uniform(-0.05, 0.1))
    add_idle(plan, rng, 1.0)
    return plan


def add_idle(plan: Plan, rng: np.random.Generator, scale: float) -> None:
    """Breathing, weight shifts (sway) and head drift."""
    t = plan.t
    breath = np.sin(2.0 * np.pi * rng.uniform(0.2, 0.3) * t + rng.uniform(0, 2 * np.pi))
    plan.add("spine_pitch", scale * 0.012 * breath)
    for s in SIDES:
        plan.add(s + "collar_up", scale * 0.01 * breath)
    plan.add("pelvis_dx", scale * 0.012 * smooth_noise(rng, t, 0.15))
    plan.add("pelvis_roll", scale * 0.015 * smooth_noise(rng, t, 0.15))
    for side in SIDES:
        plan.add(side + "sh_flex", scale * 0.03 * smooth_noise(rng, t, 0.2))
        plan.add(side + "elbow", scale * 0.03 * smooth_noise(rng, t, 0.2))
    plan.add("head_yaw", scale * 0.08 * smooth_noise(rng, t, 0.1))
    plan.add("head_pitch", scale * 0.04 * smooth_noise(rng, t, 0.12))
