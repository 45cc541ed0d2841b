"""Per-joint features, sample diversity, MPJPE / MPJVE with best-of-k curves, inter-person correlation.

Shapes: a clip of generated samples is ``[S, T, P, ...]`` (S samples, T frames, P persons); its ground truth is
``[T, P, ...]`` or ``[1, T, P, ...]``. Joint positions are world-frame metres, Y-up; the caller does the FK.
Everything is computed in float64. Functions that take "clips" accept one tensor or a list of tensors (one per
clip) and pool them as the reference does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from magnet.errors import DataError
from magnet.metrics._utils import check_mode, clip_list, to_float64

__all__ = [
    "FPS",
    "clip_diversity",
    "clip_error_sums",
    "correlation_from_sums",
    "correlation_sums",
    "default_unit",
    "error_keys",
    "finalize_errors",
    "joint_errors",
    "mean_joint_error",
    "mpjpe",
    "mpjve",
    "person_correlation",
    "position_features",
    "sample_diversity",
    "sample_diversity_seq",
    "velocity_features",
]

FPS = 30
# a feature dim counts as constant when its variance is below this fraction of its mean square
CONSTANT_REL_VAR = 1e-12


# ----------------------------------------------------------------------------------------------------- features
def position_features(joints: Tensor) -> Tensor:
    """Joint positions ``[..., J, 3]`` -> flattened feature ``[..., 3J]`` (the reference ``g`` for J = 21)."""
    if joints.dim() < 2 or joints.shape[-1] != 3:
        raise DataError(f"joint positions must have shape [..., J, 3], got {tuple(joints.shape)}")
    return joints.reshape(*joints.shape[:-2], joints.shape[-2] * 3)


def velocity_features(x: Tensor, fps: float = FPS) -> Tensor:
    """Frame-to-frame difference times fps along the time axis of ``x[..., T, P, F]`` -> ``[..., T-1, P, F]``.

    Applied to ``position_features`` this is the reference ``k`` feature (m/s).
    """
    if x.dim() < 3:
        raise DataError(f"velocity features need shape [..., T, P, F], got {tuple(x.shape)}")
    return torch.diff(x, dim=-3) * fps


# ---------------------------------------------------------------------------------------------------- diversity
def _samples(x, name: str) -> Tensor:
    t = to_float64(x, name)
    if t.dim() != 4:
        raise DataError(f"{name} must have shape [S, T, P, D], got {tuple(t.shape)}")
    if t.shape[0] < 2:
        raise DataError(f"{name} has {t.shape[0]} sample; sample diversity needs at least 2 samples per clip")
    return t


def clip_diversity(samples: Tensor) -> Tensor:
    """Diversity of one clip ``[S, T, P, D]`` (S >= 2): unbiased variance across samples at every
    (frame, person, dim), averaged over frame x person, summed over the D dims. 0-dim float64 tensor."""
    x = _samples(samples, "samples")
    return torch.var(x, dim=0).mean(dim=(0, 1)).sum()


def sample_diversity(samples: Tensor | Sequence[Tensor]) -> float:
    """``div_sample``: :func:`clip_diversity` averaged over clips (each clip ``[S, T, P, D]``).

    The feature dim is the real D of the input (the reference hard-codes 63; identical for 63-dim features).
    """
    clips = clip_list(samples, "samples")
    return float(sum(clip_diversity(c) for c in clips) / len(clips))


def sample_diversity_seq(samples: Tensor | Sequence[Tensor], fps: int = FPS, mode: str = "fixed") -> float:
    """``solo_seq.div_sample`` of the reference: diversity over whole-second chunks.

    The reference reshapes the first ``T // fps * fps`` frames into chunks of ``fps * D`` values; that equals
    ``fps * clip_diversity(clip[:, :T // fps * fps])``, i.e. about 30x ``div_sample`` by construction.
    Clips shorter than one second are skipped; ``mode="reference"`` still counts them in the average's
    denominator (reference quirk), ``"fixed"`` averages over the clips actually used (NaN if none).
    """
    check_mode(mode)
    clips = clip_list(samples, "samples")
    values = []
    for c in clips:
        x = _samples(c, "samples")
        t_used = x.shape[1] // fps * fps
        if t_used > 0:
            values.append(fps * clip_diversity(x[:, :t_used]))
    denom = len(clips) if mode == "reference" else len(values)
    return float(sum(values) / denom) if denom else float("nan")


# ----------------------------------------------------------------------------------------------- MPJPE / MPJVE
def _unit_scale(unit: str) -> float:
    if unit == "m":
        return 1.0
    if unit == "mm":
        return 1000.0
    raise DataError(f"unknown length unit {unit!r}; use 'm' or 'mm'")


def error_keys(name: str, unit: str, velocity: bool) -> tuple[str, str]:
    """Output keys carrying the unit: e.g. ``("mpjpe_mm", "mpjpe_best_list_mm")`` or
    ``("mpjve_m_per_s", "mpjve_best_list_m_per_s")``."""
    suffix = f"{unit}_per_s" if velocity else unit
    return f"{name}_{suffix}", f"{name}_best_list_{suffix}"


def default_unit(mode: str, unit: str | None) -> str:
    """The length unit: ``unit`` if given, else metres for ``"reference"`` and millimetres for ``"fixed"``."""
    check_mode(mode)
    if unit is None:
        unit = "m" if mode == "reference" else "mm"
    _unit_scale(unit)
    return unit


def _pred_gt(pred, gt, what: str) -> tuple[Tensor, Tensor]:
    """``pred [S, T, P, J, 3]`` and ``gt [1, T, P, J, 3]`` in float64, truncated to the shorter clip."""
    p = to_float64(pred, "pred")
    g = to_float64(gt, "gt")
    if g.dim() == 4:
        g = g.unsqueeze(0)
    if p.dim() != 5 or g.dim() != 5 or g.shape[0] != 1 or p.shape[-1] != 3:
        raise DataError(f"{what} needs pred [S, T, P, J, 3] and gt [T, P, J, 3]; got {tuple(p.shape)} and "
                        f"{tuple(g.shape)}")
    if p.shape[2:] != g.shape[2:]:
        raise DataError(f"{what}: pred persons/joints {tuple(p.shape[2:])} do not match gt {tuple(g.shape[2:])}")
    t = min(p.shape[1], g.shape[1])
    return p[:, :t], g[:, :t]


def joint_errors(pred: Tensor, gt: Tensor) -> Tensor:
    """L2 error per joint: ``pred [S, T, P, J, 3]`` vs ``gt [T, P, J, 3]`` (or ``[1, T, P, J, 3]``) ->
    ``[S, T', P, J]`` with ``T' = min`` of the two frame counts (both truncated to the shorter)."""
    p, g = _pred_gt(pred, gt, "MPJPE")
    return torch.linalg.vector_norm(p - g, dim=-1)


def clip_error_sums(pred: Tensor, gt: Tensor, velocity: bool = False, fps: float = FPS
                    ) -> tuple[Tensor, Tensor, Tensor]:
    """Sums for one clip: ``(sum of joint errors, number of errors, per-sample mean error [S])`` in metres
    (m/s with ``velocity=True``: positions are truncated, differenced over time and multiplied by ``fps``)."""
    p, g = _pred_gt(pred, gt, "MPJVE" if velocity else "MPJPE")
    if velocity:
        p, g = torch.diff(p, dim=1) * fps, torch.diff(g, dim=1) * fps
    if p.shape[1] == 0:
        raise DataError(f"{'MPJVE' if velocity else 'MPJPE'}: clip has too few frames "
                        f"({p.shape[1] + int(velocity)}) after truncation to the shorter of pred and gt")
    err = torch.linalg.vector_norm(p - g, dim=-1)
    count = torch.tensor(float(err.numel()), dtype=torch.float64, device=err.device)
    return err.sum(), count, err.flatten(1).mean(dim=1)


def finalize_errors(err_sum: Tensor, count: Tensor, best_sum: Tensor, clips: Tensor, scale: float
                    ) -> tuple[Tensor, Tensor]:
    """Mean error over all elements of all clips and the clip-averaged best-of-k curve, times ``scale``."""
    return err_sum / count * scale, best_sum / clips * scale


def mean_joint_error(pred: Tensor | Sequence[Tensor], gt: Tensor | Sequence[Tensor], *, velocity: bool = False,
                     fps: float = FPS, mode: str = "fixed", unit: str | None = None) -> dict[str, float | list]:
    """MPJPE (``velocity=False``) or MPJPE of velocities = MPJVE; see :func:`mpjpe` / :func:`mpjve`."""
    unit = default_unit(mode, unit)
    preds, gts = clip_list(pred, "pred"), clip_list(gt, "gt")
    if len(preds) != len(gts):
        raise DataError(f"got {len(preds)} generated clips but {len(gts)} ground-truth clips; pass one gt per clip")
    err_sum = count = best_sum = None
    for i, (p, g) in enumerate(zip(preds, gts)):
        s, n, per_sample = clip_error_sums(p, g, velocity, fps)
        best = torch.cummin(per_sample, dim=0).values
        if best_sum is not None and best.shape != best_sum.shape:
            raise DataError(f"clip {i} has {best.shape[0]} samples, earlier clips {best_sum.shape[0]}; "
                            "best-of-k needs the same sample count in every clip")
        err_sum = s if err_sum is None else err_sum + s
        count = n if count is None else count + n
        best_sum = best if best_sum is None else best_sum + best
    mean, curve = finalize_errors(err_sum, count, best_sum, torch.tensor(float(len(preds))), _unit_scale(unit))
    key, key_best = error_keys("mpjve" if velocity else "mpjpe", unit, velocity)
    return {key: float(mean), key_best: [float(v) for v in curve]}


def mpjpe(pred: Tensor | Sequence[Tensor], gt: Tensor | Sequence[Tensor], *, mode: str = "fixed",
          unit: str | None = None) -> dict[str, float | list]:
    """Mean per-joint position error and its best-of-k curve, no alignment.

    ``pred``: clip(s) ``[S, T, P, J, 3]``; ``gt``: matching clip(s) ``[T, P, J, 3]``; each clip is truncated to
    the shorter of the two. The mean is over every (sample, frame, person, joint) error of all clips pooled
    (longer clips weigh more, as in the reference). ``best_list[k-1]`` = mean over clips of the minimum over
    the first k samples of the per-sample mean error. ``mode="reference"`` reports metres, ``"fixed"``
    millimetres; ``unit`` ('m' or 'mm') overrides. Keys carry the unit: ``mpjpe_mm``, ``mpjpe_best_list_mm``.
    """
    return mean_joint_error(pred, gt, velocity=False, mode=mode, unit=unit)


def mpjve(pred: Tensor | Sequence[Tensor], gt: Tensor | Sequence[Tensor], *, fps: float = FPS,
          mode: str = "fixed", unit: str | None = None) -> dict[str, float | list]:
    """Mean per-joint velocity error (velocity = frame difference x fps) with the best-of-k curve.

    Same inputs and aggregation as :func:`mpjpe`; keys ``mpjve_mm_per_s``/``mpjve_best_list_mm_per_s``
    (``m_per_s`` in reference mode). A constant offset between pred and gt gives 0.
    """
    return mean_joint_error(pred, gt, velocity=True, fps=fps, mode=mode, unit=unit)


# ------------------------------------------------------------------------------------------- person correlation
def correlation_sums(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sums for Pearson correlation between persons of ``x[..., P, D]`` (every leading index is one row):
    ``(n[], sum x [P, D], sum x^2 [P, D], sum x_p x_q [M, D])`` with the M = P(P-1)/2 pairs p < q in
    ``torch.combinations`` order."""
    x = to_float64(x, "features", min_dim=2)
    rows = x.reshape(-1, x.shape[-2], x.shape[-1])
    p_idx, q_idx = _pairs(rows.shape[1], rows.device)
    n = torch.tensor(float(rows.shape[0]), dtype=torch.float64, device=rows.device)
    return n, rows.sum(0), (rows * rows).sum(0), (rows[:, p_idx] * rows[:, q_idx]).sum(0)


def _pairs(num_persons: int, device=None) -> tuple[Tensor, Tensor]:
    idx = torch.combinations(torch.arange(num_persons, device=device), r=2)
    return idx[:, 0], idx[:, 1]


def correlation_from_sums(n: Tensor, sx: Tensor, sxx: Tensor, sxy: Tensor, mode: str = "fixed") -> Tensor:
    """Inter-person correlation from :func:`correlation_sums` (0-dim float64; NaN when undefined).

    Per pair p < q: Pearson r of each dim over all rows, averaged over dims; then averaged over pairs.
    A dim is "constant" when its variance is <= 1e-12 x its mean square (exactly 0 up to rounding).
    ``"fixed"``: dims constant for p or q are skipped, pairs with no usable dim are skipped, NaN if nothing is
    left. ``"reference"``: a pair whose whole ``[N, D]`` block is constant for p or q counts as 0.0; otherwise
    a constant dim gives NaN for that pair (as torchmetrics' PearsonCorrCoef does) and the NaN propagates.
    """
    check_mode(mode)
    num = float(n)
    if num < 2 or sx.shape[0] < 2:
        return torch.tensor(float("nan"), dtype=torch.float64, device=sx.device)
    p_idx, q_idx = _pairs(sx.shape[0], sx.device)
    mean = sx / num
    msq = sxx / num
    var = (msq - mean * mean).clamp_min(0.0)
    const = var <= CONSTANT_REL_VAR * msq  # [P, D]
    cov = sxy / num - mean[p_idx] * mean[q_idx]  # [M, D]
    denom = (var[p_idx] * var[q_idx]).sqrt()
    bad = const[p_idx] | const[q_idx]
    r = torch.where(bad, torch.zeros_like(cov), cov / torch.where(bad, torch.ones_like(denom), denom))
    r = r.clamp(-1.0, 1.0)
    if mode == "fixed":
        good = ~bad
        per_pair = (r * good).sum(1) / good.sum(1).clamp_min(1)
        used = good.any(1)
        if not bool(used.any()):
            return torch.tensor(float("nan"), dtype=torch.float64, device=sx.device)
        return per_pair[used].mean()
    # reference: whole-person constancy -> 0.0, single constant dims -> NaN
    d = sx.shape[1]
    all_mean = sx.sum(1) / (num * d)
    all_msq = sxx.sum(1) / (num * d)
    all_var = (all_msq - all_mean * all_mean).clamp_min(0.0)
    person_const = all_var <= CONSTANT_REL_VAR * all_msq  # [P]
    per_pair = torch.where(bad, torch.full_like(r, float("nan")), r).mean(1)
    per_pair = torch.where(person_const[p_idx] | person_const[q_idx], torch.zeros_like(per_pair), per_pair)
    return per_pair.mean()


def person_correlation(features: Tensor | Sequence[Tensor], *, mode: str = "fixed") -> float | None:
    """``corr_gt`` / ``corr_gen``: mean Pearson correlation between persons of features ``[..., P, D]``.

    All rows of all clips (samples x frames) are pooled. Returns ``None`` when P = 1 (the reference skips the
    metric) and, in ``"fixed"`` mode, when no dim varies (see :func:`correlation_from_sums`).
    """
    check_mode(mode)
    clips = clip_list(features, "features")
    total = None
    for i, c in enumerate(clips):
        s = correlation_sums(c)
        if total is not None and s[1].shape != total[1].shape:
            raise DataError(f"clip {i} has persons x dims {tuple(s[1].shape)}, earlier clips "
                            f"{tuple(total[1].shape)}; pooled correlation needs the same shape")
        total = s if total is None else tuple(a + b for a, b in zip(total, s))
    if total[1].shape[0] < 2:
        return None
    value = float(correlation_from_sums(*total, mode=mode))
    if mode == "fixed" and math.isnan(value):
        return None
    return value
