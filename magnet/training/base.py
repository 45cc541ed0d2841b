"""What both stages' LightningModules share: normalisation statistics stored in the module, the body model for
validation forward kinematics, the logging of the validation metrics, the optimiser and LR schedule, RNG state in
checkpoints, modules that stay frozen in eval mode, and the stats encoding in exported weights files."""

from __future__ import annotations

import math
import random
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.utilities.warnings import PossibleUserWarning
from torch import Tensor

from magnet.body import BodyModel, load_body_model
from magnet.errors import CheckpointError, ConfigError
from magnet.geometry import rot6d_to_matrix, tf9_compose, tf9_to_rt
from magnet.representation import STATS_DIM, STATS_PER_PERSON, MotionStats
from magnet.training.schedule import build_warmup_cosine
from magnet.utils import require_number


class MagnetModule(pl.LightningModule):
    """Base of :class:`VQVAEModule` and :class:`DFoTModule`.

    Subclasses call :meth:`init_stats` and :meth:`init_body_model` in ``__init__``, set ``STAGE`` and
    ``PROGRESS_METRIC`` (the validation metric shown in the progress bar), keep their validation metrics in
    ``self.val_metrics`` (a ``ModuleDict`` of torchmetrics, logged as ``val/<key>``), and may override
    :meth:`trainable_parameters`, :meth:`frozen_modules` and :meth:`checkpoint_info`. The hyper-parameters ``lr``,
    ``weight_decay``, ``adam_betas``, ``warmup_steps``, ``total_steps`` and ``min_lr_ratio`` must be saved with
    ``save_hyperparameters``.
    """

    STAGE = ""
    PROGRESS_METRIC = ""
    val_metrics: torch.nn.ModuleDict

    # ------------------------------------------------------------------------------------------ body model

    def init_body_model(self, path: str | None, load_now: bool = True) -> None:
        """The body model for validation FK: the SMPL-X file ``path`` or the default skeleton (None). Loaded now
        (so a missing or malformed file fails before training starts) or, with ``load_now=False``, on first use."""
        self._body_model_path = path
        self._body_model = load_body_model(path) if load_now else None

    @property
    def body_model(self) -> BodyModel:
        """The body model used for validation FK (not part of the state dict), on the module's device."""
        if self._body_model is None:
            self._body_model = load_body_model(self._body_model_path)
        if self._body_model.joint_template.device != self.device:
            self._body_model = self._body_model.to(self.device)
        return self._body_model

    # ------------------------------------------------------------------------------------------ validation

    def on_validation_epoch_end(self) -> None:
        for key, metric in self.val_metrics.items():
            if metric.update_called:
                self.log(f"val/{key}", metric.compute(), prog_bar=key == self.PROGRESS_METRIC, sync_dist=False)
            metric.reset()

    # ------------------------------------------------------------------------------------------ frozen modules

    def frozen_modules(self) -> list[torch.nn.Module]:
        """Modules that stay in eval mode during training by design (e.g. the DFoT's VQ-VAE)."""
        return []

    def on_fit_start(self) -> None:
        # Lightning warns "Found N module(s) in eval mode at the start of training"; for the frozen modules that is
        # the design, so exactly that count is silenced (any other module left in eval mode still warns).
        count = sum(1 for m in self.frozen_modules() for _ in m.modules())
        if count:
            warnings.filterwarnings("ignore", message=rf"Found {count} module\(s\) in eval mode at the start of "
                                    "training", category=PossibleUserWarning)

    def init_stats(self) -> None:
        """Buffers ``stats_mean`` / ``stats_std`` ``[361]`` (NaN until set), saved with every checkpoint."""
        self.register_buffer("stats_mean", torch.full((STATS_DIM,), math.nan, dtype=torch.float64))
        self.register_buffer("stats_std", torch.full((STATS_DIM,), math.nan, dtype=torch.float64))

    @property
    def has_stats(self) -> bool:
        return bool(torch.isfinite(self.stats_mean[STATS_PER_PERSON]).all())

    def set_stats(self, stats: MotionStats) -> None:
        """Store the dataset's normalisation statistics (``[361]`` mean and std) in the module."""
        self.stats_mean.copy_(torch.as_tensor(np.asarray(stats.mean), dtype=torch.float64))
        self.stats_std.copy_(torch.as_tensor(np.asarray(stats.std), dtype=torch.float64))

    def denormalise(self, x: Tensor, fields: slice) -> Tensor:
        """``x[..., fields]`` (normalised) back to raw values, in ``x``'s dtype (stats applied in float64)."""
        return (x[..., fields].double() * self.stats_std[fields] + self.stats_mean[fields]).to(x.dtype)

    def stats_metadata(self) -> dict[str, str]:
        """The stats as safetensors metadata strings (empty without stats); read back by :func:`stats_from_metadata`."""
        if not self.has_stats:
            return {}
        return {"stats_mean": ",".join(repr(float(v)) for v in self.stats_mean.tolist()),
                "stats_std": ",".join(repr(float(v)) for v in self.stats_std.tolist())}

    # ------------------------------------------------------------------------------------------ optimiser

    def trainable_parameters(self):
        """The parameters the optimiser updates: every parameter that requires a gradient."""
        return [p for p in self.parameters() if p.requires_grad]

    def check_optimiser_hparams(self) -> None:
        """One-line :class:`ConfigError` for an optimiser or schedule hyper-parameter that is not a usable value
        (``lr=abc``, ``total_steps=0``, ``warmup_steps=-1``, ``adam_betas=[0.9]`` ...). Called by the subclasses'
        ``__init__``, so a bad value stops a run before anything is trained or written."""
        hp = self.hparams

        def hint(name: str) -> str:
            return f"set it with stage.{name}=<value>"

        require_number("lr", hp.lr, above=0.0, hint=hint("lr"))
        require_number("weight_decay", hp.weight_decay, minimum=0.0, hint=hint("weight_decay"))
        require_number("warmup_steps", hp.warmup_steps, integer=True, minimum=0, hint=hint("warmup_steps"))
        require_number("total_steps", hp.total_steps, integer=True, minimum=1, hint=hint("total_steps"))
        require_number("min_lr_ratio", hp.min_lr_ratio, minimum=0.0, maximum=1.0, hint=hint("min_lr_ratio"))
        betas = hp.adam_betas
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
            raise ConfigError(f"adam_betas must be two numbers in [0, 1), got {betas!r}; "
                              "set it with stage.adam_betas=[0.9,0.999]")
        for k, beta in enumerate(betas):
            require_number(f"adam_betas[{k}]", beta, minimum=0.0, below=1.0, hint=hint("adam_betas"))

    def configure_optimizers(self):
        """AdamW with linear warm-up, cosine decay to ``min_lr_ratio`` at ``total_steps``, then held there."""
        hp = self.hparams
        opt = torch.optim.AdamW(self.trainable_parameters(), lr=hp.lr, weight_decay=hp.weight_decay,
                                betas=tuple(hp.adam_betas))
        sched = build_warmup_cosine(opt, hp.warmup_steps, hp.total_steps, hp.min_lr_ratio)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    # ------------------------------------------------------------------------------------------ checkpoints

    def checkpoint_info(self) -> dict[str, Any]:
        """Stage-specific entries of ``checkpoint["magnet"]`` (model configs, ...)."""
        return {}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["magnet"] = {"stage": self.STAGE, **self.checkpoint_info(), "rng": rng_state()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("magnet", {}).get("rng")
        if rng is not None:
            set_rng_state(rng)


def value_joints(body_model: BodyModel, value: Tensor, betas: Tensor, world_canonical: Tensor | None = None) -> Tensor:
    """FK of joints 0..21 from a denormalised VQ-VAE value ``[N, T, 135]`` (body 6D ++ ``T_canonical_root``) and
    betas ``[N, T, 10]`` -> ``[N, T, 22, 3]``: in each person's canonical frame, or in the world when the canonical
    frames ``world_canonical [N, T, 9]`` are given (root = ``C(t) . T_canonical_root(t)``)."""
    n, t = value.shape[:2]
    body = rot6d_to_matrix(value[..., :126].reshape(n, t, 21, 6))
    root = value[..., 126:135]
    if world_canonical is not None:
        root = tf9_compose(world_canonical, root)
    root_r, root_t = tf9_to_rt(root)
    pos, _ = body_model.forward_kinematics(body, root_r, root_t, betas)
    return pos


def check_resume_checkpoint(path: str | Path, stage: str, module: pl.LightningModule | None = None) -> None:
    """Fail clearly on a missing, unreadable or other-stage Lightning checkpoint before training resumes from it
    (``python train.py ... ckpt_path=``): one-line :class:`CheckpointError`.

    With ``module``, the checkpoint's weights must also fit it: the same keys with the same shapes (a checkpoint of
    another model preset or person count is refused here instead of by a multi-line ``load_state_dict`` error).
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} not found; pass ckpt_path=<run dir>/checkpoints/last.ckpt")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {p} cannot be read ({type(exc).__name__}); the file is corrupt or "
                              "not a Lightning checkpoint") from exc
    found = ckpt.get("magnet", {}).get("stage") if isinstance(ckpt, dict) else None
    if found != stage:
        raise CheckpointError(f"checkpoint {p} is from stage {found!r}, not {stage!r}; resume with the same "
                              f"stage= it was trained with")
    if module is None:
        return
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {p} has no state_dict; the file is not a complete Lightning checkpoint")
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    hint = "resume with the model= / dataset= options the checkpoint was trained with"
    if bad:
        k = bad[0]
        raise CheckpointError(f"checkpoint {p}: {k!r} has shape {tuple(state[k].shape)} but this model expects "
                              f"{tuple(own[k].shape)} ({len(bad)} mismatched); {hint}")
    if missing or unexpected:
        k, what = (missing[0], "missing") if missing else (unexpected[0], "unexpected")
        raise CheckpointError(f"checkpoint {p}: {what} key {k!r} ({len(missing)} missing, {len(unexpected)} "
                              f"unexpected); {hint}")


def rng_state() -> dict[str, Any]:
    """torch / numpy / python RNG states in types a ``weights_only`` checkpoint load accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def stats_from_metadata(meta: dict[str, str], path: str | Path) -> MotionStats | None:
    """The stats written by :meth:`MagnetModule.stats_metadata` into a weights file (None if it has none)."""
    if "stats_mean" not in meta or "stats_std" not in meta:
        return None
    try:
        mean = np.array([float(v) for v in meta["stats_mean"].split(",")], dtype=np.float64)
        std = np.array([float(v) for v in meta["stats_std"].split(",")], dtype=np.float64)
    except ValueError as exc:
        raise CheckpointError(f"{path}: metadata stats_mean/stats_std are not comma-separated numbers; re-export "
                              "the weights") from exc
    if mean.shape != (STATS_DIM,) or std.shape != (STATS_DIM,):
        raise CheckpointError(f"{path}: metadata stats have {mean.size}/{std.size} entries, expected {STATS_DIM}; "
                              "re-export the weights")
    return MotionStats(mean, std, source=str(path))
