"""Pose VQ-VAE (stage 1): a per-person 1D-conv encoder, an EMA vector quantizer and a conditional decoder.

Shapes (reference spec 2.1-2.4, paper preset): persons are folded into the batch, ``N = B * P``.

* value ``x[N, T, 135]``: normalised body 6D (126) ++ normalised ``T_canonical_root`` 9D (9)
* encoder condition ``enc_cond[N, T, 19]``: normalised betas (10) ++ normalised delta (9)
* decoder condition ``dec_cond[N, T/4, 46]``: betas of frame 4k (10) ++ delta of frames 4k..4k+3 (36)
* latents ``z[N, T/4, 512]``; frame mask ``mask[N, T]``; latent mask ``[N, T/4]`` = validity of frame 4k

Module names (``encoder.conv_in``, ``encoder.down.{i}.res.blocks.{j}.conv1`` ...) differ from the reference's
``nn.Sequential`` indices; :mod:`magnet.models.reference_import` maps one onto the other.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from magnet.errors import ConfigError
from magnet.models.weights import (
    PresetConfig,
    config_from_metadata,
    load_state_strict,
    read_weights,
    save_weights,
)

__all__ = [
    "BETAS_DIM",
    "DELTA_DIM",
    "ENC_COND_DIM",
    "VALUE_DIM",
    "VQVAE_PRESETS",
    "Decoder",
    "Encoder",
    "PoseVQVAE",
    "QuantizeEMAReset",
    "ResBlock",
    "Resnet1D",
    "VQVAEConfig",
    "code_usage_stats",
    "fold_persons",
    "latent_mask_from_frames",
    "load_vqvae",
    "project_l2_band",
    "replace_value",
    "save_vqvae",
    "unfold_persons",
    "vqvae_inputs",
]

BETAS_DIM = 10
DELTA_DIM = 9
VALUE_DIM = 21 * 6 + 9
"""135: body 6D ++ T_canonical_root 9D."""
ENC_COND_DIM = BETAS_DIM + DELTA_DIM
"""19: betas ++ delta."""


# ------------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class VQVAEConfig(PresetConfig):
    """Sizes and quantizer settings of :class:`PoseVQVAE`.

    ``down_t`` stride-2 stages give the time factor ``2 ** down_t`` (4 in the paper); the decoder condition then
    has ``10 + 9 * factor`` channels. ``r_max`` / ``r_min`` bound the L2 norm of every code vector (None = off).
    """

    d_hidden: int = 512
    d_latent: int = 512
    depth: int = 3
    down_t: int = 2
    dilation_growth: int = 3
    codebook_size: int = 1024
    ema_mu: float = 0.99
    alive_thresh: float = 1.0
    r_max: float | None = 45.0
    r_min: float | None = None

    def __post_init__(self) -> None:
        for name in ("d_hidden", "d_latent", "depth", "codebook_size", "dilation_growth"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"VQ-VAE config: {name} must be >= 1, got {getattr(self, name)}")
        if int(self.down_t) < 0:
            raise ConfigError(f"VQ-VAE config: down_t must be >= 0, got {self.down_t}")
        if not 0.0 <= float(self.ema_mu) < 1.0:
            raise ConfigError(f"VQ-VAE config: ema_mu must be in [0, 1), got {self.ema_mu}")
        if self.r_max is not None and self.r_min is not None and float(self.r_min) > float(self.r_max):
            raise ConfigError(f"VQ-VAE config: r_min {self.r_min} is larger than r_max {self.r_max}")

    @property
    def factor(self) -> int:
        """Temporal downsampling factor (frames per latent frame)."""
        return 2 ** int(self.down_t)

    @property
    def dec_cond_dim(self) -> int:
        """Decoder condition channels: betas (10) ++ ``factor`` deltas (9 each); 46 for the paper."""
        return BETAS_DIM + DELTA_DIM * self.factor


VQVAE_PRESETS: dict[str, VQVAEConfig] = {
    # The reference's sizes (spec 2.1, 2.2, 2.6): 19,168,903 trainable parameters without the dead z_mask.
    "paper": VQVAEConfig(),
    # Trains on a CPU in minutes. r_max keeps the paper's ratio r_max / sqrt(d_latent) (45 / sqrt(512) ~ 2).
    "tiny": VQVAEConfig(d_hidden=128, d_latent=64, depth=2, codebook_size=256, r_max=16.0),
}
VQVAEConfig.LABEL = "VQ-VAE"
VQVAEConfig.PRESETS = VQVAE_PRESETS


# ---------------------------------------------------------------------------------------------- conv nets


def _channel_norm(norm: nn.LayerNorm, x: Tensor) -> Tensor:
    """LayerNorm over the channel axis of ``x[N, C, T]``."""
    return norm(x.transpose(1, 2)).transpose(1, 2)


class ResBlock(nn.Module):
    """Pre-activation residual block on ``[N, C, T]``: LN -> GELU -> conv k3 (dilated) -> LN -> GELU -> conv k1."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.dilation = int(dilation)
        self.norm1 = nn.LayerNorm(channels)
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.norm2 = nn.LayerNorm(channels)
        self.conv2 = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.gelu(_channel_norm(self.norm1, x)))
        h = self.conv2(F.gelu(_channel_norm(self.norm2, h)))
        return x + h


