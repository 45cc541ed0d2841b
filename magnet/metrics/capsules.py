"""Inter-person capsule penetration (spec 5.2 "Penetration").

Each person's body is 13 capsules (segment + radius) on SMPL-X joint indices, joint 0 being the pelvis (the
root position). For every frame, every person pair p < q and every capsule pair (i of p, j of q), the depth is
``max(0, r_i + r_j - d)`` with ``d`` the exact closest distance between the two segments. Lower-arm vs
lower-arm pairs (4 combinations) are ignored and depths below 0.05 m are set to 0.

Outputs (metres where dimensional): ``avg_total_penetration`` = mean over (frame, pair) with any depth > 0 of
the summed depth; ``avg_max_depth`` = mean over the same set of the largest depth; ``overall_max_depth``;
``penetrating_frames`` = frames where any pair penetrates; ``total_frames``; ``penetration_ratio`` = their
ratio. The averages are 0 when nothing penetrates (as in the reference). A "frame" is one sample x time row.
``mode="reference"`` uses every 10th row when there are more than 10^6 rows (the reference's shortcut);
``"fixed"`` uses all rows (computed in chunks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from magnet.errors import DataError
from magnet.metrics._utils import check_mode, clip_list, to_float64

__all__ = [
    "CAPSULES",
    "IGNORED_CAPSULE_PAIRS",
    "MIN_DEPTH",
    "Capsule",
    "penetration",
    "penetration_from_sums",
    "penetration_sums",
    "segment_distance",
]


class Capsule(NamedTuple):
    """A body capsule between SMPL-X joints ``a`` and ``b`` (0 = pelvis) with ``radius`` in metres."""

    name: str
    a: int
    b: int
    radius: float


CAPSULES: tuple[Capsule, ...] = (
    Capsule("torso_lower", 0, 3, 0.12),
    Capsule("torso_middle", 3, 6, 0.11),
    Capsule("torso_upper", 6, 9, 0.10),
    Capsule("neck", 9, 12, 0.06),
    Capsule("head", 12, 15, 0.09),
    Capsule("left_upper_arm", 16, 18, 0.05),
    Capsule("left_lower_arm", 18, 20, 0.04),
    Capsule("right_upper_arm", 17, 19, 0.05),
    Capsule("right_lower_arm", 19, 21, 0.04),
    Capsule("left_upper_leg", 1, 4, 0.07),
    Capsule("left_lower_leg", 4, 7, 0.06),
    Capsule("right_upper_leg", 2, 5, 0.07),
    Capsule("right_lower_leg", 5, 8, 0.06),
)
# (capsule of person p, capsule of person q) pairs that never count
IGNORED_CAPSULE_PAIRS: tuple[tuple[str, str], ...] = (
    ("left_lower_arm", "right_lower_arm"),
    ("right_lower_arm", "left_lower_arm"),
    ("left_lower_arm", "left_lower_arm"),
    ("right_lower_arm", "right_lower_arm"),
)
MIN_DEPTH = 0.05  # metres; shallower depths are set to 0
SUBSAMPLE_ROWS = 1_000_000  # reference mode: above this many rows, every 10th row is used
SUM_KEYS = ("penetrating_pairs", "sum_total", "sum_max", "overall_max", "penetrating_frames", "total_frames")


def segment_distance(p1: Tensor, q1: Tensor, p2: Tensor, q2: Tensor, eps: float = 1e-12) -> Tensor:
    """Exact closest distance between segments ``p1-q1`` and ``p2-q2`` (all ``[..., 3]``, broadcast) -> ``[...]``.

    Minimises ``|p1 + s u - p2 - t v|`` over s, t in [0, 1]: the unconstrained optimum for s (0 for parallel
    segments) is clamped, t is solved for it and clamped, and s is re-solved when t was clamped. Segments
    shorter than sqrt(eps) are treated as points.
    """
    u, v, w = q1 - p1, q2 - p2, p1 - p2
    a = (u * u).sum(-1)
    b = (u * v).sum(-1)
    c = (v * v).sum(-1)
    d = (u * w).sum(-1)
    e = (v * w).sum(-1)
    one = torch.ones_like(a)
    point_a, point_b = a <= eps, c <= eps
    a_safe = torch.where(point_a, one, a)
    c_safe = torch.where(point_b, one, c)
    det = a * c - b * b
    parallel = det <= 1e-12 * a * c
    s = torch.where(parallel, torch.zeros_like(a), (b * e - c * d) / torch.where(parallel, one, det)).clamp(0, 1)
    t = (b * s + e) / c_safe
    clamped = (t < 0) | (t > 1)
    t = t.clamp(0, 1)
    s = torch.where(clamped, ((b * t - d) / a_safe).clamp(0, 1), s)
    # degenerate segments: point vs segment, segment vs point, point vs point
    s = torch.where(point_b, (-d / a_safe).clamp(0, 1), s)
    t = torch.where(point_b, torch.zeros_like(t), t)
    s = torch.where(point_a, torch.zeros_like(s), s)
    t = torch.where(point_a & ~point_b, (e / c_safe).clamp(0, 1), t)
    return torch.linalg.vector_norm(w + s[..., None] * u - t[..., None] * v, dim=-1)


def _capsule_tables(device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    ia = torch.tensor([c.a for c in CAPSULES], device=device)
    ib = torch.tensor([c.b for c in CAPSULES], device=device)
    radius = torch.tensor([c.radius for c in CAPSULES], dtype=torch.float64, device=device)
    names = [c.name for c in CAPSULES]
    ignore = torch.zeros(len(CAPSULES), len(CAPSULES), dtype=torch.bool, device=device)
    for x, y in IGNORED_CAPSULE_PAIRS:
        ignore[names.index(x), names.index(y)] = True
    return ia, ib, radius, ignore


def _rows(joints: Tensor) -> Tensor:
    x = to_float64(joints, "joints", min_dim=3)
    if x.shape[-1] != 3 or x.shape[-2] < 22:
        raise DataError(f"penetration needs SMPL-X joints [..., P, J>=22, 3] with joint 0 = pelvis, got "
                        f"{tuple(x.shape)}; prepend the root position to the 21 body joints")
    return x[..., :22, :].reshape(-1, x.shape[-3], 22, 3)


def penetration_sums(joints: Tensor, min_depth: float = MIN_DEPTH, chunk_size: int = 1024) -> dict[str, Tensor]:
    """Sums over rows of ``joints [..., P, J>=22, 3]`` (SMPL-X order, joint 0 = pelvis; leading axes = rows).

    Keys (0-dim float64): ``penetrating_pairs`` (#(row, pair) with depth), ``sum_total``, ``sum_max``,
    ``overall_max``, ``penetrating_frames``, ``total_frames``.
    """
    x = _rows(joints)
    n, num_persons = x.shape[0], x.shape[1]
    zero = torch.zeros((), dtype=torch.float64, device=x.device)
    out = {k: zero.clone() for k in SUM_KEYS}
    out["total_frames"] = zero + n
    if num_persons < 2 or n == 0:
        return out
    ia, ib, radius, ignore = _capsule_tables(x.device)
    pair = torch.combinations(torch.arange(num_persons, device=x.device), r=2)
    rsum = radius[:, None] + radius[None, :]  # [C, C]
    for start in range(0, n, chunk_size):
        rows = x[start:start + chunk_size]
        pa, pb = rows[:, :, ia], rows[:, :, ib]  # [n, P, C, 3]
        dist = segment_distance(pa[:, pair[:, 0], :, None], pb[:, pair[:, 0], :, None],
                                pa[:, pair[:, 1], None, :], pb[:, pair[:, 1], None, :])  # [n, M, C, C]
        depth = (rsum - dist).clamp_min(0.0).masked_fill(ignore, 0.0)
        depth = torch.where(depth >= min_depth, depth, torch.zeros_like(depth))
        total = depth.sum(dim=(-1, -2))  # [n, M]
        worst = depth.amax(dim=(-1, -2))
        hit = total > 0
        out["penetrating_pairs"] += hit.sum()
        out["sum_total"] += total[hit].sum()
        out["sum_max"] += worst[hit].sum()
        out["overall_max"] = torch.maximum(out["overall_max"], worst.max())
        out["penetrating_frames"] += hit.any(dim=1).sum()
    return out


def penetration_from_sums(sums: dict[str, Tensor]) -> dict[str, Tensor]:
    """The six outputs (0-dim tensors) from :func:`penetration_sums` (summed over clips, max for the max)."""
    hits = sums["penetrating_pairs"]
    frames = sums["total_frames"]
    return {
        "avg_total_penetration": torch.where(hits > 0, sums["sum_total"] / hits.clamp_min(1), 0.0 * hits),
        "avg_max_depth": torch.where(hits > 0, sums["sum_max"] / hits.clamp_min(1), 0.0 * hits),
        "overall_max_depth": sums["overall_max"],
        "penetrating_frames": sums["penetrating_frames"],
        "total_frames": frames,
        "penetration_ratio": torch.where(frames > 0, sums["penetrating_frames"] / frames.clamp_min(1), 0.0 * frames),
    }


def penetration(joints: Tensor | Sequence[Tensor], *, mode: str = "fixed", min_depth: float = MIN_DEPTH,
                chunk_size: int = 1024) -> dict[str, float | int]:
    """Capsule penetration between persons of clip(s) ``[..., P, J>=22, 3]`` (see the module docstring).

    All rows of all clips are pooled. ``mode="reference"`` keeps every 10th row when there are more than 10^6.
    """
    check_mode(mode)
    clips = [_rows(c) for c in clip_list(joints, "joints")]
    if len({c.shape[1] for c in clips}) != 1:
        raise DataError(f"clips have different person counts {sorted({c.shape[1] for c in clips})}; "
                        "evaluate them separately")
    rows = torch.cat(clips, dim=0) if len(clips) > 1 else clips[0]
    if mode == "reference" and rows.shape[0] > SUBSAMPLE_ROWS:
        rows = rows[::10]
    out = penetration_from_sums(penetration_sums(rows, min_depth, chunk_size))
    ints = ("penetrating_frames", "total_frames")
    return {k: int(v) if k in ints else float(v) for k, v in out.items()}
