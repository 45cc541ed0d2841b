"""What both stages' LightningModules share: normalisation statistics stored in the module, the optimiser and LR
schedule, RNG state in checkpoints, and the stats encoding in exported weights files."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor

from magnet.errors import CheckpointError
from magnet.representation import STATS_DIM, STATS_PER_PERSON, MotionStats
from magnet.training.schedule import build_warmup_cosine


class MagnetModule(pl.LightningModule):
    """Base of :class:`VQVAEModule` and :class:`DFoTModule`.

    Subclasses call :meth:`init_stats` in ``__init__``, set ``STAGE``, and may override
    :meth:`trainable_parameters` and :meth:`checkpoint_info`. The hyper-parameters ``lr``, ``weight_decay``, ``adam_betas``, ``warmup_steps``,
    ``total_steps`` and ``min_lr_ratio`` must be saved with ``save_hyperparameters``.
    """

    STAGE = ""

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
