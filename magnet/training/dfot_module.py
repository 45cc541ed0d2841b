"""Stage 2 LightningModule: the Diffusion Forcing Transformer on the frozen pose VQ-VAE (spec 3.1-3.6).

Batches come from :class:`datamodules.MotionDataModule` with ``person_num = num_persons`` (``x[B, T, P, D(P)]``
normalised, ``valid[B, T, P]``). A training step (spec 3.4):

1. encode every person's window with the frozen VQ-VAE under ``no_grad`` (persons folded into the batch; or read the
   code indices from the :mod:`magnet.training.latent_cache` when ``latent_cache=True``, which gives the same
   latents) and pack the tokens ``[B, T/4, P, Dz + 36 P]`` (:func:`magnet.models.tokens.make_tokens`); token
   ``(k, p)`` is valid iff frame ``4k`` of person ``p`` is valid;
2. draw a noise level per token (``random_independent``: one per ``(b, t, p)``; ``random_uniform``: one per
   window), invalid tokens at the last level (999); optional context prefix (``context`` fixed / variable: the
   first latent frames at level 0, dropped to 999 with probability ``context_dropout`` per window; clean context
   tokens are not in the loss);
3. ``q_sample``, the network, :class:`magnet.models.dfot_losses.DFoTLoss` against the clean tokens; every term and
   the learning rate are logged under ``train/``.

Validation logs the denoising loss at fixed levels (``val/loss_k100`` ... with a fixed noise generator, so numbers
are comparable across runs) and their mean ``val/loss``, and decodes the one-step x0 prediction at level
``recon_level`` (500) through the VQ-VAE (decoder condition = GT betas + PREDICTED deltas), places it on the GT
canonical trajectory (as stage 1 does) and returns joints for :class:`callbacks.ValidationMetrics`
(``N = B * P`` rows, person-minor). ``val/mpjpe_mm`` is that reconstruction's error, ``val/mpjpe_vqvae_mm`` the
VQ-VAE's own reconstruction error on the same windows (the floor).

The VQ-VAE is frozen: always in eval mode, ``requires_grad=False``, not in the optimiser, but kept in the module
(``vqvae.*`` keys) so a checkpoint is self-contained, as the reference embeds ``_vqvae.*``. Normalisation: the
VQ-VAE only works in the normalisation it was trained with, so the datamodule's statistics must equal the VQ-VAE
file's (per-person entries; the partner entries, which only the DFoT uses, come from the datamodule).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torchmetrics import MeanMetric

from magnet.errors import CheckpointError, ConfigError
from magnet.models.dfot import DFoT, DFoTConfig, save_dfot
from magnet.models.dfot_losses import DFoTLoss
from magnet.models.diffusion import DiscreteDiffusion
from magnet.models.losses import value_mean_std
from magnet.models.tokens import latent_valid_mask, make_tokens, unpack_tokens
from magnet.models.vqvae import (
    PoseVQVAE,
    VQVAEConfig,
    fold_persons,
    load_vqvae,
    save_vqvae,
    unfold_persons,
    vqvae_inputs,
)
from magnet.representation import STATS_PER_PERSON, MotionStats, PackedLayout
from magnet.training.base import MagnetModule, stats_from_metadata, value_joints
from magnet.training.latent_cache import CachedLatentDataset, LatentCache

__all__ = ["DEFAULT_DFOT_LOSS_WEIGHTS", "DFoTModule", "load_stage1"]

NOISE_LEVEL_MODES = {"random_independent": "independent", "random_uniform": "uniform"}
CONTEXT_MODES = ("none", "fixed", "variable")
DEFAULT_DFOT_LOSS_WEIGHTS = {"latent": 1.0, "delta": 1.0, "partners": 1.0, "consistency": 0.1}


# ------------------------------------------------------------------------------------------ stage-1 loading


def load_stage1(path: str | Path) -> tuple[PoseVQVAE, MotionStats | None]:
    """The trained VQ-VAE and its normalisation statistics from a stage-1 artefact.

    ``path``: ``vqvae.safetensors`` written by ``VQVAEModule.export_weights`` (stats in the metadata as
    comma-separated floats; files without them, e.g. imported reference weights, give ``None``), a stage-1
    Lightning checkpoint (``checkpoint["magnet"]["stage"] == "vqvae"``; stats from its buffers), or a stage-1 run
    directory holding ``vqvae.safetensors`` (else ``checkpoints/last.ckpt``). Missing, corrupt or other-stage files
    raise a one-line :class:`CheckpointError`. The model is returned in eval mode on the CPU.
    """
    p = Path(path)
    if p.is_dir():
        for candidate in (p / "vqvae.safetensors", p / "checkpoints" / "last.ckpt"):
            if candidate.is_file():
                p = candidate
                break
        else:
            raise CheckpointError(f"{p} holds neither vqvae.safetensors nor checkpoints/last.ckpt; pass the stage-1 "
                                  "weights file (stage.vqvae_ckpt=<stage-1 run dir>/vqvae.safetensors)")
    if not p.is_file():
        raise CheckpointError(f"VQ-VAE file {p} not found; pass stage.vqvae_ckpt=<stage-1 run dir>/vqvae.safetensors")
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic[:2] == b"PK":  # a torch zip archive: a Lightning checkpoint
        return _load_stage1_ckpt(p)
    meta = _safetensors_metadata(p)
    fmt = meta.get("format")
    if fmt == "magnet-dfot-1":
        raise CheckpointError(f"{p} holds DFoT weights, not a VQ-VAE; pass the stage-1 vqvae.safetensors")
    model = load_vqvae(p)
    return model.eval(), stats_from_metadata(meta, p)


def _safetensors_metadata(p: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except Exception as exc:
        raise CheckpointError(f"cannot read VQ-VAE file {p} ({type(exc).__name__}); the file is corrupt or neither a "
                              "safetensors weights file nor a Lightning checkpoint") from exc


def _load_stage1_ckpt(p: Path) -> tuple[PoseVQVAE, MotionStats | None]:
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {p} cannot be read ({type(exc).__name__}); the file is corrupt or not a "
                              "Lightning checkpoint") from exc
    info = ckpt.get("magnet") if isinstance(ckpt, dict) else None
    stage = info.get("stage") if isinstance(info, dict) else None
    if stage != "vqvae":
        raise CheckpointError(f"checkpoint {p} is from stage {stage!r}, not 'vqvae'; pass the stage-1 VQ-VAE "
                              "(its vqvae.safetensors or checkpoints/last.ckpt)")
    state = ckpt.get("state_dict", {})
    try:
        model = PoseVQVAE(VQVAEConfig.from_dict(info["model_config"]))
        own = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
        model.load_state_dict(own, strict=True)
    except (KeyError, RuntimeError, ConfigError) as exc:
        raise CheckpointError(f"checkpoint {p}: the VQ-VAE weights or config are incomplete "
                              f"({' '.join(str(exc).split())[:160]})") from exc
    stats = None
    mean, std = state.get("stats_mean"), state.get("stats_std")
    if mean is not None and std is not None and bool(torch.isfinite(mean[STATS_PER_PERSON]).all()):
        stats = MotionStats(mean.double().numpy(), std.double().numpy(), source=str(p))
    return model.eval(), stats


# ------------------------------------------------------------------------------------------------- module


class DFoTModule(MagnetModule):
    """Trains :class:`magnet.models.dfot.DFoT` on the latents of a frozen stage-1 VQ-VAE.

    ``vqvae_ckpt``: stage-1 ``vqvae.safetensors``, a stage-1 ``.ckpt`` or run directory (:func:`load_stage1`);
    ``vqvae`` is its old name, still accepted (checkpoints written before the rename store it).
    ``model``: the :class:`DFoTConfig` fields as a dict (``conf/model/*.yaml``), a preset name (``paper`` |
    ``tiny``) or ``{preset: ..., **DFoTConfig overrides}``.
    ``objective`` / ``noise_sampling`` / ``min_snr_weight``: :class:`DiscreteDiffusion` options; ``noise_level``:
    ``random_independent`` | ``random_uniform``. ``context``: ``none`` | ``fixed`` | ``variable`` (prefix of
    ``context_len`` latent frames, resp. 1..``context_len`` per window, at level 0, dropped with
    ``context_dropout``). ``loss_weights``: ``latent``, ``delta``, ``partners``, ``consistency`` (each of the two
    consistency terms), warm-up ``consistency_warmup_steps``. Optimiser: AdamW on the DFoT only, linear warm-up then
    cosine to ``min_lr_ratio`` at ``total_steps``, held after. ``body_model``: SMPL-X file for validation FK (None:
    the default skeleton). ``stats``: :class:`MotionStats` or npz path (else the VQ-VAE file's / the datamodule's).
    ``latent_cache``: encode the training split once at fit start (:mod:`magnet.training.latent_cache`).
    ``vqvae_config``: the VQ-VAE's config (:meth:`VQVAEConfig.to_dict`). Saved in the hyper-parameters, so that
    ``DFoTModule.load_from_checkpoint`` rebuilds the VQ-VAE from it and restores its weights, statistics and the
    DFoT from the checkpoint alone: no file is read then (``vqvae_ckpt`` is only a record of where the VQ-VAE came
    from; the SMPL-X file, if any, is loaded on first use). Leave it None to train: the VQ-VAE comes from
    ``vqvae_ckpt``. The arguments are the keys of ``conf/stage/dfot.yaml``.
    """

    STAGE = "dfot"
    PROGRESS_METRIC = "loss"

    def __init__(
        self,
        vqvae_ckpt: str | None = None,
        model: str | dict[str, Any] = "paper",
        num_persons: int = 2,
        objective: str = "pred_x0",
        noise_sampling: str = "uniform",
        min_snr_weight: bool = False,
        noise_level: str = "random_independent",
        context: str = "none",
        context_len: int = 8,
        context_dropout: float = 0.1,
        loss_weights: dict[str, float] | None = None,
        consistency_warmup_steps: int = 1000,
        reference_partner_targets: bool = False,
        lr: float = 2e-4,
        weight_decay: float = 1e-4,
        adam_betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 1000,
        total_steps: int = 300000,
        min_lr_ratio: float = 0.05,
        body_model: str | None = None,
        latent_cache: bool = False,
        latent_cache_batch: int = 512,
        val_levels: tuple[int, ...] = (100, 500, 900),
        recon_level: int | None = 500,
        val_seed: int = 0,
        stats: MotionStats | str | None = None,
        vqvae_config: dict[str, Any] | None = None,
        vqvae: str | None = None,
    ):
        super().__init__()
        vqvae_ckpt = vqvae_ckpt or vqvae
        self.save_hyperparameters(ignore=["stats", "vqvae"])
        self.hparams["vqvae_ckpt"] = vqvae_ckpt
        self.check_optimiser_hparams()
        restoring = vqvae_config is not None
        if not vqvae_ckpt and not restoring:
            raise ConfigError("the DFoT trains on a frozen stage-1 VQ-VAE: pass stage.vqvae_ckpt=<stage-1 run dir>/"
                              "vqvae.safetensors (python train.py stage=dfot stage.vqvae_ckpt=...)")
        if noise_level not in NOISE_LEVEL_MODES:
            raise ConfigError(f"noise_level {noise_level!r} unknown; choose one of {list(NOISE_LEVEL_MODES)}")
        if context not in CONTEXT_MODES:
            raise ConfigError(f"context {context!r} unknown; choose one of {list(CONTEXT_MODES)}")
        if context != "none" and int(context_len) < 1:
            raise ConfigError(f"context_len must be >= 1 with context={context!r}, got {context_len}")
        if not 0.0 <= float(context_dropout) <= 1.0:
            raise ConfigError(f"context_dropout must be in [0, 1], got {context_dropout}")
        weights = dict(DEFAULT_DFOT_LOSS_WEIGHTS)
        unknown = sorted(set(loss_weights or {}) - set(weights))
        if unknown:
            raise ConfigError(f"unknown DFoT loss weight(s) {unknown}; known: {sorted(weights)}")
        weights.update({k: float(v) for k, v in (loss_weights or {}).items()})
        self.loss_weights = weights

        if restoring:  # weights and statistics come with the checkpoint's state dict
            self.vqvae, self._vqvae_stats = PoseVQVAE(VQVAEConfig.from_dict(vqvae_config)), None
        else:
            self.vqvae, self._vqvae_stats = load_stage1(vqvae_ckpt)
            self.hparams["vqvae_config"] = self.vqvae.config.to_dict()
        self.vqvae.requires_grad_(False)
        self.vqvae.eval()
        self.vqvae_source = str(vqvae_ckpt)
        f = self.vqvae.factor
        self.model = DFoT(DFoTConfig.from_spec(model), int(num_persons), self.vqvae.config.d_latent, f)
        self.packed_layout = PackedLayout(int(num_persons))
        self.token_layout = self.model.token_layout
        self.diffusion = DiscreteDiffusion(objective=objective, noise_sampling=noise_sampling,
                                           min_snr_weight=min_snr_weight)
        self.val_levels = [int(k) for k in val_levels]
        for k in self.val_levels + ([int(recon_level)] if recon_level is not None else []):
            if not 0 <= k < self.diffusion.max_t:
                raise ConfigError(f"validation level {k} out of range [0, {self.diffusion.max_t})")
        self.init_stats()
        self.loss_fn: DFoTLoss | None = None
        if stats is not None:
            stats = MotionStats.load(stats) if isinstance(stats, (str, Path)) else stats
            self.check_stats(stats, "the stats argument")
            self.set_stats(stats)
        elif self._vqvae_stats is not None and (num_persons == 1 or self._vqvae_stats.has_partner_stats):
            self.set_stats(self._vqvae_stats)
        self.init_body_model(body_model, load_now=not restoring)
        self.metrics_fps = 30
        self.latent_cache: LatentCache | None = None
        names = ["loss", "mpjpe_mm", "mpjpe_vqvae_mm"] + [f"loss_k{k}" for k in self.val_levels]
        self.val_metrics = torch.nn.ModuleDict({k: MeanMetric() for k in names})

    # ------------------------------------------------------------------------------------------ setup

    def train(self, mode: bool = True) -> DFoTModule:
        """Switch train/eval mode; the frozen VQ-VAE always stays in eval mode."""
        super().train(mode)
        self.vqvae.eval()
        return self

    def set_stats(self, stats: MotionStats) -> None:
        """Store the normalisation statistics (``[361]`` mean/std) and build the loss with them."""
        super().set_stats(stats)
        w = self.loss_weights
        consistency = w["consistency"] if self.hparams.objective == "pred_x0" else 0.0
        self.loss_fn = DFoTLoss(
            self.token_layout, stats, latent_weight=w["latent"], delta_weight=w["delta"],
            partner_weight=w["partners"], consistency_weight=consistency,
            warmup_steps=self.hparams.consistency_warmup_steps,
            reference_partner_targets=self.hparams.reference_partner_targets,
        ).to(self.stats_mean.device)

    def check_stats(self, stats: MotionStats, where: str) -> None:
        """ConfigError unless ``stats`` equal the VQ-VAE file's on the per-person entries (if it has any)."""
        ref = self._vqvae_stats
        if ref is None:
            return
        own = STATS_PER_PERSON
        for name, a, b in (("mean", stats.mean, ref.mean), ("std", stats.std, ref.std)):
            bad = np.nonzero(~np.isclose(np.asarray(a)[own], np.asarray(b)[own], rtol=1e-5, atol=1e-8))[0]
            if bad.size:
                i = int(bad[0])
                raise ConfigError(
                    f"normalisation {name} of {where} ({stats.source}) differs from the VQ-VAE's ({ref.source}) at "
                    f"entry {i} ({_field_of(i)}; {a[i]:.6g} vs {b[i]:.6g}); train the DFoT on the data (and "
                    "mean/std file) the VQ-VAE was trained with")

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            return
        if int(getattr(dm, "person_num", self.model.num_persons)) != self.model.num_persons:
            raise ConfigError(f"the DFoT has num_persons={self.model.num_persons} but the datamodule has "
                              f"person_num={dm.person_num}; set both from dataset.person_num")
        seq = int(getattr(dm, "sequence_len", 0) or 0)
        if seq % self.vqvae.factor:
            raise ConfigError(f"sequence_len {seq} is not a multiple of the VQ-VAE time factor {self.vqvae.factor}")
        dm_stats = getattr(dm, "stats", None)
        if dm_stats is not None:
            self.check_stats(dm_stats, "the datamodule")
            self.set_stats(dm_stats)  # equal on the VQ-VAE's entries; supplies the partner statistics

    def frozen_modules(self) -> list[torch.nn.Module]:
        return [self.vqvae]

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if not self.hparams.latent_cache:
            return
        dm = getattr(self.trainer, "datamodule", None)
        train_set = getattr(dm, "train_set", None)
        if train_set is None or not hasattr(train_set, "datasets"):
            raise ConfigError("latent_cache=true needs the datamodules.MotionDataModule (its train_set); "
                              "set stage.latent_cache=false for other datamodules")
        base = train_set.base if isinstance(train_set, CachedLatentDataset) else train_set
        self.latent_cache = LatentCache.build(self.vqvae, base, self.hparams.latent_cache_batch, self.device)
        dm.train_set = CachedLatentDataset(base, self.latent_cache)
        c = self.latent_cache
        rank_zero_info(f"latent cache: {c.num_windows} windows encoded in {c.build_seconds:.1f} s "
                       f"({c.nbytes / 1e6:.1f} MB of code indices)")

    # ------------------------------------------------------------------------------------------ tokens

    def clean_tokens(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Clean tokens ``x0[B, T/4, P, W]`` and token validity ``valid[B, T/4, P]`` (bool) of a batch.

        Latents come from ``batch["latent_idx"]`` (the latent cache) when present, else from encoding the batch
        with the frozen VQ-VAE (``no_grad``, persons folded into the batch).
        """
        x = batch["x"]
        if x.dim() != 4 or x.shape[2] != self.model.num_persons or x.shape[3] != self.packed_layout.dim:
            raise ConfigError(f"DFoT batch x has shape {tuple(x.shape)}, expected [B, T, {self.model.num_persons}, "
                              f"{self.packed_layout.dim}]; the datamodule's person_num must equal num_persons")
        f = self.vqvae.factor
        if "latent_idx" in batch:
            idx = batch["latent_idx"].to(x.device)
            latent = torch.where((idx >= 0)[..., None],
                                 self.vqvae.quantizer.dequantize(idx.clamp_min(0)).to(x.dtype),
                                 x.new_zeros(()))
        else:
            value, enc_cond, _, mask = vqvae_inputs(x, self.packed_layout, f)
            with torch.no_grad():
                z, _ = self.vqvae.encode(value, enc_cond, mask)
            latent = unfold_persons(z.to(x.dtype), x.shape[2])
        valid = batch["valid"] if "valid" in batch else x[..., self.packed_layout.mask][..., 0] > 0.5
        return make_tokens(x, latent, self.packed_layout), latent_valid_mask(valid, f)

    def training_levels(self, valid: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Noise levels ``[B, Tz, P]`` long and the loss mask ``[B, Tz, P]`` bool for a training batch.

        Invalid tokens are at the last level. With a context mode the prefix tokens are at level 0 (and out of the
        loss), or, with probability ``context_dropout`` per window, at the last level (in the loss).
        """
        levels = self.diffusion.training_levels(valid, NOISE_LEVEL_MODES[self.hparams.noise_level], generator)
        loss_mask = valid.clone()
        mode = self.hparams.context
        if mode == "none":
            return levels, loss_mask
        b, tz = valid.shape[:2]
        n = min(int(self.hparams.context_len), tz)
        if mode == "fixed":
            length = torch.full((b,), n, dtype=torch.long, device=valid.device)
        else:
            length = torch.randint(1, n + 1, (b,), generator=generator, device=valid.device)
        prefix = torch.arange(tz, device=valid.device)[None, :] < length[:, None]            # [B, Tz]
        dropped = torch.rand(b, generator=generator, device=valid.device) < self.hparams.context_dropout
        ctx = (prefix & ~dropped[:, None])[..., None] & valid                                 # clean context
        drop = (prefix & dropped[:, None])[..., None] & valid                                 # dropped context
        levels = torch.where(ctx, torch.zeros_like(levels), levels)
        levels = torch.where(drop, torch.full_like(levels, self.diffusion.last_level), levels)
        return levels, loss_mask & ~ctx

    def _stats_ready(self) -> DFoTLoss:
        if self.loss_fn is None:
            raise RuntimeError("DFoTModule has no normalisation statistics: pass stats=, use a VQ-VAE file that "
                               "carries them, or train with a datamodule")
        return self.loss_fn

    def loss_terms(self, x0: Tensor, levels: Tensor, loss_mask: Tensor, step: int,
                   noise: Tensor | None = None) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """Noise ``x0`` to ``levels``, run the network, compute the loss -> ``(terms, x0_hat, x_k)``."""
        loss_fn = self._stats_ready()
        if noise is None:
            noise = torch.randn_like(x0)
        x_k = self.diffusion.q_sample(x0, levels, noise)
        out = self.model(x_k, levels)
        target = self.diffusion.training_target(x0, noise, levels)
        weight = self.diffusion.loss_weight(levels, x0.dtype) if self.diffusion.use_min_snr_weight else None
        terms = loss_fn(out, target, loss_mask, step=step, token_weight=weight)
        x0_hat, _ = self.diffusion.model_predictions(out, x_k, levels)
        return terms, x0_hat, x_k

    # ------------------------------------------------------------------------------------------ steps

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        x0, valid = self.clean_tokens(batch)
        levels, loss_mask = self.training_levels(valid)
        terms, _, _ = self.loss_terms(x0, levels, loss_mask, self.global_step)
        bs = x0.shape[0]
        self.log("train/loss", terms["loss"], prog_bar=True, batch_size=bs)
        for key, val in terms.items():
            if key != "loss":
                self.log(f"train/{key}", val, batch_size=bs)
        if self._trainer is not None and self.trainer.optimizers:
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=bs)
        return terms["loss"]

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Any] | None:
        """Denoising loss at the fixed ``val_levels``; one-step x0 reconstruction at ``recon_level`` decoded and
        placed on the GT trajectory. Returns ``joints_pred`` / ``joints_gt`` ``[B*P, T, 22, 3]`` (world, metres),
        ``valid [B*P, T]`` and ``num_persons`` for :class:`callbacks.ValidationMetrics`."""
        x0, valid = self.clean_tokens(batch)
        n_tok = int(valid.sum())
        if n_tok == 0:
            return None
        gen = torch.Generator(device=x0.device).manual_seed(int(self.hparams.val_seed) * 100003 + batch_idx)
        noise = torch.randn(x0.shape, generator=gen, dtype=x0.dtype, device=x0.device)
        warm = self._stats_ready().warmup_steps  # validation always uses the full consistency weight
        last = self.diffusion.last_level
        recon_level = self.hparams.recon_level
        x0_recon = None
        losses = []
        for k in sorted(set(self.val_levels + ([int(recon_level)] if recon_level is not None else []))):
            levels = torch.where(valid, torch.full_like(valid, k, dtype=torch.long),
                                 torch.full_like(valid, last, dtype=torch.long))
            terms, x0_hat, _ = self.loss_terms(x0, levels, valid, warm, noise)
            if k in self.val_levels:
                self.val_metrics[f"loss_k{k}"].update(terms["loss"], n_tok)
                losses.append(terms["loss"])
            if recon_level is not None and k == int(recon_level):
                x0_recon = x0_hat
        if losses:
            self.val_metrics["loss"].update(torch.stack(losses).mean(), n_tok)
        if x0_recon is None:
            return None
        return self._reconstruction(batch, x0, x0_recon)

    @torch.no_grad()
    def _reconstruction(self, batch: dict[str, Tensor], x0: Tensor, x0_hat: Tensor) -> dict[str, Any] | None:
        x = batch["x"]
        p = x.shape[2]
        value, enc_cond, dec_gt, mask = vqvae_inputs(x, self.packed_layout, self.vqvae.factor)
        if not bool(mask.any()):
            return None
        latent_mask = mask[:, ::self.vqvae.factor]
        pred = unpack_tokens(x0_hat, self.token_layout)
        gt = unpack_tokens(x0, self.token_layout)
        betas_k = dec_gt[..., :10]
        dec_pred = torch.cat([betas_k, fold_persons(pred["delta"]).to(dec_gt.dtype)], dim=-1)
        recon = self.vqvae.decode(fold_persons(pred["pose_latent"]).to(value.dtype), dec_pred, latent_mask)
        recon_vq = self.vqvae.decode(fold_persons(gt["pose_latent"]).to(value.dtype), dec_gt, latent_mask)
        mean, std = value_mean_std(self.stats_mean, self.stats_std)
        mean, std = mean.to(value), std.to(value)
        betas = self.denormalise(enc_cond, slice(0, 10)).to(value.dtype)
        sl = self.packed_layout.world_canon
        world = fold_persons(self.denormalise(x, sl).to(value.dtype))
        joints_gt = value_joints(self.body_model, value * std + mean, betas, world)
        joints_pred = value_joints(self.body_model, recon * std + mean, betas, world)
        joints_vq = value_joints(self.body_model, recon_vq * std + mean, betas, world)
        n = int(mask.sum())
        self.val_metrics["mpjpe_mm"].update((joints_pred - joints_gt).norm(dim=-1).mean(-1)[mask].mean() * 1000, n)
        self.val_metrics["mpjpe_vqvae_mm"].update((joints_vq - joints_gt).norm(dim=-1).mean(-1)[mask].mean() * 1000, n)
        return {"joints_pred": joints_pred, "joints_gt": joints_gt, "valid": mask, "num_persons": p}

    @torch.no_grad()
    def sample_windows(self, batch: dict[str, Tensor], max_windows: int, sampling_steps: int = 10, seed: int = 0,
                       guidance: bool = False) -> dict[str, Any] | None:
        """Generate one joint sample for each of the first ``max_windows`` fully valid windows of a validation
        batch with :class:`magnet.sampling.Sampler` (context = the window's first 32 frames, ``sampling_steps``
        DDIM steps; x0 guidance off unless ``guidance``). Returns the callback contract (``joints_pred`` /
        ``joints_gt [N*P, T, 22, 3]``, ``valid`` = the generated frames, ``num_persons``) or None when the batch
        has no fully valid window."""
        from magnet.representation import world_joints
        from magnet.sampling.sampler import Sampler

        x, valid = batch["x"], batch["valid"]
        keep = torch.nonzero(valid.all(dim=2).all(dim=1)).flatten()[: int(max_windows)]
        if keep.numel() == 0 or not self.has_stats:
            return None
        if getattr(self, "_sampler", None) is None or self._sampler.device != self.device:
            stats = MotionStats(self.stats_mean.cpu().numpy(), self.stats_std.cpu().numpy(), source="DFoTModule")
            self._sampler = Sampler(self.model, self.vqvae, stats, self.diffusion_config(), self.body_model,
                                    self.device)
        sampler = self._sampler
        windows = x[keep]
        out = sampler.generate_windows(windows, seed=seed, sampling_steps=int(sampling_steps),
                                       use_smoothing_guidance=guidance, use_foot_skating_guidance=guidance)
        gt = world_joints(sampler.stats.denormalise(windows.float()), self.body_model)      # [B, T, P, 22, 3]
        b, t, p = gt.shape[:3]
        frames = torch.arange(t, device=x.device) >= out.context_frames
        return {"joints_pred": fold_persons(out.joints).to(gt.dtype), "joints_gt": fold_persons(gt),
                "valid": frames[None].expand(b * p, t), "num_persons": p}

    # ------------------------------------------------------------------------------------------ optimiser

    def trainable_parameters(self):
        return self.model.parameters()  # the frozen VQ-VAE is not handed to the optimiser

    # ------------------------------------------------------------------------------------------ checkpoints

    def diffusion_config(self) -> dict[str, Any]:
        d = self.diffusion
        return {"max_t": d.max_t, "objective": d.objective, "noise_sampling": d.noise_sampling,
                "min_snr_weight": d.use_min_snr_weight, "logsnr_mu": d.logsnr_mu, "logsnr_sigma": d.logsnr_sigma}

    def checkpoint_info(self) -> dict[str, Any]:
        return {
            "model_config": self.model.config.to_dict(),
            "num_persons": self.model.num_persons,
            "latent_dim": self.token_layout.latent_dim,
            "frames_per_latent": self.token_layout.frames_per_latent,
            "vqvae_config": self.vqvae.config.to_dict(),
            "vqvae_source": self.vqvae_source,
            "diffusion": self.diffusion_config(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("state_dict", {})
        mean, std = state.get("stats_mean"), state.get("stats_std")
        if self._vqvae_stats is None and mean is not None and std is not None \
                and bool(torch.isfinite(mean[STATS_PER_PERSON]).all()):
            # no statistics from a VQ-VAE file (restored from the checkpoint alone, or a file without them): the
            # checkpoint's are the ones the VQ-VAE was checked against in training; build the loss with them
            stats = MotionStats(mean.double().cpu().numpy(), std.double().cpu().numpy(), source="the checkpoint")
            self._vqvae_stats = stats
            self.set_stats(stats)
        saved = checkpoint.get("magnet", {}).get("vqvae_source")
        if saved is not None and Path(saved).resolve() != Path(self.vqvae_source).resolve():
            warnings.warn(f"resuming: the checkpoint's own copy of the VQ-VAE (trained from {saved}) is used, not "
                          f"stage.vqvae_ckpt={self.vqvae_source}", stacklevel=2)

    def export_weights(self, path: str | Path) -> Path:
        """Write ``path`` (the DFoT: :func:`magnet.models.dfot.save_dfot`, with the diffusion options as
        ``diffusion.<key>`` and the stats in the metadata) and ``vqvae.safetensors`` next to it (the frozen
        VQ-VAE with the same stats), so the directory holds everything the sampler needs. Returns ``path``."""
        path = Path(path)
        meta = {"stage": "dfot", "vqvae": "vqvae.safetensors",
                **{f"diffusion.{k}": json.dumps(v) if isinstance(v, bool) else str(v)
                   for k, v in self.diffusion_config().items()}}
        meta.update(self.stats_metadata())
        vq_meta = {"stage": "vqvae", "source": self.vqvae_source, **self.stats_metadata()}
        save_vqvae(self.vqvae, path.with_name("vqvae.safetensors"), metadata=vq_meta)
        return save_dfot(self.model, path, metadata=meta)


# ------------------------------------------------------------------------------------------------ helpers


def _field_of(i: int) -> str:
    for name, s in PackedLayout(1).fields().items():
        if s.start <= i < s.stop:
            return f"field {name}"
    return "partner statistics"