class Resnet1D(nn.Module):
    """``depth`` residual blocks with dilations ``growth ** d``, applied largest first (9, 3, 1 for the paper)."""

    def __init__(self, channels: int, depth: int, growth: int = 3):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(channels, growth**d) for d in reversed(range(depth)))

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class DownBlock(nn.Module):
    """Stride-2 conv (kernel 4, pad 1: halves T) followed by a Resnet1D."""

    def __init__(self, channels: int, depth: int, growth: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 4, stride=2, padding=1)
        self.res = Resnet1D(channels, depth, growth)

    def forward(self, x: Tensor) -> Tensor:
        return self.res(self.conv(x))


class UpBlock(nn.Module):
    """Resnet1D -> nearest upsampling x2 -> conv k3."""

    def __init__(self, channels: int, depth: int, growth: int):
        super().__init__()
        self.res = Resnet1D(channels, depth, growth)
        self.conv = nn.Conv1d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(self.res(x), scale_factor=2, mode="nearest"))


class Encoder(nn.Module):
    """``[N, T, d_in + d_cond] -> [N, T / factor, d_latent]`` (conv, ReLU, down blocks, conv, LayerNorm)."""

    def __init__(self, d_in: int, config: VQVAEConfig):
        super().__init__()
        c = config.d_hidden
        self.conv_in = nn.Conv1d(d_in, c, 3, padding=1)
        self.down = nn.ModuleList(DownBlock(c, config.depth, config.dilation_growth) for _ in range(config.down_t))
        self.conv_out = nn.Conv1d(c, config.d_latent, 3, padding=1)
        self.norm_out = nn.LayerNorm(config.d_latent)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.conv_in(x.transpose(1, 2)))
        for block in self.down:
            h = block(h)
        return self.norm_out(self.conv_out(h).transpose(1, 2))


