"""The Diffusion Forcing Transformer network (reference spec 3.2, 3.6).

``DFoT(config, num_persons, latent_dim).forward(tokens[B, Tz, P, W], levels[B, Tz, P]) -> x0_hat[B, Tz, P, W]``

Per token: concat(token, sinusoidal noise-level embedding, learned person embedding) -> MLP (Linear-GELU-Linear-
GELU-Linear) -> additive "rotary" time encoding ``h <- h + rot(h)`` (position = latent-frame index in the window,
shared by all persons) -> flatten time-major, person-minor -> post-LN ``nn.TransformerEncoder`` (ReLU FFN) with
full bidirectional attention and no final norm -> Linear to the full token. Level ``-1`` ("clean", used at
sampling time) is embedded like any other level. With ``person_embedding_mode="add"`` the person embedding has
``d_model`` dims and is added after the MLP instead.

Reference HEAD builds a batch-sized causal mask (a bug, spec 9.1); the released weights were trained without a
mask, which is what this module does.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from magnet.errors import ConfigError, DataError
from magnet.models.tokens import TokenLayout
from magnet.models.weights import (
    PresetConfig,
    config_from_metadata,
    load_state_strict,
    read_weights,
    save_weights,
)

__all__ = [
    "DFOT_PRESETS",
    "DFoT",
    "DFoTConfig",
    "additive_rotary",
    "load_dfot",
    "save_dfot",
    "sinusoidal_level_embedding",
]


@dataclass(frozen=True)
class DFoTConfig(PresetConfig):
    """Sizes of the DFoT transformer (the token width comes from ``num_persons`` and ``latent_dim``)."""

    d_model: int = 512
    num_layers: int = 6
    num_heads: int = 8
    ffn_dim: int = 2048
    dropout: float = 0.05
    noise_emb_dim: int = 256
    person_emb_dim: int = 256
    person_embedding_mode: str = "concat"
    rotary_base: float = 10000.0

    def __post_init__(self) -> None:
        for name in ("d_model", "num_layers", "num_heads", "ffn_dim", "noise_emb_dim", "person_emb_dim"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"DFoT config: {name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % 2 or self.noise_emb_dim % 2 or self.noise_emb_dim < 4:
            raise ConfigError(f"DFoT config: d_model ({self.d_model}) must be even and noise_emb_dim "
                              f"({self.noise_emb_dim}) even and >= 4")
        if self.d_model % self.num_heads:
            raise ConfigError(f"DFoT config: d_model {self.d_model} is not divisible by num_heads {self.num_heads}")
        if self.person_embedding_mode not in ("concat", "add"):
            raise ConfigError(f"DFoT config: person_embedding_mode must be 'concat' or 'add', "
                              f"got {self.person_embedding_mode!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"DFoT config: dropout must be in [0, 1), got {self.dropout}")


DFOT_PRESETS: dict[str, DFoTConfig] = {
    # Reference sizes (spec 3.2): 20,301,384 parameters for P = 2 with 512-d latents.
    "paper": DFoTConfig(),
    # CPU-sized: trains in minutes on the synthetic data.
    "tiny": DFoTConfig(d_model=128, num_layers=3, num_heads=4, ffn_dim=256, dropout=0.05,
                       noise_emb_dim=64, person_emb_dim=64),
}
DFoTConfig.LABEL = "DFoT"
DFoTConfig.PRESETS = DFOT_PRESETS


def sinusoidal_level_embedding(levels: Tensor, dim: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``[sin(k f_i), cos(k f_i)]`` (all sines, then all cosines), ``f_i = exp(-i ln(10000) / (dim/2 - 1))``.

    ``levels[...]`` (integer, may be -1) -> ``[..., dim]`` in ``dtype`` (computed in float64 for exact phases).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64, device=levels.device)
                      / (half - 1))
    arg = levels.to(torch.float64)[..., None] * freqs
    return torch.cat([arg.sin(), arg.cos()], dim=-1).to(dtype)


def additive_rotary(h: Tensor, positions: Tensor, base: float = 10000.0) -> Tensor:
    """``h + rot(h)`` with ``rot(h) = [h_e cos - h_o sin, h_e sin + h_o cos]`` (rotated evens, then rotated odds).

    ``h[..., d]``, ``positions`` broadcastable to ``h.shape[:-1]``; angle ``pos * base^(-2j/d)``, j < d/2.
    """
    d = h.shape[-1]
    inv_freq = base ** (-2.0 * torch.arange(d // 2, dtype=torch.float64, device=h.device) / d)
    ang = positions.to(torch.float64)[..., None] * inv_freq
    cos, sin = ang.cos().to(h.dtype), ang.sin().to(h.dtype)
    he, ho = h[..., 0::2], h[..., 1::2]
    return h + torch.cat([he * cos - ho * sin, he * sin + ho * cos], dim=-1)


class DFoT(nn.Module):
    """The DFoT network; see the module docstring. Predicts the clean token (x0) or whatever the diffusion
    objective asks for (the output has the token width in every case)."""

    def __init__(self, config: DFoTConfig | str = "paper", num_persons: int = 2, latent_dim: int = 512,
                 frames_per_latent: int = 4):
        super().__init__()
        self.config = DFoTConfig.preset(config) if isinstance(config, str) else config
        cfg = self.config
        self.token_layout = TokenLayout(int(num_persons), int(latent_dim), int(frames_per_latent))
        self.num_persons = self.token_layout.num_persons
        self.width = self.token_layout.width
        concat = cfg.person_embedding_mode == "concat"
        in_dim = self.width + cfg.noise_emb_dim + (cfg.person_emb_dim if concat else 0)
        self.person_emb = nn.Embedding(self.num_persons, cfg.person_emb_dim if concat else cfg.d_model)
        self.input_mlp = nn.Sequential(
            nn.Linear(in_dim, cfg.d_model), nn.GELU(),
            nn.Linear(cfg.d_model, cfg.d_model), nn.GELU(),
            nn.Linear(cfg.d_model, cfg.d_model),
        )
        layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.num_heads, cfg.ffn_dim, cfg.dropout,
                                           activation="relu", batch_first=True, norm_first=False)
        self.transformer = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
        self.head = nn.Linear(cfg.d_model, self.width)

    def extra_repr(self) -> str:
        return f"num_persons={self.num_persons}, latent_dim={self.token_layout.latent_dim}, width={self.width}"

    def forward(self, tokens: Tensor, levels: Tensor, rows: Tensor | None = None) -> Tensor:
        """``tokens[B, Tz, P, W]`` (noisy), ``levels[B, Tz, P]`` (long, -1 = clean) -> ``[B, Tz, P, W]``.

        ``rows`` (long ``[R]``, flat token indices ``t * P + p``): compute the output of these tokens only (the
        sampler asks for the tokens its step changes); the last layer then runs its queries and feed-forward for
        these rows alone, every layer before it in full (every token is a key of the last layer). The other rows of
        the result are 0. Eval mode only.
        """
        if tokens.dim() != 4 or tokens.shape[2] != self.num_persons or tokens.shape[3] != self.width:
            raise DataError(f"DFoT: tokens have shape {tuple(tokens.shape)}, expected [B, Tz, {self.num_persons}, "
                            f"{self.width}]")
        if tuple(levels.shape) != tuple(tokens.shape[:3]):
            raise DataError(f"DFoT: levels have shape {tuple(levels.shape)}, expected {tuple(tokens.shape[:3])}")
        b, tz, p, _ = tokens.shape
        cfg = self.config
        k_emb = sinusoidal_level_embedding(levels, cfg.noise_emb_dim, tokens.dtype)
        p_emb = self.person_emb.weight.to(tokens.dtype)[None, None].expand(b, tz, p, -1)
        if cfg.person_embedding_mode == "concat":
            h = self.input_mlp(torch.cat([tokens, k_emb, p_emb], dim=-1))
        else:
            h = self.input_mlp(torch.cat([tokens, k_emb], dim=-1)) + p_emb
        positions = torch.arange(tz, device=tokens.device)[:, None].expand(tz, p)
        h = additive_rotary(h, positions, cfg.rotary_base)
        h = h.reshape(b, tz * p, cfg.d_model)
        if rows is None or self.training:
            h = self.transformer(h)
            return self.head(h).reshape(b, tz, p, self.width)
        layers = self.transformer.layers
        for layer in layers[:-1]:
            h = layer(h)
        out = h.new_zeros(b, tz * p, self.width)
        if rows.numel():
            out[:, rows] = self.head(_encoder_layer_rows(layers[-1], h, rows))
        return out.reshape(b, tz, p, self.width)


def _encoder_layer_rows(layer: nn.TransformerEncoderLayer, h: Tensor, rows: Tensor) -> Tensor:
    """A post-LN ``nn.TransformerEncoderLayer`` (ReLU FFN, eval mode) evaluated for the tokens ``rows`` only:
    their queries attend to every token of ``h[B, L, d]`` -> ``[B, R, d]``."""
    attn = layer.self_attn
    b, L, d = h.shape
    heads = attn.num_heads
    dh = d // heads
    w, bias = attn.in_proj_weight, attn.in_proj_bias
    x = h[:, rows]
    q = F.linear(x, w[:d], bias[:d]).view(b, -1, heads, dh).transpose(1, 2)
    kv = F.linear(h, w[d:], bias[d:])
    k = kv[..., :d].reshape(b, L, heads, dh).transpose(1, 2)
    v = kv[..., d:].reshape(b, L, heads, dh).transpose(1, 2)
    a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, d)
    x = layer.norm1(x + attn.out_proj(a))
    return layer.norm2(x + layer.linear2(F.relu(layer.linear1(x))))


# ------------------------------------------------------------------------------------------- weights files

WEIGHTS_FORMAT = "magnet-dfot-1"


def save_dfot(model: DFoT, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Write the model's state dict, config, person count and latent width to a safetensors file (atomic)."""
    meta = {"config": json.dumps(model.config.to_dict()), "num_persons": str(model.num_persons),
            "latent_dim": str(model.token_layout.latent_dim),
            "frames_per_latent": str(model.token_layout.frames_per_latent)}
    return save_weights(model, path, WEIGHTS_FORMAT, meta, metadata)


def load_dfot(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> DFoT:
    """Build a :class:`DFoT` from a file written by :func:`save_dfot` (strict key and shape check)."""
    meta, state = read_weights(path, WEIGHTS_FORMAT, "DFoT", "import reference checkpoints with "
                               "magnet.models.dfot_import first", map_location)
    model = DFoT(config_from_metadata(meta, DFoTConfig), int(meta["num_persons"]), int(meta["latent_dim"]),
                 int(meta.get("frames_per_latent", 4)))
    load_state_strict(model, state, str(path))
    return model.to(map_location)
