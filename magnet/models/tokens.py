"""DFoT motion tokens (reference spec 1.11, 3.1): one token = one person x one latent frame.

A token of person ``p`` at latent frame ``k`` is the concatenation

* ``pose_latent`` (``latent_dim``, 512 in the paper): the VQ-VAE code vector, not normalised;
* ``delta`` (``4 x 9`` = 36): the normalised canonical deltas of frames ``4k .. 4k+3``, frame-major
  (frame 4k's 9 numbers, then frame 4k+1's, ...);
* ``partners`` (``(P-1) x 4 x 9``): for every partner (ascending other-person index, self skipped) the normalised
  self->partner canonical transforms of the same 4 frames, partner-major then frame-major.

Width ``latent_dim + 36 P`` (584 for P = 2 and latent 512). Token sequences are ``[B, Tz, P, W]`` with
``Tz = T / 4``. "4" is ``frames_per_latent`` (the VQ-VAE time factor) throughout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from magnet.errors import ConfigError, DataError
from magnet.representation import PARTNER_DIM, PackedLayout

__all__ = [
    "TokenLayout",
    "latent_valid_mask",
    "make_tokens",
    "pack_tokens",
    "token_blocks_to_transforms",
    "tokens_to_transforms",
    "transforms_to_token_blocks",
    "unpack_tokens",
    "write_transforms",
]

TF_DIM = PARTNER_DIM
"""9: one 9D transform ``[6D rotation, tx, ty, tz]``."""


@dataclass(frozen=True)
class TokenLayout:
    """Index ranges (``slice``) of the fields of one DFoT token for ``num_persons`` persons."""

    num_persons: int
    latent_dim: int = 512
    frames_per_latent: int = 4

    def __post_init__(self) -> None:
        if not 1 <= int(self.num_persons) <= 16:
            raise ConfigError(f"token layout: num_persons must be in [1, 16], got {self.num_persons}")
        if int(self.latent_dim) < 1 or int(self.frames_per_latent) < 1:
            raise ConfigError(f"token layout: latent_dim ({self.latent_dim}) and frames_per_latent "
                              f"({self.frames_per_latent}) must be >= 1")

    @property
    def block_dim(self) -> int:
        """Numbers per transform block (one person or partner over one latent frame): ``9 * frames_per_latent``."""
        return TF_DIM * self.frames_per_latent

    @property
    def pose_latent(self) -> slice:
        return slice(0, self.latent_dim)

    @property
    def delta(self) -> slice:
        return slice(self.latent_dim, self.latent_dim + self.block_dim)

    @property
    def partners(self) -> slice:
        """All partner blocks (empty for P = 1)."""
        return slice(self.delta.stop, self.delta.stop + self.block_dim * (self.num_persons - 1))

    def partner(self, j: int) -> slice:
        """The ``j``-th partner block (``0 <= j < P - 1``)."""
        if not 0 <= j < self.num_persons - 1:
            raise IndexError(f"partner slot {j} out of range for {self.num_persons} persons")
        start = self.delta.stop + self.block_dim * j
        return slice(start, start + self.block_dim)

    @property
    def transforms(self) -> slice:
        """Delta and partner blocks together (everything after the latent)."""
        return slice(self.latent_dim, self.width)

    @property
    def width(self) -> int:
        """Token width ``latent_dim + 9 * frames_per_latent * P`` (584 for the paper with P = 2)."""
        return self.latent_dim + self.block_dim * self.num_persons

    def fields(self) -> dict[str, slice]:
        """``{name: slice}`` in token order."""
        return {"pose_latent": self.pose_latent, "delta": self.delta, "partners": self.partners}

    @classmethod
    def for_tokens(cls, tokens: Tensor, frames_per_latent: int = 4) -> TokenLayout:
        """The layout of ``tokens[..., P, W]`` (the latent width is whatever is left after the transforms)."""
        p, w = int(tokens.shape[-2]), int(tokens.shape[-1])
        latent = w - TF_DIM * frames_per_latent * p
        if latent < 1:
            raise DataError(f"tokens of width {w} with {p} persons leave no room for a pose latent "
                            f"(transforms need {TF_DIM * frames_per_latent * p})")
        return cls(p, latent, frames_per_latent)


def _check_tokens(tokens: Tensor, layout: TokenLayout, name: str = "tokens") -> None:
    if tokens.dim() < 2 or tokens.shape[-2] != layout.num_persons or tokens.shape[-1] != layout.width:
        raise DataError(f"{name} have shape {tuple(tokens.shape)}, expected [..., {layout.num_persons}, "
                        f"{layout.width}] (latent {layout.latent_dim} + {layout.block_dim} x "
                        f"{layout.num_persons})")


def transforms_to_token_blocks(x_norm: Tensor, layout: PackedLayout, frames_per_latent: int = 4
                               ) -> tuple[Tensor, Tensor]:
    """Regroup the normalised per-frame transforms of a packed batch into per-latent token blocks.

    ``x_norm[B, T, P, D(P)]`` -> ``(delta[B, Tz, P, 9f], partners[B, Tz, P, (P-1) 9f])`` with ``f`` =
    ``frames_per_latent`` and ``Tz = T / f``. Delta blocks are frame-major; partner blocks are partner-major, then
    frame-major.
    """
    if x_norm.dim() != 4 or x_norm.shape[-1] != layout.dim or x_norm.shape[2] != layout.num_persons:
        raise DataError(f"transforms_to_token_blocks: expected x[B, T, {layout.num_persons}, {layout.dim}], "
                        f"got {tuple(x_norm.shape)}")
    b, t, p, _ = x_norm.shape
    f = int(frames_per_latent)
    if t % f:
        raise DataError(f"transforms_to_token_blocks: T={t} is not a multiple of {f} frames per latent")
    tz = t // f
    delta = x_norm[..., layout.delta].reshape(b, tz, f, p, TF_DIM).transpose(2, 3).reshape(b, tz, p, f * TF_DIM)
    sp = x_norm[..., layout.partners].reshape(b, tz, f, p, p - 1, TF_DIM)
    partners = sp.permute(0, 1, 3, 4, 2, 5).reshape(b, tz, p, (p - 1) * f * TF_DIM)
    return delta, partners


def token_blocks_to_transforms(delta: Tensor, partners: Tensor, frames_per_latent: int = 4
                               ) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`transforms_to_token_blocks`: per-frame 9D transforms.

    ``delta[B, Tz, P, 9f]``, ``partners[B, Tz, P, (P-1) 9f]`` -> ``(delta[B, T, P, 9], partners[B, T, P, P-1, 9])``
    with ``T = f * Tz``.
    """
    f = int(frames_per_latent)
    if delta.dim() != 4 or delta.shape[-1] != f * TF_DIM:
        raise DataError(f"token_blocks_to_transforms: delta {tuple(delta.shape)} must be [B, Tz, P, {f * TF_DIM}]")
    b, tz, p, _ = delta.shape
    if tuple(partners.shape) != (b, tz, p, (p - 1) * f * TF_DIM):
        raise DataError(f"token_blocks_to_transforms: partners {tuple(partners.shape)} must be "
                        f"[{b}, {tz}, {p}, {(p - 1) * f * TF_DIM}]")
    d = delta.reshape(b, tz, p, f, TF_DIM).transpose(2, 3).reshape(b, tz * f, p, TF_DIM)
    sp = partners.reshape(b, tz, p, p - 1, f, TF_DIM).permute(0, 1, 4, 2, 3, 5).reshape(b, tz * f, p, p - 1, TF_DIM)
    return d, sp