class Decoder(nn.Module):
    """``[N, Tz, d_latent + d_cond] -> [N, Tz * factor, d_out]`` (conv, ReLU, up blocks, conv, ReLU, conv)."""

    def __init__(self, d_in: int, d_out: int, config: VQVAEConfig):
        super().__init__()
        c = config.d_hidden
        self.conv_in = nn.Conv1d(d_in, c, 3, padding=1)
        self.up = nn.ModuleList(UpBlock(c, config.depth, config.dilation_growth) for _ in range(config.down_t))
        self.conv_mid = nn.Conv1d(c, c, 3, padding=1)
        self.conv_out = nn.Conv1d(c, d_out, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = F.relu(self.conv_in(z.transpose(1, 2)))
        for block in self.up:
            h = block(h)
        return self.conv_out(F.relu(self.conv_mid(h))).transpose(1, 2)


# ----------------------------------------------------------------------------------------------- quantizer


def project_l2_band(w: Tensor, r_min: float | None = None, r_max: float | None = None, eps: float = 1e-6) -> Tensor:
    """Rescale each row of ``w[K, d]`` so its L2 norm lies in ``[r_min, r_max]`` (None = no bound)."""
    n = w.norm(dim=-1, keepdim=True).clamp_min(eps)
    scale = torch.ones_like(n)
    if r_max is not None:
        scale = torch.minimum(scale, float(r_max) / n)
    if r_min is not None:
        scale = torch.maximum(scale, float(r_min) / n)
    return w * scale


def code_usage_stats(counts: Tensor) -> dict[str, Tensor]:
    """Statistics of one batch's code assignment counts ``counts[K]``.

    ``perplexity`` = exp(entropy of the assignment distribution) (K if uniform, 1 if one code takes all),
    ``usage`` = fraction of codes used at least once, ``top10_share`` = share of the 10 most used codes.
    """
    counts = counts.detach().float()
    total = counts.sum().clamp_min(1e-6)
    prob = counts / total
    return {
        "perplexity": torch.exp(-(prob * torch.log(prob + 1e-7)).sum()),
        "usage": (counts > 0).float().mean(),
        "top10_share": prob.topk(min(10, counts.numel())).values.sum(),
    }


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class QuantizeEMAReset(nn.Module):
    """Nearest-code vector quantizer whose codebook is learned by EMA, with dead-code reset (spec 2.2).

    Buffers (all persistent): ``codebook[K, d]``, ``code_sum[K, d]``, ``code_count[K]`` and ``initialised`` (bool).
    ``initialised`` is a buffer, so loading a trained state dict never re-initialises the codebook (the
    reference kept it as a plain attribute and wiped the codebook on resume).

    In training mode a forward pass (1) initialises the codebook from the first ``K`` valid vectors of the first
    batch, (2) assigns codes, (3) updates the EMA statistics, resets dead codes to the index-aligned valid vectors
    of the batch and projects the codebook into the L2-norm band. Under ``torch.distributed`` the batch
    statistics are all-reduced and the random parts (init, reset vectors) are broadcast, so every rank keeps the
    same codebook.
    """

    def __init__(
        self,
        num_codes: int,
        dim: int,
        ema_mu: float = 0.99,
        alive_thresh: float = 1.0,
        r_max: float | None = None,
        r_min: float | None = None,
    ):
        super().__init__()
        self.num_codes = int(num_codes)
        self.dim = int(dim)
        self.ema_mu = float(ema_mu)
        self.alive_thresh = float(alive_thresh)
        self.r_max = r_max
        self.r_min = r_min
        self.register_buffer("codebook", torch.zeros(self.num_codes, self.dim))
        self.register_buffer("code_sum", torch.zeros(self.num_codes, self.dim))
        self.register_buffer("code_count", torch.zeros(self.num_codes))
        self.register_buffer("initialised", torch.tensor(False))

    def extra_repr(self) -> str:
        return (f"num_codes={self.num_codes}, dim={self.dim}, ema_mu={self.ema_mu}, "
                f"alive_thresh={self.alive_thresh}, r_max={self.r_max}, r_min={self.r_min}")

    @property
    def is_initialised(self) -> bool:
        return bool(self.initialised.item())

    # -- assignment

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Nearest code by squared L2 distance (computed in at least fp32, autocast off).

        ``z[..., d] -> (z_q[..., d] (codebook vectors, no gradient to z), idx[...] long)``.
        """
        if z.shape[-1] != self.dim:
            raise ValueError(f"quantize: expected last dim {self.dim}, got shape {tuple(z.shape)}")
        lead = z.shape[:-1]
        dtype = torch.promote_types(z.dtype, torch.float32)
        with torch.autocast(device_type=z.device.type, enabled=False):
            x = z.detach().reshape(-1, self.dim).to(dtype)
            c = self.codebook.to(dtype)
            dist = (x * x).sum(-1, keepdim=True) - 2.0 * (x @ c.t()) + (c * c).sum(-1)[None, :]
            idx = dist.argmin(dim=-1)
        idx = idx.reshape(lead)
        return self.dequantize(idx).to(z.dtype), idx

    def dequantize(self, idx: Tensor) -> Tensor:
        """Code vectors of ``idx[...]`` -> ``[..., d]``."""
        return F.embedding(idx, self.codebook)

    # -- codebook maintenance (no gradient)

    def _tile(self, x: Tensor) -> Tensor:
        """First ``K`` rows of ``x[n, d]``, tiled with Gaussian jitter (sigma 0.01/sqrt(d)) when ``n < K``."""
        n = x.shape[0]
        if n >= self.num_codes:
            return x[: self.num_codes]
        reps = math.ceil(self.num_codes / n)
        out = x.repeat(reps, 1)
        out = out + torch.randn_like(out) * (0.01 / math.sqrt(self.dim))
        return out[: self.num_codes]

    def _shared_candidates(self, x: Tensor) -> Tensor | None:
        """``K`` candidate vectors from the valid vectors ``x[n, d]``, identical on every rank; None if no rank has any.

        Under torch.distributed the lowest rank that has vectors provides them (broadcast).
        """
        local = self._tile(x) if x.shape[0] > 0 else None
        if not _distributed():
            return local
        dist = torch.distributed
        world, rank = dist.get_world_size(), dist.get_rank()
        src = torch.tensor([rank if local is not None else world], device=x.device)
        dist.all_reduce(src, op=dist.ReduceOp.MIN)
        src_rank = int(src.item())
        if src_rank == world:
            return None
        buf = local if local is not None else torch.zeros(self.num_codes, self.dim, device=x.device, dtype=x.dtype)
        buf = buf.contiguous()
        dist.broadcast(buf, src=src_rank)
        return buf

    def _project(self, w: Tensor) -> Tensor:
        if self.r_max is None and self.r_min is None:
            return w
        return project_l2_band(w, r_min=self.r_min, r_max=self.r_max)

    @torch.no_grad()
    def init_codebook(self, x: Tensor) -> bool:
        """Initialise from the valid vectors ``x[n, d]`` (first K in order; tiled with jitter if n < K).

        Returns False (and leaves the module uninitialised) when no rank has any valid vector.
        """
        x = x.detach().to(self.codebook.dtype)
        w = self._shared_candidates(x)
        if w is None:
            return False
        w = self._project(w)
        self.codebook.copy_(w)
        self.code_sum.copy_(w)
        self.code_count.fill_(1.0)
        self.initialised.fill_(True)
        return True

    @torch.no_grad()
    def update_codebook(self, x: Tensor, idx: Tensor) -> Tensor:
        """EMA update from the valid vectors ``x[n, d]`` and their codes ``idx[n]``; returns the batch counts ``[K]``.

        code_sum <- mu code_sum + (1 - mu) sum(assigned x); code_count <- mu code_count + (1 - mu) count.
        A code with code_count >= alive_thresh becomes code_sum / code_count; a dead code k is reset to the k-th
        (tiled) valid vector of the batch. Finally the codebook is projected into the norm band.
        """
        x = x.detach().to(self.codebook.dtype)
        batch_count = torch.bincount(idx, minlength=self.num_codes).to(self.codebook.dtype)
        batch_sum = torch.zeros_like(self.code_sum).index_add_(0, idx, x)
        if _distributed():
            torch.distributed.all_reduce(batch_sum)
            torch.distributed.all_reduce(batch_count)
        code_rand = self._shared_candidates(x)
        if code_rand is None:  # no valid vector anywhere: nothing to learn from
            return batch_count
        mu = self.ema_mu
        self.code_sum.mul_(mu).add_(batch_sum, alpha=1.0 - mu)
        self.code_count.mul_(mu).add_(batch_count, alpha=1.0 - mu)
        alive = (self.code_count >= self.alive_thresh)[:, None]
        mean = self.code_sum / self.code_count.clamp_min(1e-6)[:, None]
        self.codebook.copy_(self._project(torch.where(alive, mean, code_rand)))
        return batch_count

    # -- forward

    def forward(
        self, z: Tensor, valid: Tensor | None = None, weight: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """Quantize ``z[N, Tz, d]``.

        ``valid[N, Tz]`` (bool) marks real latent frames (default all); ``weight[N, Tz]`` weights the commitment
        loss (default ``valid``). Returns ``(z_q_st[N, Tz, d], commit_loss[], idx[N, Tz], stats)``:
        ``z_q_st = z + sg(z_q - z)`` with invalid frames set to 0; ``commit_loss`` = weighted mean over tokens
        of mean_d (z - sg(z_q))^2; ``stats``: ``perplexity``, ``usage``, ``top10_share`` of the valid
        assignments and ``dead_codes`` (codes with EMA count below alive_thresh).
        """
        if z.dim() != 3 or z.shape[-1] != self.dim:
            raise ValueError(f"QuantizeEMAReset: expected z[N, Tz, {self.dim}], got {tuple(z.shape)}")
        if valid is None:
            valid = torch.ones(z.shape[:2], dtype=torch.bool, device=z.device)
        valid = valid.to(torch.bool)
        if valid.shape != z.shape[:2]:
            raise ValueError(f"QuantizeEMAReset: valid {tuple(valid.shape)} does not match z {tuple(z.shape)}")
        flat_valid = valid.reshape(-1)
        z_flat = z.reshape(-1, self.dim)

        if self.training and not self.is_initialised:
            self.init_codebook(z_flat[flat_valid])

        z_q, idx = self.quantize(z)

        w = valid.to(z.dtype) if weight is None else weight.to(z.dtype)
        per_token = (z - z_q.detach()).pow(2).mean(-1)
        commit_loss = (per_token * w).sum() / w.sum().clamp_min(1e-7)

        valid_idx = idx.reshape(-1)[flat_valid]
        if self.training and self.is_initialised:
            counts = self.update_codebook(z_flat[flat_valid], valid_idx)
        else:
            counts = torch.bincount(valid_idx, minlength=self.num_codes)
        stats = code_usage_stats(counts)
        stats["dead_codes"] = (self.code_count < self.alive_thresh).sum().float()

        z_q_st = z + (z_q - z).detach()
        z_q_st = torch.where(valid[..., None], z_q_st, torch.zeros_like(z_q_st))
        return z_q_st, commit_loss, idx, stats


# -------------------------------------------------------------------------------------------------- model


def latent_mask_from_frames(mask: Tensor, factor: int) -> Tensor:
    """Latent validity ``[N, T/factor]`` (bool) from a frame mask ``[N, T]``: latent k takes frame ``factor*k``."""
    return mask[:, ::factor] > 0.5


class PoseVQVAE(nn.Module):
    """The pose VQ-VAE: ``Encoder`` -> ``QuantizeEMAReset`` -> ``Decoder`` (see module docstring for shapes)."""

    def __init__(self, config: VQVAEConfig | str = "paper"):
        super().__init__()
        if isinstance(config, str):
            config = VQVAEConfig.preset(config)
        self.config = config
        self.encoder = Encoder(VALUE_DIM + ENC_COND_DIM, config)
        self.quantizer = QuantizeEMAReset(
            config.codebook_size, config.d_latent, config.ema_mu, config.alive_thresh, config.r_max, config.r_min
        )
        self.decoder = Decoder(config.d_latent + config.dec_cond_dim, VALUE_DIM, config)

    @property
    def factor(self) -> int:
        return self.config.factor

    # -- checks

    def _check_frames(self, x: Tensor, enc_cond: Tensor, mask: Tensor | None) -> None:
        if x.dim() != 3 or x.shape[-1] != VALUE_DIM:
            raise ValueError(f"PoseVQVAE: expected x[N, T, {VALUE_DIM}], got {tuple(x.shape)}")
        if enc_cond.shape != (*x.shape[:2], ENC_COND_DIM):
            raise ValueError(f"PoseVQVAE: expected enc_cond[N, T, {ENC_COND_DIM}] matching x {tuple(x.shape)}, "
                             f"got {tuple(enc_cond.shape)}")
        if x.shape[1] % self.factor:
            raise ConfigError(f"sequence length T={x.shape[1]} is not a multiple of the VQ-VAE time factor "
                              f"{self.factor}; use a window length divisible by {self.factor}")
        if mask is not None and tuple(mask.shape) != tuple(x.shape[:2]):
            raise ValueError(f"PoseVQVAE: mask {tuple(mask.shape)} does not match x[N, T] {tuple(x.shape[:2])}")

    def _check_latents(self, z: Tensor, dec_cond: Tensor) -> None:
        d = self.config.d_latent
        if z.dim() != 3 or z.shape[-1] != d:
            raise ValueError(f"PoseVQVAE: expected z[N, Tz, {d}], got {tuple(z.shape)}")
        if dec_cond.shape != (*z.shape[:2], self.config.dec_cond_dim):
            raise ValueError(f"PoseVQVAE: expected dec_cond[N, Tz, {self.config.dec_cond_dim}] matching z "
                             f"{tuple(z.shape)}, got {tuple(dec_cond.shape)}")

    # -- pieces

    def encode_continuous(self, x: Tensor, enc_cond: Tensor) -> Tensor:
        """Encoder output before quantization: ``[N, T, 135], [N, T, 19] -> [N, T/4, d_latent]``."""
        self._check_frames(x, enc_cond, None)
        return self.encoder(torch.cat([x, enc_cond], dim=-1))

    def latent_mask(self, mask: Tensor | None, n: int, t: int, device: torch.device) -> Tensor:
        """Latent validity ``[N, T/4]`` from a frame mask ``[N, T]`` (None = all valid)."""
        if mask is None:
            return torch.ones(n, t // self.factor, dtype=torch.bool, device=device)
        return latent_mask_from_frames(mask.float(), self.factor)

    def forward(self, x: Tensor, enc_cond: Tensor, dec_cond: Tensor, mask: Tensor | None = None) -> dict[str, Any]:
        """Training / reconstruction pass.

        ``x[N, T, 135], enc_cond[N, T, 19], dec_cond[N, T/4, 46], mask[N, T]`` (bool or 0/1; None = all valid) ->
        dict ``recon[N, T, 135]``, ``commit_loss[]``, ``z[N, T/4, d]`` (encoder output), ``z_q[N, T/4, d]``
        (straight-through, invalid latents 0), ``idx[N, T/4]``, ``latent_mask[N, T/4]`` (bool), ``stats``.
        The commitment loss is weighted by the average-pooled frame mask, as in the reference.
        """
        self._check_frames(x, enc_cond, mask)
        n, t = x.shape[:2]
        z = self.encoder(torch.cat([x, enc_cond], dim=-1))
        self._check_latents(z, dec_cond)
        latent_mask = self.latent_mask(mask, n, t, x.device)
        weight = None if mask is None else mask.to(z.dtype).reshape(n, t // self.factor, self.factor).mean(-1)
        z_q, commit_loss, idx, stats = self.quantizer(z, latent_mask, weight)
        recon = self.decoder(torch.cat([z_q, dec_cond], dim=-1))
        return {"recon": recon, "commit_loss": commit_loss, "z": z, "z_q": z_q, "idx": idx,
                "latent_mask": latent_mask, "stats": stats}

    @torch.no_grad()
    def encode(self, x: Tensor, enc_cond: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``-> (z_q[N, T/4, d], latent_mask[N, T/4] bool)``: code vectors, invalid latents set to 0."""
        self._check_frames(x, enc_cond, mask)
        n, t = x.shape[:2]
        z = self.encoder(torch.cat([x, enc_cond], dim=-1))
        z_q, _ = self.quantizer.quantize(z)
        latent_mask = self.latent_mask(mask, n, t, x.device)
        return torch.where(latent_mask[..., None], z_q, torch.zeros_like(z_q)), latent_mask

    def _mask_frames(self, recon: Tensor, latent_mask: Tensor | None) -> Tensor:
        if latent_mask is None:
            return recon
        frame_valid = latent_mask.to(torch.bool).repeat_interleave(self.factor, dim=1)
        return torch.where(frame_valid[..., None], recon, torch.zeros_like(recon))

    def decode(self, z: Tensor, dec_cond: Tensor, latent_mask: Tensor | None = None) -> Tensor:
        """Snap ``z[N, Tz, d]`` to its nearest codes, then decode -> ``[N, Tz*4, 135]``.

        With ``latent_mask[N, Tz]`` the frames of invalid latents are set to 0.
        """
        self._check_latents(z, dec_cond)
        z_q, _ = self.quantizer.quantize(z)
        return self._mask_frames(self.decoder(torch.cat([z_q, dec_cond], dim=-1)), latent_mask)

    def decode_wo_quantize(self, z: Tensor, dec_cond: Tensor, latent_mask: Tensor | None = None) -> Tensor:
        """Decode ``z[N, Tz, d]`` as it is (differentiable; used for guidance) -> ``[N, Tz*4, 135]``."""
        self._check_latents(z, dec_cond)
        return self._mask_frames(self.decoder(torch.cat([z, dec_cond], dim=-1)), latent_mask)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, enc_cond: Tensor, dec_cond: Tensor, mask: Tensor | None = None) -> Tensor:
        """Encode, snap to codes and decode (no codebook update); frames of invalid latents are 0."""
        z_q, latent_mask = self.encode(x, enc_cond, mask)
        return self.decode(z_q, dec_cond, latent_mask)


