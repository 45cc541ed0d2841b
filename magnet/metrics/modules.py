"""``torchmetrics.Metric`` wrappers: every state is a float64 sum (or max) registered with ``add_state``, so the
metrics accumulate over a dataset and synchronise across DDP ranks. ``compute`` uses the same finalisation code
as the plain functions, so a Metric fed clip by clip equals the function on all clips.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from magnet.errors import DataError
from magnet.metrics import capsules, foot_skating, motion
from magnet.metrics._utils import check_mode, to_float64
from magnet.metrics.fd import (
    FD_EPS,
    FD_STRIDE,
    FD_WINDOW,
    feature_moments,
    frechet_distance_from_moments,
    window_features,
)

__all__ = [
    "MPJPE",
    "MPJVE",
    "FootSliding",
    "FrechetDistance",
    "MeanJointError",
    "Penetration",
    "PersonCorrelation",
    "SampleDiversity",
    "WindowedFrechetDistance",
]


def _zeros(*shape: int) -> Tensor:
    return torch.zeros(shape, dtype=torch.float64)


class FrechetDistance(Metric):
    """Per-frame FD between accumulated real and fake features ``[..., D]`` (every leading index is one row).

    ``update(real=None, fake=None)`` or ``update_real(x)`` / ``update_fake(x)``; ``compute()`` -> 0-dim float64
    (NaN with a warning when a set has fewer than 2 rows).
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, num_features: int, eps: float = FD_EPS, **kwargs):
        super().__init__(**kwargs)
        if num_features < 1:
            raise DataError(f"FrechetDistance needs num_features >= 1, got {num_features}")
        self.num_features = int(num_features)
        self.eps = eps
        for side in ("real", "fake"):
            self.add_state(f"{side}_count", _zeros(), dist_reduce_fx="sum")
            self.add_state(f"{side}_sum", _zeros(self.num_features), dist_reduce_fx="sum")
            self.add_state(f"{side}_outer", _zeros(self.num_features, self.num_features), dist_reduce_fx="sum")

    def _add(self, side: str, rows: Tensor) -> None:
        if rows.shape[-1] != self.num_features:
            raise DataError(f"{type(self).__name__}: {side} features have dim {rows.shape[-1]}, expected "
                            f"{self.num_features}")
        count, total, outer = feature_moments(rows.to(getattr(self, f"{side}_sum").device))
        setattr(self, f"{side}_count", getattr(self, f"{side}_count") + count)
        setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + total)
        setattr(self, f"{side}_outer", getattr(self, f"{side}_outer") + outer)

    def update(self, real: Tensor | None = None, fake: Tensor | None = None) -> None:
        """Add real and/or fake features ``[..., D]``."""
        if real is not None:
            self._add("real", real)
        if fake is not None:
            self._add("fake", fake)

    def update_real(self, x: Tensor) -> None:
        self.update(real=x)

    def update_fake(self, x: Tensor) -> None:
        self.update(fake=x)

    def compute(self) -> Tensor:
        if float(self.real_count) < 2 or float(self.fake_count) < 2:
            warnings.warn(f"{type(self).__name__}: need >= 2 real and fake rows, got {int(self.real_count)} and "
                          f"{int(self.fake_count)}; returning NaN", stacklevel=2)
            return torch.tensor(float("nan"), dtype=torch.float64, device=self.real_sum.device)
        return frechet_distance_from_moments((self.real_count, self.real_sum, self.real_outer),
                                             (self.fake_count, self.fake_sum, self.fake_outer), self.eps)


class WindowedFrechetDistance(FrechetDistance):
    """FD over ``window``-frame windows (stride ``stride``) of clips ``[..., T, P, D]``, divided by ``window``.

    Clips shorter than the window are skipped. ``num_features`` is the per-frame D.
    """

    def __init__(self, num_features: int, window: int = FD_WINDOW, stride: int = FD_STRIDE, eps: float = FD_EPS,
                 **kwargs):
        super().__init__(num_features * window, eps=eps, **kwargs)
        self.window, self.stride, self.frame_features = int(window), int(stride), int(num_features)

    def _add(self, side: str, rows: Tensor) -> None:
        if rows.shape[-1] != self.frame_features:
            raise DataError(f"WindowedFrechetDistance: {side} features have dim {rows.shape[-1]}, expected "
                            f"{self.frame_features}")
        w = window_features(to_float64(rows, side), self.window, self.stride)
        if w is not None:
            super()._add(side, w)

    def compute(self) -> Tensor:
        return super().compute() / self.window