def pack_tokens(latent: Tensor, delta: Tensor, partners: Tensor) -> Tensor:
    """``latent[B, Tz, P, Dz]``, ``delta[B, Tz, P, 9f]``, ``partners[B, Tz, P, (P-1) 9f]`` -> ``[B, Tz, P, W]``."""
    lead = latent.shape[:-1]
    if latent.dim() != 4 or delta.shape[:-1] != lead or partners.shape[:-1] != lead:
        raise DataError(f"pack_tokens: latent {tuple(latent.shape)}, delta {tuple(delta.shape)} and partners "
                        f"{tuple(partners.shape)} must share [B, Tz, P]")
    p = lead[-1]
    if partners.shape[-1] != (p - 1) * delta.shape[-1]:
        raise DataError(f"pack_tokens: partners width {partners.shape[-1]} != (P-1) x delta width "
                        f"{delta.shape[-1]} for P={p}")
    dtype = latent.dtype
    return torch.cat([latent, delta.to(dtype), partners.to(dtype)], dim=-1)


def unpack_tokens(tokens: Tensor, layout: TokenLayout | None = None) -> dict[str, Tensor]:
    """Split ``tokens[..., P, W]`` into ``pose_latent[..., P, Dz]``, ``delta[..., P, 9f]``,
    ``partners[..., P, (P-1) 9f]`` (views). Without ``layout`` it is inferred with 4 frames per latent."""
    layout = layout or TokenLayout.for_tokens(tokens)
    _check_tokens(tokens, layout)
    return {name: tokens[..., s] for name, s in layout.fields().items()}