# ------------------------------------------------------------------------------------ packed-batch helpers


def fold_persons(x: Tensor) -> Tensor:
    """``[B, T, P, ...] -> [B*P, T, ...]`` (row ``b*P + p`` is person p of item b)."""
    b, t, p = x.shape[:3]
    return x.transpose(1, 2).reshape(b * p, t, *x.shape[3:])


def unfold_persons(x: Tensor, num_persons: int) -> Tensor:
    """Inverse of :func:`fold_persons`: ``[B*P, T, ...] -> [B, T, P, ...]``."""
    n, t = x.shape[:2]
    if n % num_persons:
        raise ValueError(f"unfold_persons: leading size {n} is not a multiple of {num_persons} persons")
    return x.reshape(n // num_persons, num_persons, t, *x.shape[2:]).transpose(1, 2)


def vqvae_inputs(batch_x: Tensor, layout: Any, factor: int = 4) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Build the VQ-VAE inputs from a normalised packed batch ``batch_x[B, T, P, D]`` (spec 1.11).

    ``layout`` is a :class:`magnet.representation.PackedLayout`. Persons are folded into ``N = B*P``. Returns
    ``x[N, T, 135]`` (body 6D ++ canonical root 9D), ``enc_cond[N, T, 19]`` (betas ++ delta),
    ``dec_cond[N, T/factor, 10 + 9*factor]`` (betas of frame factor*k ++ deltas of frames factor*k ..
    factor*k + factor - 1) and ``mask[N, T]`` (bool, tpose_mask > 0.5).
    """
    if batch_x.dim() != 4 or batch_x.shape[-1] != layout.dim:
        raise ValueError(f"vqvae_inputs: expected x[B, T, P, {layout.dim}] for {layout.num_persons} persons, "
                         f"got {tuple(batch_x.shape)}")
    if batch_x.shape[2] != layout.num_persons:
        raise ValueError(f"vqvae_inputs: batch has {batch_x.shape[2]} persons, layout {layout.num_persons}")
    t = batch_x.shape[1]
    if t % factor:
        raise ConfigError(f"sequence length T={t} is not a multiple of the VQ-VAE time factor {factor}; "
                          f"use a window length divisible by {factor}")
    x = fold_persons(batch_x)
    value = torch.cat([x[..., layout.body_rot], x[..., layout.canon_root]], dim=-1)
    betas, delta = x[..., layout.betas], x[..., layout.delta]
    enc_cond = torch.cat([betas, delta], dim=-1)
    n = x.shape[0]
    dec_cond = torch.cat([betas[:, ::factor], delta.reshape(n, t // factor, factor * DELTA_DIM)], dim=-1)
    mask = x[..., layout.mask][..., 0] > 0.5
    return value, enc_cond, dec_cond, mask


def replace_value(batch_x: Tensor, value: Tensor, layout: Any) -> Tensor:
    """Copy of ``batch_x[B, T, P, D]`` with body 6D and canonical root replaced by ``value[B*P, T, 135]``."""
    p = layout.num_persons
    v = unfold_persons(value, p)
    if v.shape[:3] != batch_x.shape[:3]:
        raise ValueError(f"replace_value: value {tuple(value.shape)} does not fit batch {tuple(batch_x.shape)}")
    out = batch_x.clone()
    out[..., layout.body_rot] = v[..., : layout.body_rot.stop - layout.body_rot.start].to(out.dtype)
    out[..., layout.canon_root] = v[..., VALUE_DIM - 9:].to(out.dtype)
    return out


# ------------------------------------------------------------------------------------------- weights files

WEIGHTS_FORMAT = "magnet-vqvae-1"


def save_vqvae(model: PoseVQVAE, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Write the model's state dict and config to a safetensors file (atomically). Returns the path."""
    return save_weights(model, path, WEIGHTS_FORMAT, {"config": json.dumps(model.config.to_dict())}, metadata)


def load_vqvae(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> PoseVQVAE:
    """Build a :class:`PoseVQVAE` from a file written by :func:`save_vqvae` (strict key/shape check)."""
    meta, state = read_weights(path, WEIGHTS_FORMAT, "VQ-VAE", "import reference checkpoints with "
                               "magnet.models.reference_import first", map_location)
    model = PoseVQVAE(config_from_metadata(meta, VQVAEConfig))
    load_state_strict(model, state, str(path))
    return model.to(map_location)
