"""The five interaction scenarios and the gestures they are made of.

Each scenario ``scene(rng, T, P, leg_lengths) -> (plans, meta)`` writes one :class:`~.plan.Plan` per person and
returns scenario details for the clip's meta data:

* ``mirror`` (2 persons): A gestures, side-steps and squats; B, facing A 1-2 m away, is its mirror image (left
  and right swapped) with a lag of 0-4 frames.
* ``lead_follow`` (1-2): A walks a curved path, sometimes pausing; B follows 0.5-0.8 s later about 1.5 m behind
  on the same path (one person: a solo walk).
* ``turn_taking`` (2): facing partners alternate between speaking (gesturing) and listening every 2-4 s.
* ``approach_greet`` (2): walk towards each other from 4-6 m, stop about 1 m apart, one or both wave.
* ``circle_dance`` (2-4): evenly spaced on a circle, stepping round it in sync.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from magnet.data.synthetic.gait import WalkPath, cadence, side_step, walk
from magnet.data.synthetic.plan import (
    FPS,
    LEFT,
    NEGATE_ON_MIRROR,
    RIGHT,
    SIDES,
    Plan,
    add_idle,
    envelope,
    heading_of,
    new_plan,
)

SCENARIOS = ("mirror", "lead_follow", "turn_taking", "approach_greet", "circle_dance")

# Persons per scenario: allowed counts (for ``num_persons``).
PERSON_COUNTS = {
    "mirror": (2,),
    "lead_follow": (1, 2),
    "turn_taking": (2,),
    "approach_greet": (2,),
    "circle_dance": (2, 3, 4),
}


# ---------------------------------------------------------------------------------------------- gestures


def _g_arm_raise(plan, rng, t0, t1, side):
    """Raise one arm forward with rhythmic beats (talking / showing)."""
    t = plan.t
    env = envelope(t, t0, t1)
    f, beat = rng.uniform(1.2, 2.5), rng.uniform(0.1, 0.25)
    plan.add(side + "sh_flex", env * (rng.uniform(0.9, 1.7) + beat * np.sin(2 * np.pi * f * (t - t0))))
    plan.add(side + "elbow", env * rng.uniform(0.2, 0.9))
    plan.add(side + "sh_down", -env * rng.uniform(0.0, 0.4))


def _g_side_raise(plan, rng, t0, t1, sides):
    """Lift the arms sideways (one or both)."""
    env = envelope(plan.t, t0, t1)
    amount, el = rng.uniform(0.8, 1.4), rng.uniform(0.0, 0.3)
    for s in sides:
        plan.add(s + "sh_down", -env * amount)
        plan.add(s + "elbow", env * el)


def _g_wave(plan, rng, t0, t1, side):
    """Wave: upper arm out to the side, forearm up, the forearm swinging side to side."""
    t = plan.t
    env = envelope(t, t0, t1, 0.35)
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
    env = envelope(t, t0, t1)
    f, beat = rng.uniform(1.5, 2.5), rng.uniform(0.1, 0.25)
    flex, el = rng.uniform(0.4, 0.9), rng.uniform(0.8, 1.3)
    for s in SIDES:
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
    env = envelope(plan.t, t0, t1)
    if rng.random() < 0.6:
        plan.add("spine_pitch", env * rng.uniform(0.1, 0.35))
    else:
        plan.add("spine_roll", env * rng.choice([-1, 1]) * rng.uniform(0.08, 0.2))


def _g_twist(plan, rng, t0, t1):
    env = envelope(plan.t, t0, t1)
    a = rng.choice([-1, 1]) * rng.uniform(0.2, 0.5)
    plan.add("spine_yaw", env * a)
    plan.add("head_yaw", env * 0.5 * a)


def _g_head_tilt(plan, rng, t0, t1):
    env = envelope(plan.t, t0, t1)
    plan.add("head_roll", env * rng.choice([-1, 1]) * rng.uniform(0.1, 0.3))


def _g_shrug(plan, rng, t0, t1):
    env = envelope(plan.t, t0, t1, 0.3)
    up = rng.uniform(0.15, 0.3)
    for s in SIDES:
        plan.add(s + "collar_up", env * up)
        plan.add(s + "elbow", env * 0.6)
        plan.add(s + "sh_twist", -env * 0.4)


def _g_squat(plan, rng, t0, t1):
    env = envelope(plan.t, t0, t1, 0.6)
    plan.add("pelvis_dy", -env * rng.uniform(0.1, 0.25))
    plan.add("pelvis_pitch", env * rng.uniform(0.1, 0.3))
    plan.add("pelvis_dz", -env * 0.04)
    plan.add("spine_pitch", env * 0.1)
    for s in SIDES:
        plan.add(s + "sh_flex", env * rng.uniform(0.3, 0.9))


def _speaker_gesture(plan, rng, t0, t1):
    """One 'talking' gesture: always moves the arms, sometimes the head or torso as well."""
    kind = rng.choice(["arm", "open", "open", "arm"])
    if kind == "arm":
        _g_arm_raise(plan, rng, t0, t1, rng.choice(SIDES))
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
    a = new_plan(T, [0.0, 0.0], 0.0, rng, legs[0])
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
            _g_arm_raise(a, rng, t, t1, rng.choice(SIDES))
        elif kind == "side":
            _g_side_raise(a, rng, t, t1, SIDES if rng.random() < 0.5 else (rng.choice(SIDES),))
        elif kind == "wave":
            _g_wave(a, rng, t, t1, rng.choice(SIDES))
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
            t1 = side_step(a, t, [sign, 0.0], rng.uniform(0.2, 0.4), rng.uniform(0.4, 0.55))
        if rng.random() < 0.25 and kind not in ("nod", "step"):
            _g_head_tilt(a, rng, t, t1)
        t = t1 - rng.uniform(0.0, 0.3) + rng.uniform(0.05, 0.5)
    lag = int(rng.integers(0, 5))
    b = _mirror_plan(a, dist, lag)
    return [a, b], {"mirror_lag_frames": lag, "mirror_distance_m": float(dist)}


def _mirror_plan(a: Plan, dist: float, lag: int) -> Plan:
    """The mirror image of ``a`` in the plane z = dist / 2 (left and right swapped), delayed by ``lag`` frames."""

    def reflect(p):
        return np.array([p[0], dist - p[1]])

    def shift(x):
        return x if lag == 0 else np.concatenate([np.repeat(x[:1], lag), x[:-lag]])

    params = {}
    for name, v in a.params.items():
        if name[:2] in SIDES:
            src = ("r_" if name[:2] == "l_" else "l_") + name[2:]
            params[name] = shift(a.params[src])
        else:
            params[name] = shift(-v if name in NEGATE_ON_MIRROR else v)
    init_ref = np.stack([reflect(a.init_ref[RIGHT]), reflect(a.init_ref[LEFT])])
    init_yaw = np.array([np.pi - a.init_yaw[RIGHT], np.pi - a.init_yaw[LEFT]])
    b = Plan(a.T, init_ref, init_yaw, dict(a.style), params)
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

    path = WalkPath([0.0, 0.0], 0.0, path_len, curvature, back=offset + 1.0)
    a = new_plan(T, path.point(0.0), path.heading(0.0), rng, legs[0])
    t = rng.uniform(0.2, 0.8)
    t_end = dur - rng.uniform(0.0, 1.0)
    s = 0.0
    pause = P == 1 and rng.random() < 0.5 or P == 2 and rng.random() < 0.25
    if pause and dur > 4.0:
        t, s = walk(
            a, path, s, path_len, t, t + rng.uniform(0.35, 0.55) * (t_end - t), speed, int(rng.integers(2))
        )
        t += rng.uniform(0.6, 1.5)
    walk(a, path, s, path_len, t, t_end, speed, int(rng.integers(2)))
    plans = [a]
    meta: dict[str, Any] = {"solo": P == 1}
    if P == 2:
        b = new_plan(T, path.point(-offset), path.heading(-offset), rng, legs[1])
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
        new_plan(T, ra, rng.uniform(-0.25, 0.25), rng, legs[0]),
        new_plan(T, rb, np.pi + rng.uniform(-0.25, 0.25), rng, legs[1]),
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
        ts = 1.0 / cadence(v, {"cadence": 0.95 * math.sqrt(0.78 / legs[i])})
        budget = dur - starts[i] - greet - 0.3
        d_max = max((budget / ts - 1.5) * v * ts, 0.3)
        dists.append(min(rng.uniform(1.5, 2.5), d_max))
        speeds.append(v)
    d0 = final + sum(dists)
    plans = []
    ends = []
    for i, (start, heading) in enumerate((([0.0, 0.0], 0.0), ([0.0, d0], np.pi))):
        path = WalkPath(start, heading, dists[i] + 1.0, lambda s: np.zeros_like(s))
        p = new_plan(T, path.point(0.0), heading, rng, legs[i])
        v = speeds[i]
        end, _ = walk(p, path, 0.0, dists[i], starts[i], dur, lambda k, v=v: v, int(rng.integers(2)))
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
        p0 = new_plan(T, on_circle(theta0), facing_centre(theta0), rng, legs[0])
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
        for s in SIDES:
            p0.add(s + "sh_down", -rng.uniform(0.3, 0.55) + 0.05 * bounce)
            p0.add(s + "sh_flex", rng.uniform(0.2, 0.5))
    else:
        v = rng.uniform(0.6, 1.0)
        sign = direction

        def curvature(s):
            return np.full_like(s, -sign / radius)

        heading = heading_of(sign * np.array([-math.sin(theta0), math.cos(theta0)]))
        path = WalkPath(on_circle(theta0), heading, v * dur + 2.0, curvature)
        p0 = new_plan(T, path.point(0.0), heading, rng, legs[0])
        walk(
            p0,
            path,
            0.0,
            1e9,
            rng.uniform(0.2, 0.6),
            dur - rng.uniform(0.0, 0.8),
            lambda k: v,
            int(rng.integers(2)),
        )
        for s in SIDES:
            p0.add(s + "sh_down", -rng.uniform(0.1, 0.4))
    if rng.random() < 0.4:  # everybody raises the arms together once
        t0 = rng.uniform(0.3, 0.7) * dur
        _g_side_raise(p0, rng, t0, t0 + rng.uniform(0.8, 1.5), SIDES)
    plans = []
    for i in range(P):
        alpha = 2 * np.pi * i / P
        p = _rotate_plan(p0, alpha)
        if i > 0:
            add_idle(p, rng, 0.5)
        plans.append(p)
    return plans, {"circle_radius_m": float(radius), "circle_mode": mode, "circle_direction": int(direction)}


def _rotate_plan(plan: Plan, alpha: float) -> Plan:
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


SCENES = {
    "mirror": _scene_mirror,
    "lead_follow": _scene_lead_follow,
    "turn_taking": _scene_turn_taking,
    "approach_greet": _scene_approach_greet,
    "circle_dance": _scene_circle_dance,
}
