"""Stage 1 LightningModule: the pose VQ-VAE (spec 2).

Batches come from :class:`datamodules.MotionDataModule` with ``person_num = 1`` (``x[B, T, 1, 374]``, normalised).
Training logs every loss term, codebook perplexity / usage / dead codes and the learning rate. Validation
reconstructs windows without touching the codebook and logs, next to the mean-pose baseline (every frame predicted
as the dataset's mean pose, i.e. zeros in normalised space):

* ``val/mpjpe_mm``: joint position error of the 22 body joints (pelvis + SMPL-X 1..21) in millimetres, from
  forward kinematics of the decoded body rotations and canonical root placed on the ground-truth canonical
  trajectory (as the reference's VQ-VAE outputs: heading and ground path are inputs through Δ, not
  reconstructed), so the error covers pose, root height and root tilt;
* ``val/root_transl_mm`` and ``val/root_rot_deg``: the canonical root's translation and rotation error.

The normalisation statistics are stored in the module (buffers ``stats_mean`` / ``stats_std``) so a checkpoint is
self-contained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchmetrics import MeanMetric

from magnet.geometry import geodesic_angle, rot6d_to_matrix
from magnet.models.losses import value_mean_std, vqvae_losses
from magnet.models.vqvae import PoseVQVAE, VQVAEConfig, fold_persons, save_vqvae, vqvae_inputs
from magnet.representation import MotionStats, PackedLayout
from magnet.training.base import MagnetModule, value_joints

ROOT_6D = slice(126, 132)
ROOT_T = slice(132, 135)


class VQVAEModule(MagnetModule):
    """Trains :class:`magnet.models.vqvae.PoseVQVAE` on one-person windows.

    ``model``: the :class:`VQVAEConfig` fields as a dict (what ``conf/model/*.yaml`` gives), a preset name
    (``paper`` | ``tiny``) or ``{preset: ..., **VQVAEConfig overrides}``. The arguments are the keys of
    ``conf/stage/vqvae.yaml``.
    ``loss_weights``: overrides of :data:`magnet.models.losses.DEFAULT_LOSS_WEIGHTS`.
    ``body_model``: SMPL-X file for the validation FK (None: the built-in default skeleton).
    ``stats``: a :class:`MotionStats` or an npz path; if None it is taken from the datamodule at ``setup``.
    """

    STAGE = "vqvae"
    PROGRESS_METRIC = "mpjpe_mm"

    def __init__(
        self,
        model: str | dict[str, Any] = "paper",
        lr: float = 2e-4,
        weight_decay: float = 1e-4,
        adam_betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 15000,
        total_steps: int = 100000,
        min_lr_ratio: float = 0.05,
        loss_weights: dict[str, float] | None = None,
        reference_averaging: bool = False,
        body_model: str | None = None,
        stats: MotionStats | str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["stats"])
        self.check_optimiser_hparams()
        self.model = PoseVQVAE(VQVAEConfig.from_spec(model))
        self.layout = PackedLayout(1)
        self.loss_weights = dict(loss_weights or {})
        self.init_stats()
        if stats is not None:
            self.set_stats(MotionStats.load(stats) if isinstance(stats, (str, Path)) else stats)
        self.init_body_model(body_model)  # now: a missing or malformed SMPL-X file fails before training starts
        self.metrics_fps = 30
        self.val_metrics = torch.nn.ModuleDict(
            {k: MeanMetric() for k in ("loss", "mpjpe_mm", "mpjpe_mean_pose_mm", "root_transl_mm",
                                        "root_rot_deg")}
        )

    # ------------------------------------------------------------------------------------------ setup

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if not self.has_stats and dm is not None and getattr(dm, "stats", None) is not None:
            self.set_stats(dm.stats)
        if dm is not None and getattr(dm, "person_num", 1) != 1:
            from magnet.errors import ConfigError

            raise ConfigError(
                f"the VQ-VAE trains on one person per window but the datamodule has person_num={dm.person_num}; "
                "use stage=vqvae (it sets person_num: 1)"
            )

    def _value_stats(self) -> tuple[Tensor, Tensor]:
        if not self.has_stats:
            raise RuntimeError("VQVAEModule has no normalisation statistics: pass stats= or train with a datamodule")
        mean, std = value_mean_std(self.stats_mean, self.stats_std)
        return mean.float(), std.float()

    # ------------------------------------------------------------------------------------------ steps

    def _inputs(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x = batch["x"]
        if x.shape[2] != 1:
            # Persons are independent in stage 1: fold them into the batch.
            x = fold_persons(x)[:, :, None]
        return vqvae_inputs(x, self.layout, self.model.factor)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        value, enc_cond, dec_cond, mask = self._inputs(batch)
        out = self.model(value, enc_cond, dec_cond, mask)
        mean, std = self._value_stats()
        total, terms = vqvae_losses(out["recon"], value, mask, out["commit_loss"], mean, std,
                                    self.loss_weights, self.hparams.reference_averaging)
        bs = value.shape[0]
        self.log("train/loss", total, prog_bar=True, batch_size=bs)
        for key, term in terms.items():
            self.log(f"train/{key}", term, batch_size=bs)
        for key, val in out["stats"].items():
            self.log(f"train/codebook_{key}", torch.as_tensor(val, dtype=torch.float32), batch_size=bs,
                     prog_bar=key == "perplexity")
        return total

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor] | None:
        """Reconstruct without touching the codebook; returns joints for :class:`callbacks.ValidationMetrics`.

        Returns ``joints_pred`` / ``joints_gt`` ``[N, T, 22, 3]`` (canonical frame, metres) and ``valid [N, T]``.
        """
        value, enc_cond, dec_cond, mask = self._inputs(batch)
        recon = self.model.reconstruct(value, enc_cond, dec_cond, mask)
        mean, std = self._value_stats()
        loss, _ = vqvae_losses(recon, value, mask, None, mean, std, self.loss_weights,
                               self.hparams.reference_averaging)
        n_valid = int(mask.sum())
        if n_valid == 0:
            return None
        errors, joints = self.reconstruction_errors(recon, value, enc_cond, mask, self._world_canonical(batch))
        self.val_metrics["loss"].update(loss, n_valid)
        for key, (val, weight) in errors.items():
            self.val_metrics[key].update(val, weight)
        return {"joints_pred": joints["pred"], "joints_gt": joints["gt"], "valid": mask, "num_persons": 1}

    @torch.no_grad()
    def reconstruction_errors(
        self, recon: Tensor, target: Tensor, enc_cond: Tensor, mask: Tensor, world_canonical: Tensor | None = None
    ) -> tuple[dict[str, tuple[Tensor, int]], dict[str, Tensor]]:
        """Mean errors over the valid frames of ``recon`` vs ``target`` (``[N, T, 135]`` normalised).

        Returns ``({name: (mean value, number of valid frames)}, {"pred": joints, "gt": joints})`` with MPJPE (mm),
        the mean-pose baseline MPJPE (mm), root translation error (mm) and root rotation error (degrees); joints
        ``[N, T, 22, 3]``: in the world when ``world_canonical`` (the GT canonical frames ``[N, T, 9]``,
        denormalised) is given - both placed on the ground-truth trajectory, as the reference's VQ-VAE outputs are -
        else in each person's canonical frame. Distances (MPJPE) are the same either way.
        """
        mean, std = self._value_stats()
        betas = self.denormalise(enc_cond, slice(0, 10))
        gt = value_joints(self.body_model, target * std + mean, betas, world_canonical)
        pred = value_joints(self.body_model, recon * std + mean, betas, world_canonical)
        mean_pose = value_joints(self.body_model, torch.zeros_like(target) * std + mean, betas, world_canonical)
        m = mask.bool()
        n = int(m.sum())
        mpjpe = (pred - gt).norm(dim=-1).mean(-1)[m].mean() * 1000.0
        base = (mean_pose - gt).norm(dim=-1).mean(-1)[m].mean() * 1000.0
        t_err = ((recon - target)[..., ROOT_T] * std[ROOT_T]).norm(dim=-1)[m].mean() * 1000.0
        r_err = torch.rad2deg(
            geodesic_angle(rot6d_to_matrix((recon * std + mean)[..., ROOT_6D]),
                           rot6d_to_matrix((target * std + mean)[..., ROOT_6D]))
        )[m].mean()
        errors = {"mpjpe_mm": (mpjpe, n), "mpjpe_mean_pose_mm": (base, n), "root_transl_mm": (t_err, n),
                  "root_rot_deg": (r_err, n)}
        return errors, {"pred": pred, "gt": gt}

    def _world_canonical(self, batch: dict[str, Tensor]) -> Tensor:
        """Denormalised GT ``T_world_canonical`` of every (person, frame): ``[N, T, 9]``."""
        x = batch["x"]
        if x.shape[2] != 1:
            x = fold_persons(x)[:, :, None]
        return self.denormalise(x[:, :, 0], self.layout.world_canon)

    # ------------------------------------------------------------------------------------------ optimiser

    def trainable_parameters(self):
        return self.model.parameters()

    # ------------------------------------------------------------------------------------------ checkpoints

    def checkpoint_info(self) -> dict[str, Any]:
        return {"model_config": self.model.config.to_dict()}

    def export_weights(self, path: str | Path) -> Path:
        """Write the plain VQ-VAE weights + config + normalisation stats (usable without Lightning)."""
        return save_vqvae(self.model, path, metadata={"stage": "vqvae", **self.stats_metadata()})