def tokens_to_transforms(tokens: Tensor, layout: TokenLayout | None = None) -> tuple[Tensor, Tensor]:
    """Per-frame (still normalised) transforms of ``tokens[B, Tz, P, W]``:
    ``(delta[B, T, P, 9], partners[B, T, P, P-1, 9])``."""
    layout = layout or TokenLayout.for_tokens(tokens)
    parts = unpack_tokens(tokens, layout)
    return token_blocks_to_transforms(parts["delta"], parts["partners"], layout.frames_per_latent)


def make_tokens(x_norm: Tensor, latent: Tensor, layout: PackedLayout) -> Tensor:
    """Tokens from a normalised packed batch ``x_norm[B, T, P, D]`` and its latents ``latent[B, Tz, P, Dz]``."""
    tz = latent.shape[1]
    if latent.dim() != 4 or tz < 1 or x_norm.shape[1] % tz:
        raise DataError(f"make_tokens: latents {tuple(latent.shape)} do not fit frames {tuple(x_norm.shape)}")
    delta, partners = transforms_to_token_blocks(x_norm, layout, x_norm.shape[1] // tz)
    return pack_tokens(latent, delta, partners)


def latent_valid_mask(valid: Tensor, frames_per_latent: int = 4) -> Tensor:
    """Token validity ``[B, Tz, P]`` from frame validity ``valid[B, T, P]``: latent k takes frame ``f k``."""
    if valid.dim() != 3 or valid.shape[1] % frames_per_latent:
        raise DataError(f"latent_valid_mask: valid {tuple(valid.shape)} must be [B, T, P] with T a multiple "
                        f"of {frames_per_latent}")
    return valid[:, ::frames_per_latent].bool()


def write_transforms(x: Tensor, delta: Tensor, partners: Tensor, layout: PackedLayout) -> Tensor:
    """Copy of packed ``x[B, T, P, D]`` with the delta and partner fields replaced by per-frame transforms
    ``delta[B, T, P, 9]`` and ``partners[B, T, P, P-1, 9]`` (e.g. from :func:`tokens_to_transforms`)."""
    b, t, p, _ = x.shape
    if tuple(delta.shape) != (b, t, p, TF_DIM) or tuple(partners.shape) != (b, t, p, p - 1, TF_DIM):
        raise DataError(f"write_transforms: delta {tuple(delta.shape)} / partners {tuple(partners.shape)} do not "
                        f"fit x {tuple(x.shape)}")
    out = x.clone()
    out[..., layout.delta] = delta.to(out.dtype)
    out[..., layout.partners] = partners.reshape(b, t, p, (p - 1) * TF_DIM).to(out.dtype)
    return out
