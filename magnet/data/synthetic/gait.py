"""Walking: footsteps planned along a path, and the skeleton-independent tracks of the feet and the pelvis.

:func:`walk` plans footsteps from standing towards a goal on a :class:`WalkPath` (step length and cadence
follow the speed; the trailing foot closes at the end); :func:`side_step` steps sideways. :func:`ground_tracks`
turns a plan's steps into per-frame tracks: a planted foot keeps its world position, a swing foot rises almost
vertically, travels only while it is up and lands vertically (so a foot near the floor never slides), the heel
lifts before toe-off, and the pelvis follows the smoothed mid-point of the feet. The IK (:mod:`.ik`) puts the
feet on these tracks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from magnet.data.synthetic.plan import LEFT, RIGHT, Plan, minjerk, smooth, smoothstep


class WalkPath:
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


def cadence(v: float, style: dict[str, float]) -> float:
    """Steps per second at speed ``v`` m/s (step length = v / cadence grows with speed)."""
    return style["cadence"] * (1.55 + 0.55 * v)


def walk(
    plan: Plan,
    path: WalkPath,
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
        ts = 1.0 / cadence(v, plan.style)
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


def side_step(plan: Plan, t0: float, direction, dist: float, step_time: float) -> float:
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


# ---------------------------------------------------------------------------------------------- tracks


@dataclass
class Ground:
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


def ground_tracks(plan: Plan) -> Ground:
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
            m = minjerk(np.clip((u - 0.2) / 0.6, 0.0, 1.0))
            ref[side, inside] = prev_ref + m[:, None] * (st.ref - prev_ref)
            yaw[side, inside] = prev_yaw + m * (st.yaw - prev_yaw)
            lift[side, inside] = (st.clearance * smoothstep(np.clip(u / 0.25, 0.0, 1.0))
                                  * smoothstep(np.clip((1.0 - u) / 0.2, 0.0, 1.0)))
            swing[side, inside] = True
            heel = min(0.4, 0.3 * float(np.linalg.norm(st.ref - prev_ref)))
            ho = min(0.25, 0.5 * (st.t_lift - prev_land))
            if heel > 0 and ho > 0:  # heel-off before the lift, back to flat early in the swing
                before = (t > st.t_lift - ho) & (t <= st.t_lift)
                pitch[side, before] = heel * smoothstep((t[before] - st.t_lift + ho) / ho)
                pitch[side, inside] = heel * (1.0 - smoothstep(u / 0.6))
            prev_ref, prev_yaw, prev_land = st.ref, st.yaw, st.t_land
    pel_xz = smooth(0.5 * (ref[0] + ref[1]), 4.0)
    mean_yaw = np.arctan2(np.sin(yaw[0]) + np.sin(yaw[1]), np.cos(yaw[0]) + np.cos(yaw[1]))
    pel_yaw = smooth(np.unwrap(mean_yaw), 4.0)
    sup = np.where(swing[1] & ~swing[0], 1.0, 0.0) - np.where(swing[0] & ~swing[1], 1.0, 0.0)
    fwd = np.stack([np.sin(pel_yaw), np.cos(pel_yaw)], -1)
    d_fwd = ((ref[0] - ref[1]) * fwd).sum(-1)
    return Ground(
        ref,
        yaw,
        lift,
        pitch,
        swing,
        pel_xz,
        pel_yaw,
        smooth(sup, 4.0),
        smooth(np.abs(sup), 3.0),
        np.clip(smooth(np.abs(sup), 12.0) * 1.5, 0.0, 1.0),
        d_fwd,
    )
