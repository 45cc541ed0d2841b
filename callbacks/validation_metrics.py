"""Validation metrics callback (spec 5): MPJPE / MPJVE, FD per frame and over windows, foot sliding.

The LightningModule's ``validation_step`` returns a dict

* ``joints_pred``, ``joints_gt``: float ``[N, T, J, 3]`` (metres, Y-up; joint 0 = pelvis, joints 1..21 = the
  SMPL-X body joints, so J = 22; extra joints after 21 are ignored),
* ``valid``: bool ``[N, T]``, the frames to evaluate (optional; default all frames),
* ``num_persons``: int P (optional, default 1): the N = B*P rows are persons of B windows, row ``b*P + p``.

The module may set ``metrics_fps`` (default 30). Batches returning anything else (``None``, a loss tensor, a dict
without the joint keys) are skipped; a dict without the keys or a run where no batch gave joints warns once.

Valid frames: a frame of window b is evaluated when it is valid for every person of b and all joints are finite.
Windows whose frames are all valid are evaluated as one batch; a window with invalid frames is cut into its
maximal runs of valid frames and each run is evaluated as its own clip, so no metric ever mixes frames across a
gap (MPJVE / velocity FD need 2 frames per run, windowed FD ``fd_window`` frames; shorter runs are skipped for
those metrics only).

Logged at ``on_validation_epoch_end`` (``prefix`` + name; names follow ``magnet.metrics``, units in the name):

* ``num_frames``: person-frames evaluated (valid frames x persons),
* ``mpjpe_mm``, ``mpjve_mm_per_s`` (``mpjpe_m``, ``mpjve_m_per_s`` with ``mode="reference"``): mean L2 error of
  the 21 body joints 1..21 (the reference ``g`` joints, pelvis excluded) of pred vs GT, no alignment,
* ``fd_g``, ``fd_k``: per-frame FD between the GT set and the pred set of the 63-d position features ``g`` (m) and
  velocity features ``k`` (m/s); ``fd_seq_g``: FD over ``fd_window``-frame windows (stride ``fd_stride``) of ``g``
  divided by ``fd_window`` (64-frame windows give 4 windows each with 30/10),
* ``foot_sliding_ratio_{pred,gt}``, ``avg_foot_sliding_vel_m_per_s_{pred,gt}``: feet = joints 10 and 11 of the
  22-joint array,
* ``corr_{pred,gt}``: inter-person correlation of ``g`` (only when ``num_persons >= 2`` is configured and the
  module returns that many persons per window).

A value that is undefined (NaN, e.g. FD with fewer than 2 rows, windowed FD when no run reaches the window) is
not logged. All accumulation is in torchmetrics float64 sum states on the module's device, so the numbers are
synchronised across DDP ranks by ``compute()``; the resulting floats are then logged with ``sync_dist=False`` on
every rank (Lightning's documented way for metrics whose ``compute`` already synchronised; under DDP Lightning
still prints its generic "recommended to use sync_dist=True" hint once per name, a known false positive,
Lightning issue #20153).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics import Metric, SumMetric

from magnet.errors import ConfigError, DataError
from magnet.metrics import (
    MPJPE,
    MPJVE,
    FootSliding,
    FrechetDistance,
    PersonCorrelation,
    WindowedFrechetDistance,
    position_features,
    velocity_features,
)
from magnet.metrics._utils import check_mode

__all__ = ["BODY_JOINTS", "FEET", "REQUIRED_KEYS", "ValidationMetrics"]

REQUIRED_KEYS = ("joints_pred", "joints_gt")
BODY_JOINTS = slice(1, 22)  # SMPL-X body joints 1..21 in arrays that start with the pelvis
FEET = (10, 11)  # left / right foot in arrays that start with the pelvis
NUM_FEATURES = 63  # 21 body joints x 3


class ValidationMetrics(Callback):
    """Accumulates spec-5 metrics over the first ``max_batches`` validation batches and logs them.

    Args:
        every_n_validations: compute on the k-th, 2k-th, ... validation run (sanity checks are not counted).
        max_batches: only the first ``max_batches`` validation batches of a run are used (None: all); the count
            is per process, so DDP evaluates up to world_size x max_batches batches.
        mode: ``"fixed"`` (default) or ``"reference"``, passed to the metrics (see
            ``magnet.metrics.REFERENCE_DIFFERENCES``; reference mode reports MPJPE in metres).
        fd_window, fd_stride: frames per window and stride of the windowed FD; ``fd_window=None`` turns it off
            (its compute is two eigendecompositions of a 63*window square matrix: ~8 s in float64 on 2 CPU
            cores for 30 frames, well under a second on a GPU).
        fps: frame rate for velocities; None = the module's ``metrics_fps`` attribute (default 30).
        num_persons: persons per window for the inter-person correlation; None or 1 = not computed.
        prefix: prefix of every logged name.
        enabled: False turns the callback off.
        sample_every_n_validations: on every k-th evaluated validation run, modules that can generate (the DFoT's
            ``sample_windows``) also sample the first ``sample_windows`` fully valid validation windows (context =
            the first 32 frames, ``sample_steps`` DDIM steps, x0 guidance only with ``sample_guidance``) and the
            same metrics of those real samples against the ground truth, generated frames only, are logged under
            ``sample_prefix``; None or 0 turns it off.
    """

    def __init__(
        self,
        every_n_validations: int = 1,
        max_batches: int | None = 8,
        mode: str = "fixed",
        fd_window: int | None = 30,
        fd_stride: int = 10,
        fps: int | None = None,
        num_persons: int | None = None,
        prefix: str = "val_metrics/",
        enabled: bool = True,
        sample_every_n_validations: int | None = 1,
        sample_windows: int = 8,
        sample_steps: int = 10,
        sample_guidance: bool = False,
        sample_prefix: str = "val_samples/",
    ):
        super().__init__()
        if int(every_n_validations) < 1:
            raise ConfigError(f"ValidationMetrics: every_n_validations must be >= 1, got {every_n_validations}")
        if max_batches is not None and int(max_batches) < 1:
            raise ConfigError(f"ValidationMetrics: max_batches must be >= 1 or null, got {max_batches}")
        if (fd_window is not None and int(fd_window) < 1) or int(fd_stride) < 1:
            raise ConfigError(f"ValidationMetrics: fd_window ({fd_window}) and fd_stride ({fd_stride}) must be >= 1")
        if fps is not None and fps <= 0:
            raise ConfigError(f"ValidationMetrics: fps must be positive or null, got {fps}")
        self.every_n_validations = int(every_n_validations)
        self.max_batches = None if max_batches is None else int(max_batches)
        self.mode = check_mode(mode)
        self.fd_window = None if fd_window is None else int(fd_window)
        self.fd_stride = int(fd_stride)
        self.fps = fps
        self.num_persons = int(num_persons) if num_persons is not None else None
        self.prefix = prefix
        self.enabled = bool(enabled)
        if int(sample_windows) < 1 or int(sample_steps) < 1:
            raise ConfigError(f"ValidationMetrics: sample_windows ({sample_windows}) and sample_steps "
                              f"({sample_steps}) must be >= 1")
        self.sample_every = int(sample_every_n_validations or 0)
        self.sample_windows = int(sample_windows)
        self.sample_steps = int(sample_steps)
        self.sample_guidance = bool(sample_guidance)
        self.sample_prefix = sample_prefix
        self.sampling = False  # this run also samples
        self.sampled = 0  # windows sampled in this run
        self.sample_metrics: dict[str, Metric] | None = None

        self.validation_runs = 0  # validation runs seen (saved in checkpoints)
        self.active = False  # this run is evaluated
        self.batches_seen = 0  # batches seen in this run
        self.metrics: dict[str, Metric] | None = None
        self._metrics_fps: float | None = None
        self._warned: set[str] = set()

    # ------------------------------------------------------------------------------------------------ set-up
    def build_metrics(self, fps: float) -> dict[str, Metric]:
        """The metric objects (float64 states, CPU until moved) for frame rate ``fps``."""
        m: dict[str, Metric] = {
            "num_frames": SumMetric().set_dtype(torch.float64),
            "mpjpe": MPJPE(1, mode=self.mode),
            "mpjve": MPJVE(1, fps=fps, mode=self.mode),
            "fd_g": FrechetDistance(NUM_FEATURES),
            "fd_k": FrechetDistance(NUM_FEATURES),
            "foot_pred": FootSliding(FEET, fps=fps, mode=self.mode),
            "foot_gt": FootSliding(FEET, fps=fps, mode=self.mode),
        }
        if self.fd_window is not None:
            m["fd_seq_g"] = WindowedFrechetDistance(NUM_FEATURES, window=self.fd_window, stride=self.fd_stride)
        if self.num_persons is not None and self.num_persons >= 2:
            m["corr_pred"] = PersonCorrelation(self.num_persons, NUM_FEATURES, mode=self.mode)
            m["corr_gt"] = PersonCorrelation(self.num_persons, NUM_FEATURES, mode=self.mode)
        return m

    def _module_fps(self, pl_module: LightningModule) -> float:
        return float(self.fps if self.fps is not None else getattr(pl_module, "metrics_fps", 30))

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.enabled:
            self._ensure_metrics(pl_module)

    def _ensure_metrics(self, pl_module: LightningModule) -> None:
        fps = self._module_fps(pl_module)
        if self.metrics is None or fps != self._metrics_fps:
            self.metrics, self._metrics_fps = self.build_metrics(fps), fps

    @staticmethod
    def _device(pl_module: LightningModule) -> torch.device:
        dev = pl_module.device
        return torch.device("cpu") if dev.type == "mps" else dev  # MPS has no float64

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message)

    # ------------------------------------------------------------------------------------------------ hooks
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.active = False
        if not self.enabled or trainer.sanity_checking:
            return
        self.validation_runs += 1
        if self.validation_runs % self.every_n_validations:
            return
        self._ensure_metrics(pl_module)
        device = self._device(pl_module)
        for metric in self.metrics.values():
            metric.reset()
            metric.to(device)
        self.active, self.batches_seen = True, 0
        evaluated = self.validation_runs // self.every_n_validations
        self.sampling = bool(self.sample_every and hasattr(pl_module, "sample_windows")
                             and evaluated % self.sample_every == 0)
        self.sampled = 0
        if self.sampling:
            if self.sample_metrics is None or self._metrics_fps != self._module_fps(pl_module):
                self.sample_metrics = self.build_metrics(self._module_fps(pl_module))
            for metric in self.sample_metrics.values():
                metric.reset()
                metric.to(device)

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self.active:
            return
        self.batches_seen += 1
        if self.max_batches is not None and self.batches_seen > self.max_batches:
            return
        if outputs is None:  # e.g. a batch without valid frames
            return
        if not isinstance(outputs, dict) or any(k not in outputs for k in REQUIRED_KEYS):
            got = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
            self._warn_once("keys", f"ValidationMetrics: validation_step output lacks {'/'.join(REQUIRED_KEYS)} "
                                    f"(got {got}); these batches are skipped; return them to get {self.prefix}*")
            return
        self.update(outputs["joints_pred"], outputs["joints_gt"], outputs.get("valid"),
                    int(outputs.get("num_persons", 1)))
        if self.sampling and self.sampled < self.sample_windows and isinstance(batch, dict) and "x" in batch:
            res = pl_module.sample_windows(batch, self.sample_windows - self.sampled, self.sample_steps,
                                           seed=batch_idx, guidance=self.sample_guidance)
            if res is not None:
                p = int(res.get("num_persons", 1))
                self.sampled += res["joints_pred"].shape[0] // p
                self.update(res["joints_pred"], res["joints_gt"], res.get("valid"), p, metrics=self.sample_metrics)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.active:
            return
        self.active = False
        for name, value in self.compute().items():
            pl_module.log(self.prefix + name, value, on_step=False, on_epoch=True, sync_dist=False)
        for metric in self.metrics.values():
            metric.reset()
        if self.sampling:
            self.sampling = False
            for name, value in self.compute(self.sample_metrics, self.sample_prefix).items():
                pl_module.log(self.sample_prefix + name, value, on_step=False, on_epoch=True, sync_dist=False)
            for metric in self.sample_metrics.values():
                metric.reset()

    def state_dict(self) -> dict[str, Any]:
        return {"validation_runs": self.validation_runs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.validation_runs = int(state_dict.get("validation_runs", 0))

    # ------------------------------------------------------------------------------------------------ maths
    def update(self, joints_pred: Tensor, joints_gt: Tensor, valid: Tensor | None = None,
               num_persons: int = 1, metrics: dict[str, Metric] | None = None) -> None:
        """Add one batch: joints ``[N, T, J>=22, 3]``, ``valid [N, T]`` (None: all), N = B * ``num_persons``;
        into ``metrics`` (default: the validation metrics)."""
        metrics = self.metrics if metrics is None else metrics
        if metrics is None:
            raise RuntimeError("ValidationMetrics.update called before the metrics were built (setup)")
        pred, gt = joints_pred.detach(), joints_gt.detach()
        if pred.dim() != 4 or pred.shape[-1] != 3 or pred.shape[-2] < 22 or pred.shape != gt.shape:
            raise DataError(f"ValidationMetrics: joints_pred / joints_gt must both be [N, T, J>=22, 3], got "
                            f"{tuple(pred.shape)} and {tuple(gt.shape)}; fix the module's validation_step")
        n, t = pred.shape[:2]
        if num_persons < 1 or n % num_persons:
            raise DataError(f"ValidationMetrics: {n} joint rows are not a multiple of num_persons={num_persons}")
        if valid is None:
            valid = torch.ones(n, t, dtype=torch.bool, device=pred.device)
        valid = valid.detach()
        if tuple(valid.shape) != (n, t):
            raise DataError(f"ValidationMetrics: valid must be [N, T] = {(n, t)}, got {tuple(valid.shape)}")

        device = metrics["num_frames"].device
        b, p = n // num_persons, num_persons
        # [B*P, T, J, 3] -> [B, T, P, J, 3] (row b*P + p is person p of window b)
        pred = pred.to(device=device, dtype=torch.float64).reshape(b, p, t, -1, 3).transpose(1, 2)
        gt = gt.to(device=device, dtype=torch.float64).reshape(b, p, t, -1, 3).transpose(1, 2)
        ok = valid.to(device).bool().reshape(b, p, t).all(dim=1)  # [B, T]
        finite = torch.isfinite(pred).flatten(2).all(-1) & torch.isfinite(gt).flatten(2).all(-1)  # [B, T]
        if bool((ok & ~finite).any()):
            self._warn_once("finite", "ValidationMetrics: some valid frames have NaN/inf joints; those frames "
                                      "are left out of the validation metrics")
        ok = ok & finite

        use_corr = "corr_pred" in metrics and p == self.num_persons
        if "corr_pred" in metrics and not use_corr:
            self._warn_once("persons", f"ValidationMetrics: configured num_persons={self.num_persons} but "
                                       f"validation_step returned num_persons={p}; correlation is skipped")
        full = ok.all(dim=1)
        if bool(full.any()):
            self._update_clips(metrics, pred[full], gt[full], use_corr)
        partial = torch.nonzero(~full).flatten().tolist()  # windows with some invalid frames
        for row, start, end in _valid_runs(ok[~full]):
            r = partial[row]
            self._update_clips(metrics, pred[r:r + 1, start:end], gt[r:r + 1, start:end], use_corr)

    def _update_clips(self, m: dict[str, Metric], pred: Tensor, gt: Tensor, use_corr: bool) -> None:
        """Add clips ``[C, L, P, J, 3]`` (float64, every frame valid) to every metric of ``m``."""
        c, length, p = pred.shape[:3]
        body_p, body_g = pred[..., BODY_JOINTS, :], gt[..., BODY_JOINTS, :]
        g_p, g_g = position_features(body_p), position_features(body_g)  # [C, L, P, 63]
        m["num_frames"].update(torch.tensor(float(c * length * p), dtype=torch.float64, device=pred.device))
        m["mpjpe"].update(body_p.unsqueeze(1), body_g)
        m["fd_g"].update(real=g_g, fake=g_p)
        if "fd_seq_g" in m:  # clips shorter than the window are skipped inside
            m["fd_seq_g"].update(real=g_g, fake=g_p)
        m["foot_pred"].update(pred)
        m["foot_gt"].update(gt)
        if length >= 2:
            m["mpjve"].update(body_p.unsqueeze(1), body_g)
            fps = self._metrics_fps
            m["fd_k"].update(real=velocity_features(g_g, fps), fake=velocity_features(g_p, fps))
        if use_corr:
            m["corr_pred"].update(g_p)
            m["corr_gt"].update(g_g)

    def compute(self, metrics: dict[str, Metric] | None = None, prefix: str | None = None) -> dict[str, float]:
        """Synchronised results as floats (NaN results left out); ``{}`` when no frame was evaluated anywhere.

        ``metrics`` / ``prefix``: another metric set (the sampled windows') and its log prefix. Every rank must
        call it (``compute`` gathers the states across DDP ranks).
        """
        m = self.metrics if metrics is None else metrics
        prefix = self.prefix if prefix is None else prefix
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "compute before update" is expected on a rank without batches
            num_frames = float(m["num_frames"].compute())
        if num_frames == 0:
            self._warn_once(f"empty{prefix}", "ValidationMetrics: no validation batch returned valid joints; "
                                              f"nothing logged under {prefix}")
            return {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # also "< 2 rows -> NaN": NaN results are dropped below
            out: dict[str, float] = {"num_frames": num_frames}
            for result in (m["mpjpe"].compute(), m["mpjve"].compute()):
                out.update({k: v for k, v in result.items() if "best_list" not in k})
            for key in ("fd_g", "fd_k", "fd_seq_g", "corr_pred", "corr_gt"):
                if key in m:
                    out[key] = m[key].compute()
            for side in ("pred", "gt"):
                foot = m[f"foot_{side}"].compute()
                out[f"foot_sliding_ratio_{side}"] = foot["foot_sliding_ratio"]
                out[f"avg_foot_sliding_vel_m_per_s_{side}"] = foot["avg_foot_sliding_vel_m_per_s"]
        values = {k: float(v) for k, v in out.items()}
        return {k: v for k, v in values.items() if not math.isnan(v)}


def _valid_runs(valid: Tensor) -> list[tuple[int, int, int]]:
    """Maximal runs of True along time of ``valid [R, T]``: ``[(row, start, end)]`` with end exclusive."""
    if valid.numel() == 0:
        return []
    edges = torch.diff(F.pad(valid.to(torch.int8).cpu(), (1, 1)), dim=1)  # +1 at a start, -1 after an end
    starts = torch.nonzero(edges == 1).tolist()  # row-major, so starts and ends pair up
    ends = torch.nonzero(edges == -1).tolist()
    return [(r, s, e) for (r, s), (_, e) in zip(starts, ends)]
