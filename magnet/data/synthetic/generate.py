"""One synthetic clip (:func:`generate_sequence`): a scenario's plans solved on each person's skeleton, placed
in the world and returned as a :class:`magnet.data.raw.RawSequence`."""

from __future__ import annotations

import numpy as np

from magnet.data.synthetic.gait import ground_tracks
from magnet.data.synthetic.ik import Skeleton, solve_person
from magnet.data.synthetic.plan import FPS, rot
from magnet.data.synthetic.scenarios import PERSON_COUNTS, SCENARIOS, SCENES
from magnet.errors import ConfigError

GENERATOR_VERSION = 2  # bump when the motion changes: cached datasets are rebuilt
# Random streams are keyed by this, not by the version, so a motion change keeps every seed's draws (speeds,
# paths, body sizes) and only changes what is done with them.
RNG_STREAM = 1
DEFAULT_FRAMES = (150, 300)


_DEFAULT_BODY = None


def default_body():
    """The body model of :func:`magnet.body.load_body_model` without its warning (``MAGNET_SMPLX_MODEL`` or the
    built-in skeleton), loaded once per process."""
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
    body_model = body_model if body_model is not None else default_body()

    betas = np.zeros((P, 10))
    betas[:, 0] = rng.uniform(-2.0, 2.0, P)
    betas[:, 1:] = np.clip(rng.normal(0.0, 0.6, (P, 9)), -2.0, 2.0)
    rest = _rest_joints(body_model, betas)  # [P, 55, 3]
    skels = [Skeleton(rest[i]) for i in range(P)]

    plans, meta = SCENES[scenario](rng, T, P, [s.leg_length for s in skels])
    grounds = [ground_tracks(p) for p in plans]
    heads = [
        np.stack([g.pel_xz[:, 0], np.full(T, s.stand_height + s.head_off[1]), g.pel_xz[:, 1]], -1)
        for g, s in zip(grounds, skels)
    ]
    poses = [
        solve_person(plan, g, skel, heads[plan.look_at] if plan.look_at is not None else None)
        for plan, g, skel in zip(plans, grounds, skels)
    ]

    # random placement of the whole scene: a yaw about +y and a horizontal offset
    yaw = rng.uniform(0.0, 2.0 * np.pi)
    R_g = rot(1, yaw)
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


def to_axis_angle(R: np.ndarray) -> np.ndarray:
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
        global_orient=to_axis_angle(out["root_R"]).astype(np.float32),
        body_pose=to_axis_angle(out["body"]).astype(np.float32),
        hand_pose=to_axis_angle(out["hands"]).astype(np.float32),
        transl=transl.astype(np.float32),
        up_axis="y",
        meta=out["meta"],
    )
