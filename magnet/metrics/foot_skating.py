"""Foot sliding on world joint positions (spec 5.2 "Foot skating", 9 item 14).

A foot is in contact between frames t and t+1 when its height is below the contact threshold in BOTH frames;
it slides when it is in contact and its horizontal (x, z) speed exceeds ``speed_threshold`` (0.05 m/s).

* ``mode="reference"``: threshold y < -0.01 m (absolute; the reference's odd value, below where resting feet sit,
  about +0.01 m after preprocessing); ratio = #(sample, frame, person) with any sliding foot / (S*T*P), i.e. T
  frames in the denominator for T-1 transitions; average speed over the sliding (foot) instances, NaN if none.
* ``mode="fixed"`` (default): threshold y < floor + 0.05 m. Preprocessing puts the floor 0.01 m below the
  lowest cluster of foot-joint heights, so a planted SMPL-X foot joint sits at about +0.01 m; 0.05 m keeps
  planted feet (with a few centimetres of jitter) in contact while excluding the swing phase, and sits just
  above the 0.04 m used for the dataset's contact labels. Ratio denominator = transitions S*(T-1)*P; average
  speed 0.0 when nothing slides.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from magnet.errors import DataError
from magnet.metrics._utils import check_mode, clip_list, to_float64

__all__ = [
    "FIXED_CONTACT_HEIGHT",
    "FOOT_INDICES",
    "REFERENCE_CONTACT_HEIGHT",
    "SLIDE_SPEED",
    "contact_threshold",
    "foot_sliding",
    "foot_sliding_from_sums",
    "foot_sliding_sums",
]

FOOT_INDICES = (9, 10)  # left/right foot in the 21 body-joint array (SMPL-X joints 10 and 11)
REFERENCE_CONTACT_HEIGHT = -0.01  # metres, absolute
FIXED_CONTACT_HEIGHT = 0.05  # metres above the floor
SLIDE_SPEED = 0.05  # m/s
SUM_KEYS = ("sliding_frames", "frames", "transitions", "speed_sum", "sliding_feet")


def contact_threshold(mode: str, floor: float = 0.0, contact_height: float | None = None) -> float:
    """Height (m) below which a foot counts as touching: ``floor + contact_height``; the default height is
    -0.01 m in reference mode and 0.05 m in fixed mode."""
    check_mode(mode)
    if contact_height is None:
        contact_height = REFERENCE_CONTACT_HEIGHT if mode == "reference" else FIXED_CONTACT_HEIGHT
    return float(floor) + float(contact_height)


def foot_sliding_sums(joints: Tensor, foot_indices: Sequence[int] = FOOT_INDICES, fps: float = 30,
                      threshold: float = FIXED_CONTACT_HEIGHT, speed_threshold: float = SLIDE_SPEED
                      ) -> dict[str, Tensor]:
    """Counts for one clip of joints ``[S, T, P, J, 3]`` (or ``[T, P, J, 3]`` = one sample), float64 0-dim:

    ``sliding_frames`` (sample, transition, person) rows with any sliding foot; ``frames`` = S*T*P;
    ``transitions`` = S*(T-1)*P; ``speed_sum`` / ``sliding_feet`` = sum and number of sliding foot speeds.
    """
    x = to_float64(joints, "joints")
    if x.dim() == 4:
        x = x.unsqueeze(0)
    if x.dim() != 5 or x.shape[-1] != 3:
        raise DataError(f"foot sliding needs joints [S, T, P, J, 3], got {tuple(x.shape)}")
    idx = list(foot_indices)
    if not idx or min(idx) < -x.shape[-2] or max(idx) >= x.shape[-2]:
        raise DataError(f"foot indices {idx} are out of range for {x.shape[-2]} joints")
    s, t, p = x.shape[:3]
    feet = x[..., idx, :]  # [S, T, P, F, 3]
    below = feet[..., 1] < threshold
    contact = below[:, 1:] & below[:, :-1]  # [S, T-1, P, F]
    speed = torch.linalg.vector_norm(torch.diff(feet[..., [0, 2]], dim=1), dim=-1) * fps
    sliding = contact & (speed > speed_threshold)

    def f64(v) -> Tensor:
        return torch.as_tensor(v, dtype=torch.float64, device=x.device)

    return {
        "sliding_frames": f64(sliding.any(dim=-1).sum()),
        "frames": f64(s * t * p),
        "transitions": f64(s * max(t - 1, 0) * p),
        "speed_sum": speed[sliding].sum(),
        "sliding_feet": f64(sliding.sum()),
    }


def foot_sliding_from_sums(sums: dict[str, Tensor], mode: str = "fixed") -> dict[str, Tensor]:
    """``foot_sliding_ratio``, ``avg_foot_sliding_vel_m_per_s``, ``sliding_frames``, ``total_frames`` (the
    ratio's denominator) from :func:`foot_sliding_sums` (summed over clips). Values are 0-dim tensors."""
    check_mode(mode)
    denom = sums["frames"] if mode == "reference" else sums["transitions"]
    nan = torch.full_like(denom, float("nan"))
    ratio = torch.where(denom > 0, sums["sliding_frames"] / denom.clamp_min(1.0), nan)
    n = sums["sliding_feet"]
    empty_speed = nan if mode == "reference" else torch.zeros_like(denom)
    speed = torch.where(n > 0, sums["speed_sum"] / n.clamp_min(1.0), empty_speed)
    return {
        "foot_sliding_ratio": ratio,
        "avg_foot_sliding_vel_m_per_s": speed,
        "sliding_frames": sums["sliding_frames"],
        "total_frames": denom,
    }


def foot_sliding(joints: Tensor | Sequence[Tensor], *, foot_indices: Sequence[int] = FOOT_INDICES,
                 fps: float = 30, mode: str = "fixed", floor: float = 0.0, contact_height: float | None = None,
                 speed_threshold: float = SLIDE_SPEED) -> dict[str, float | int]:
    """Foot-sliding ratio and mean sliding speed (m/s) of clip(s) of joints ``[S, T, P, J, 3]``.

    ``foot_indices`` index the joint axis (default (9, 10): the feet in the 21 body-joint array; use (10, 11)
    for arrays that start with the pelvis). Counts are pooled over clips (sum of numerators / sum of
    denominators). Returns ``foot_sliding_ratio``, ``avg_foot_sliding_vel_m_per_s``, ``sliding_frames``,
    ``total_frames``; see the module docstring for the two modes.
    """
    threshold = contact_threshold(mode, floor, contact_height)
    total = None
    for clip in clip_list(joints, "joints"):
        s = foot_sliding_sums(clip, foot_indices, fps, threshold, speed_threshold)
        total = s if total is None else {k: total[k] + s[k] for k in SUM_KEYS}
    out = foot_sliding_from_sums(total, mode)
    return {
        "foot_sliding_ratio": float(out["foot_sliding_ratio"]),
        "avg_foot_sliding_vel_m_per_s": float(out["avg_foot_sliding_vel_m_per_s"]),
        "sliding_frames": int(out["sliding_frames"]),
        "total_frames": int(out["total_frames"]),
    }
