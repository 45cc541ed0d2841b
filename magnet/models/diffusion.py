"""Discrete diffusion for Diffusion Forcing (reference spec 3.3, 4.1).

Levels ``k`` are integers in ``0 .. max_t - 1``; ``-1`` means "clean" (``alpha_bar = 1``) and is only used at
sampling time. Every token (one person x one latent frame) carries its own level: tensors of tokens are
``[B, Tz, P, W]`` and levels ``[B, Tz, P]`` (any leading shape works as long as levels match ``x.shape[:-1]``).

Cosine schedule (s = 0.008, float64): ``f(t) = cos^2(((t / max_t) + s) / (1 + s) * pi / 2)``,
``beta_0 = 1 - f(1) / f(0)``, ``beta_k = clip(1 - f(k + 1) / f(k), 1e-9, 1)``, ``alpha_bar = cumprod(1 - beta)``.
The last level has ``alpha_bar = 0`` exactly (zero terminal SNR). The schedule buffers are float64 and
non-persistent (not in the state dict); values are gathered in the dtype of the data.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from magnet.errors import ConfigError, DataError

__all__ = ["NOISE_SAMPLING", "OBJECTIVES", "DiscreteDiffusion", "cosine_alpha_bar"]

OBJECTIVES = ("pred_x0", "pred_noise", "pred_v")
NOISE_SAMPLING = ("uniform", "logsnr")
_EPS = 1e-12


def cosine_alpha_bar(max_t: int = 1000, s: float = 0.008) -> tuple[Tensor, Tensor]:
    """``(betas[max_t], alpha_bar[max_t])`` float64 of the cosine schedule described in the module docstring."""
    t = torch.arange(max_t + 1, dtype=torch.float64) / max_t
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    f = f / f[0]
    betas = (1.0 - f[1:] / f[:-1]).clamp(1e-9, 1.0)
    return betas, torch.cumprod(1.0 - betas, dim=0)


class DiscreteDiffusion(nn.Module):
    """Forward process, prediction conversions, training-level sampling, loss weights and the DDIM step.

    ``objective``: what the network outputs (``pred_x0`` in the paper, ``pred_noise``, ``pred_v``).
    ``noise_sampling``: ``uniform`` k ~ U{0..max_t-1} or ``logsnr`` (inverse-CDF sampling with weights
    ``exp(-0.5 ((lambda_k - mu) / sigma)^2)``, ``lambda = log(alpha_bar / (1 - alpha_bar))``).
    ``min_snr_weight``: weight losses by ``min(SNR, 5) / (SNR + 1)`` (off in the paper).
    """

    def __init__(self, max_t: int = 1000, objective: str = "pred_x0", schedule: str = "cosine",
                 noise_sampling: str = "uniform", min_snr_weight: bool = False, logsnr_mu: float = 0.0,
                 logsnr_sigma: float = 1.0, min_snr_gamma: float = 5.0):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ConfigError(f"diffusion objective {objective!r} unknown; choose one of {list(OBJECTIVES)}")
        if noise_sampling not in NOISE_SAMPLING:
            raise ConfigError(f"diffusion noise_sampling {noise_sampling!r} unknown; choose one of "
                              f"{list(NOISE_SAMPLING)}")
        if schedule != "cosine":
            raise ConfigError(f"diffusion schedule {schedule!r} unknown; only 'cosine' is implemented")
        if int(max_t) < 2:
            raise ConfigError(f"diffusion max_t must be >= 2, got {max_t}")
        if float(logsnr_sigma) <= 0:
            raise ConfigError(f"diffusion logsnr_sigma must be > 0, got {logsnr_sigma}")
        self.max_t = int(max_t)
        self.objective = objective
        self.noise_sampling = noise_sampling
        self.use_min_snr_weight = bool(min_snr_weight)
        self.min_snr_gamma = float(min_snr_gamma)
        self.logsnr_mu, self.logsnr_sigma = float(logsnr_mu), float(logsnr_sigma)
        betas, ab = cosine_alpha_bar(self.max_t)
        self.register_buffer("betas", betas, persistent=False)
        self.register_buffer("alphas_cumprod", ab, persistent=False)
        logsnr = torch.log(ab) - torch.log1p(-ab)  # -inf at the last level
        self.register_buffer("logsnr", logsnr, persistent=False)
        w = torch.exp(-0.5 * ((logsnr - self.logsnr_mu) / self.logsnr_sigma) ** 2)
        cdf = torch.cumsum(w, 0)
        self.register_buffer("logsnr_cdf", cdf / cdf[-1], persistent=False)

    def extra_repr(self) -> str:
        return (f"max_t={self.max_t}, objective={self.objective}, noise_sampling={self.noise_sampling}, "
                f"min_snr_weight={self.use_min_snr_weight}")

    # ------------------------------------------------------------------------------------------ schedule

    @property
    def last_level(self) -> int:
        """The pure-noise level ``max_t - 1`` (999)."""
        return self.max_t - 1

    def alpha_bar(self, levels: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """``alpha_bar`` per level, ``levels[...]`` (long; negative = clean = 1.0) -> ``[...]``."""
        lv = levels.long()
        if (lv >= self.max_t).any():
            raise DataError(f"diffusion level {int(lv.max())} out of range; levels must be < {self.max_t}")
        ab = self.alphas_cumprod.to(lv.device)[lv.clamp_min(0)]
        ab = torch.where(lv < 0, torch.ones_like(ab), ab)
        return ab.to(dtype) if dtype is not None else ab

    def _coefs(self, levels: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(sqrt(alpha_bar), sqrt(1 - alpha_bar))`` shaped ``[..., 1]`` to broadcast over the token dim."""
        if tuple(levels.shape) != tuple(x.shape[:-1]):
            raise DataError(f"diffusion: levels {tuple(levels.shape)} must match the tokens {tuple(x.shape)} "
                            "without their last (feature) dim")
        ab = self.alpha_bar(levels.to(x.device))
        return ab.sqrt().to(x.dtype)[..., None], (1.0 - ab).sqrt().to(x.dtype)[..., None]

    def snr(self, levels: Tensor) -> Tensor:
        """``alpha_bar / (1 - alpha_bar)`` (float64; inf for level -1, 0 for the last level)."""
        ab = self.alpha_bar(levels)
        return ab / (1.0 - ab)

    # ----------------------------------------------------------------------------------- forward process

    def q_sample(self, x0: Tensor, levels: Tensor, noise: Tensor | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        """``x_k = sqrt(ab_k) x0 + sqrt(1 - ab_k) eps`` per token; ``x0[..., W]``, ``levels[...]``."""
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        a, s = self._coefs(levels, x0)
        return a * x0 + s * noise

    # ------------------------------------------------------------------------------------- conversions

    def noise_from_x0(self, x_k: Tensor, levels: Tensor, x0: Tensor) -> Tensor:
        """``eps = (x_k - sqrt(ab) x0) / sqrt(1 - ab)`` (0 where the token is clean, ab = 1)."""
        a, s = self._coefs(levels, x_k)
        return torch.where(s > 0, (x_k - a * x0) / s.clamp_min(_EPS), torch.zeros_like(x_k))

    def x0_from_noise(self, x_k: Tensor, levels: Tensor, noise: Tensor) -> Tensor:
        """``x0 = (x_k - sqrt(1 - ab) eps) / sqrt(ab)`` (ill-posed at the last level, where ab = 0: the divisor
        is floored at 1e-12)."""
        a, s = self._coefs(levels, x_k)
        return (x_k - s * noise) / a.clamp_min(_EPS)

    def v_from_x0_noise(self, x0: Tensor, noise: Tensor, levels: Tensor) -> Tensor:
        """``v = sqrt(ab) eps - sqrt(1 - ab) x0``."""
        a, s = self._coefs(levels, x0)
        return a * noise - s * x0

    def x0_from_v(self, x_k: Tensor, levels: Tensor, v: Tensor) -> Tensor:
        """``x0 = sqrt(ab) x_k - sqrt(1 - ab) v``."""
        a, s = self._coefs(levels, x_k)
        return a * x_k - s * v

    def noise_from_v(self, x_k: Tensor, levels: Tensor, v: Tensor) -> Tensor:
        """``eps = sqrt(1 - ab) x_k + sqrt(ab) v``."""
        a, s = self._coefs(levels, x_k)
        return s * x_k + a * v

    def training_target(self, x0: Tensor, noise: Tensor, levels: Tensor) -> Tensor:
        """What the network should output for ``objective``: x0, the noise or v."""
        if self.objective == "pred_x0":
            return x0
        if self.objective == "pred_noise":
            return noise
        return self.v_from_x0_noise(x0, noise, levels)

    def model_predictions(self, output: Tensor, x_k: Tensor, levels: Tensor) -> tuple[Tensor, Tensor]:
        """Network ``output`` at noisy ``x_k`` -> ``(x0_hat, eps_hat)`` whatever the objective."""
        if self.objective == "pred_x0":
            return output, self.noise_from_x0(x_k, levels, output)
        if self.objective == "pred_noise":
            return self.x0_from_noise(x_k, levels, output), output
        return self.x0_from_v(x_k, levels, output), self.noise_from_v(x_k, levels, output)

    # --------------------------------------------------------------------------------- training levels

    def sample_levels(self, shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> Tensor:
        """Training levels (long, ``shape``) drawn independently by ``noise_sampling``."""
        device = device if device is not None else self.alphas_cumprod.device
        if self.noise_sampling == "uniform":
            return torch.randint(0, self.max_t, tuple(shape), generator=generator, device=device)
        u = torch.rand(tuple(shape), generator=generator, dtype=torch.float64, device=device)
        k = torch.searchsorted(self.logsnr_cdf.to(device), u.reshape(-1), right=True).reshape(u.shape)
        return k.clamp_max(self.max_t - 1)

    def training_levels(self, valid: Tensor, mode: str = "independent",
                        generator: torch.Generator | None = None) -> Tensor:
        """Levels ``[B, Tz, P]`` for a training batch: ``independent`` draws one per token (the paper's
        ``random_independent``), ``uniform`` one per sample; invalid tokens (``valid[B, Tz, P]`` False) get the
        pure-noise level."""
        if valid.dim() != 3:
            raise DataError(f"training_levels: valid {tuple(valid.shape)} must be [B, Tz, P]")
        if mode == "independent":
            k = self.sample_levels(valid.shape, generator, valid.device)
        elif mode == "uniform":
            k = self.sample_levels((valid.shape[0], 1, 1), generator, valid.device).expand(valid.shape).clone()
        else:
            raise ConfigError(f"noise level mode {mode!r} unknown; choose 'independent' or 'uniform'")
        return torch.where(valid.bool(), k, torch.full_like(k, self.last_level))

    def loss_weight(self, levels: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """Per-token loss weight ``[...]``: ``min(SNR, gamma) / (SNR + 1)`` if min-SNR weighting is on, else 1.

        Computed as ``min(ab, gamma (1 - ab))``, which equals the formula and stays finite at both ends.
        """
        if not self.use_min_snr_weight:
            return torch.ones(levels.shape, dtype=dtype, device=levels.device)
        ab = self.alpha_bar(levels)
        return torch.minimum(ab, self.min_snr_gamma * (1.0 - ab)).to(dtype)

    # ------------------------------------------------------------------------------------------ sampling

    def ddim_step(self, x_k: Tensor, levels: Tensor, next_levels: Tensor, x0_hat: Tensor,
                  eps_hat: Tensor | None = None, eta: float = 0.0, noise: Tensor | None = None,
                  generator: torch.Generator | None = None) -> Tensor:
        """One DDIM update per token from level ``k`` to ``k'`` (spec 4.1).

        ``x_k, x0_hat, eps_hat, noise [..., W]``, ``levels, next_levels [...]``. ``alpha_bar`` at ``k'`` < 0 is 1;
        the current level is clamped to >= 0. ``sigma = eta sqrt((1 - ab_k / ab_k') (1 - ab_k') / (1 - ab_k))``
        (0 where ``k' < 0``), ``c = sqrt(max(0, 1 - ab_k' - sigma^2))``, ``x' = sqrt(ab_k') x0 + c eps + sigma z``.
        Tokens with ``k == k'`` are returned unchanged. ``eps_hat`` defaults to the noise implied by ``x0_hat``.
        """
        if tuple(next_levels.shape) != tuple(levels.shape):
            raise DataError(f"ddim_step: next_levels {tuple(next_levels.shape)} != levels {tuple(levels.shape)}")
        cur = levels.clamp_min(0)
        if eps_hat is None:
            eps_hat = self.noise_from_x0(x_k, cur, x0_hat)
        ab = self.alpha_bar(cur).to(x_k.device)
        ab_next = self.alpha_bar(next_levels).to(x_k.device)
        ratio = ab / ab_next.clamp_min(_EPS)
        var = (1.0 - ratio).clamp_min(0.0) * (1.0 - ab_next) / (1.0 - ab).clamp_min(_EPS)
        sigma = float(eta) * var.sqrt()
        sigma = torch.where(next_levels.to(x_k.device) < 0, torch.zeros_like(sigma), sigma)
        c = (1.0 - ab_next - sigma**2).clamp_min(0.0).sqrt()
        out = (ab_next.sqrt().to(x_k.dtype)[..., None] * x0_hat + c.to(x_k.dtype)[..., None] * eps_hat)
        if float(eta) > 0:
            if noise is None:
                noise = torch.randn(x_k.shape, generator=generator, dtype=x_k.dtype, device=x_k.device)
            out = out + sigma.to(x_k.dtype)[..., None] * noise
        same = (levels == next_levels).to(x_k.device)[..., None]
        return torch.where(same, x_k, out)