class SampleDiversity(Metric):
    """``div_sample`` averaged over clips: ``update(samples)`` with one clip ``[S, T, P, D]`` or a batch of clips
    ``[B, S, T, P, D]`` (S >= 2)."""

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", _zeros(), dist_reduce_fx="sum")
        self.add_state("clips", _zeros(), dist_reduce_fx="sum")

    def update(self, samples: Tensor) -> None:
        clips = samples if samples.dim() == 5 else samples.unsqueeze(0)
        for clip in clips:
            self.total = self.total + motion.clip_diversity(clip).to(self.total.device)
            self.clips = self.clips + 1.0

    def compute(self) -> Tensor:
        return self.total / self.clips


class MeanJointError(Metric):
    """MPJPE / MPJVE with the best-of-k curve (see :func:`magnet.metrics.mpjpe`).

    ``update(pred, gt)`` with one clip ``pred [S, T, P, J, 3]``, ``gt [T, P, J, 3]`` or a batch
    ``[B, S, T, P, J, 3]`` / ``[B, T, P, J, 3]``; S must equal ``num_samples``. ``compute()`` returns a dict with
    unit-named keys (e.g. ``mpjpe_mm`` -> 0-dim, ``mpjpe_best_list_mm`` -> ``[S]``).
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, num_samples: int, *, velocity: bool = False, fps: float = motion.FPS, mode: str = "fixed",
                 unit: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.num_samples, self.velocity, self.fps = int(num_samples), bool(velocity), fps
        self.mode = check_mode(mode)
        self.unit = motion.default_unit(mode, unit)
        self.add_state("err_sum", _zeros(), dist_reduce_fx="sum")
        self.add_state("count", _zeros(), dist_reduce_fx="sum")
        self.add_state("best_sum", _zeros(self.num_samples), dist_reduce_fx="sum")
        self.add_state("clips", _zeros(), dist_reduce_fx="sum")

    def update(self, pred: Tensor, gt: Tensor) -> None:
        if pred.dim() == 5:
            pred, gt = pred.unsqueeze(0), gt.unsqueeze(0)
        if pred.dim() != 6 or gt.dim() != 5 or pred.shape[0] != gt.shape[0]:
            raise DataError(f"{type(self).__name__}.update needs pred [B, S, T, P, J, 3] and gt [B, T, P, J, 3]; "
                            f"got {tuple(pred.shape)} and {tuple(gt.shape)}")
        if pred.shape[1] != self.num_samples:
            raise DataError(f"{type(self).__name__}: got {pred.shape[1]} samples per clip, the metric was built "
                            f"for num_samples={self.num_samples}")
        dev = self.err_sum.device
        for p, g in zip(pred, gt):
            s, n, per_sample = motion.clip_error_sums(p, g, self.velocity, self.fps)
            self.err_sum = self.err_sum + s.to(dev)
            self.count = self.count + n.to(dev)
            self.best_sum = self.best_sum + torch.cummin(per_sample, dim=0).values.to(dev)
            self.clips = self.clips + 1.0

    def compute(self) -> dict[str, Tensor]:
        scale = 1000.0 if self.unit == "mm" else 1.0
        mean, curve = motion.finalize_errors(self.err_sum, self.count, self.best_sum, self.clips, scale)
        key, key_best = motion.error_keys("mpjve" if self.velocity else "mpjpe", self.unit, self.velocity)
        return {key: mean, key_best: curve}


class MPJPE(MeanJointError):
    """Mean per-joint position error (``mode="fixed"``: mm; ``"reference"``: m) with best-of-k curve."""

    def __init__(self, num_samples: int, *, mode: str = "fixed", unit: str | None = None, **kwargs):
        super().__init__(num_samples, velocity=False, mode=mode, unit=unit, **kwargs)


class MPJVE(MeanJointError):
    """Mean per-joint velocity error (mm/s in fixed mode, m/s in reference mode) with best-of-k curve."""

    def __init__(self, num_samples: int, *, fps: float = motion.FPS, mode: str = "fixed", unit: str | None = None,
                 **kwargs):
        super().__init__(num_samples, velocity=True, fps=fps, mode=mode, unit=unit, **kwargs)


class PersonCorrelation(Metric):
    """Inter-person Pearson correlation of features ``[..., P, D]`` pooled over all updates (every leading index
    is one row). ``compute()`` -> 0-dim float64, NaN when undefined (see ``correlation_from_sums``)."""

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, num_persons: int, num_features: int, *, mode: str = "fixed", **kwargs):
        super().__init__(**kwargs)
        if num_persons < 2:
            raise DataError(f"PersonCorrelation needs num_persons >= 2, got {num_persons}; skip it for one person")
        self.num_persons, self.num_features = int(num_persons), int(num_features)
        self.mode = check_mode(mode)
        pairs = self.num_persons * (self.num_persons - 1) // 2
        self.add_state("n", _zeros(), dist_reduce_fx="sum")
        self.add_state("sx", _zeros(self.num_persons, self.num_features), dist_reduce_fx="sum")
        self.add_state("sxx", _zeros(self.num_persons, self.num_features), dist_reduce_fx="sum")
        self.add_state("sxy", _zeros(pairs, self.num_features), dist_reduce_fx="sum")

    def update(self, features: Tensor) -> None:
        if features.dim() < 2 or tuple(features.shape[-2:]) != (self.num_persons, self.num_features):
            raise DataError(f"PersonCorrelation: features must be [..., {self.num_persons}, {self.num_features}], "
                            f"got {tuple(features.shape)}")
        n, sx, sxx, sxy = motion.correlation_sums(features.to(self.sx.device))
        self.n, self.sx, self.sxx, self.sxy = self.n + n, self.sx + sx, self.sxx + sxx, self.sxy + sxy

    def compute(self) -> Tensor:
        return motion.correlation_from_sums(self.n, self.sx, self.sxx, self.sxy, self.mode)


class FootSliding(Metric):
    """Foot-sliding ratio and mean sliding speed over joints ``[..., T, P, J, 3]`` (leading axes = samples).

    ``compute()`` -> dict of 0-dim tensors: ``foot_sliding_ratio``, ``avg_foot_sliding_vel_m_per_s``,
    ``sliding_frames``, ``total_frames`` (see :mod:`magnet.metrics.foot_skating` for the two modes).
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, foot_indices: Sequence[int] = foot_skating.FOOT_INDICES, *, fps: float = 30,
                 mode: str = "fixed", floor: float = 0.0, contact_height: float | None = None,
                 speed_threshold: float = foot_skating.SLIDE_SPEED, **kwargs):
        super().__init__(**kwargs)
        self.foot_indices, self.fps, self.speed_threshold = tuple(foot_indices), fps, speed_threshold
        self.mode = check_mode(mode)
        self.threshold = foot_skating.contact_threshold(mode, floor, contact_height)
        for key in foot_skating.SUM_KEYS:
            self.add_state(key, _zeros(), dist_reduce_fx="sum")

    def update(self, joints: Tensor) -> None:
        if joints.dim() < 4:
            raise DataError(f"FootSliding: joints must be [..., T, P, J, 3], got {tuple(joints.shape)}")
        x = joints.reshape(-1, *joints.shape[-4:])
        sums = foot_skating.foot_sliding_sums(x, self.foot_indices, self.fps, self.threshold,
                                              self.speed_threshold)
        for key, value in sums.items():
            setattr(self, key, getattr(self, key) + value.to(getattr(self, key).device))

    def compute(self) -> dict[str, Tensor]:
        return foot_skating.foot_sliding_from_sums({k: getattr(self, k) for k in foot_skating.SUM_KEYS}, self.mode)


class Penetration(Metric):
    """Capsule penetration between persons of joints ``[..., P, J>=22, 3]`` (SMPL-X order, 0 = pelvis).

    Uses all rows (the ``"fixed"`` behaviour; the reference's every-10th-row shortcut needs the whole set and
    is only in :func:`magnet.metrics.penetration`). ``compute()`` -> dict of the six outputs as 0-dim tensors.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, min_depth: float = capsules.MIN_DEPTH, chunk_size: int = 1024, **kwargs):
        super().__init__(**kwargs)
        self.min_depth, self.chunk_size = min_depth, chunk_size
        for key in capsules.SUM_KEYS:
            self.add_state(key, _zeros(), dist_reduce_fx="max" if key == "overall_max" else "sum")

    def update(self, joints: Tensor) -> None:
        sums = capsules.penetration_sums(joints, self.min_depth, self.chunk_size)
        for key, value in sums.items():
            value = value.to(getattr(self, key).device)
            if key == "overall_max":
                self.overall_max = torch.maximum(self.overall_max, value)
            else:
                setattr(self, key, getattr(self, key) + value)

    def compute(self) -> dict[str, Tensor]:
        return capsules.penetration_from_sums({k: getattr(self, k) for k in capsules.SUM_KEYS})
