"""Import of the reference implementation's released DFoT weights (reference spec 7.3).

A reference DFoT ``model.safetensors`` holds the transformer under ``diffuser.model.`` and the whole frozen VQ-VAE
under ``_vqvae.``. The transformer keys map one-to-one onto :class:`magnet.models.dfot.DFoT`:

=================================================================  ==============================================
reference                                                          ours
=================================================================  ==============================================
``diffuser.model.init_mlp.{0,2,4}.{weight,bias}``                  ``input_mlp.{0,2,4}.{weight,bias}``
``diffuser.model.p_embed.person_emb.weight``                       ``person_emb.weight``
``diffuser.model.transformer.layers.{i}.<rest>``                   ``transformer.layers.{i}.<rest>``
``diffuser.model.out.{weight,bias}``                               ``head.{weight,bias}``
``_vqvae.<VQ-VAE key>``                                            see :mod:`magnet.models.reference_import`
=================================================================  ==============================================

``<rest>`` is ``self_attn.in_proj_weight``, ``self_attn.in_proj_bias``, ``self_attn.out_proj.*``,
``linear1.*``, ``linear2.*``, ``norm1.*``, ``norm2.*``. The sizes (width, layers, FFN, persons, latent width) are
read from the tensor shapes; the head count, dropout and person-embedding mode from the run's ``config.yaml``
(``model_cfg.num_heads``, ``dropout_p``, ``person_embedding_mode``), else the paper values.

Command line: ``python -m magnet.models.dfot_import <run_or_checkpoint_dir> <out_dir>`` writes
``<out_dir>/dfot.safetensors`` and ``<out_dir>/vqvae.safetensors``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from magnet.errors import CheckpointError, MagnetError
from magnet.models.dfot import DFoT, DFoTConfig, save_dfot
from magnet.models.reference_import import (
    convert_reference_state,
    export_reference_layout,
    find_reference_checkpoint,
    read_reference_config,
    reference_model_config,
)
from magnet.models.tokens import TF_DIM
from magnet.models.vqvae import PoseVQVAE, save_vqvae

__all__ = [
    "DFOT_PREFIX",
    "VQVAE_PREFIX",
    "convert_reference_dfot_state",
    "dfot_reference_key",
    "dfot_reference_key_map",
    "export_reference_dfot_layout",
    "import_reference_dfot",
    "infer_reference_dfot",
    "load_reference_dfot",
    "reference_diffusion_kwargs",
]

DFOT_PREFIX = "diffuser.model."
VQVAE_PREFIX = "_vqvae."

_RULES: list[tuple[str, str]] = [
    (r"input_mlp\.(\d+)\.(weight|bias)", r"init_mlp.\1.\2"),
    (r"person_emb\.weight", r"p_embed.person_emb.weight"),
    (r"transformer\.layers\.(\d+)\.(.+)", r"transformer.layers.\1.\2"),
    (r"head\.(weight|bias)", r"out.\1"),
]


def dfot_reference_key(key: str) -> str:
    """Reference name of one of our :class:`DFoT` state-dict keys (with the ``diffuser.model.`` prefix)."""
    for pattern, repl in _RULES:
        if re.fullmatch(pattern, key):
            return DFOT_PREFIX + re.sub(pattern, repl, key)
    raise KeyError(f"no reference name for DFoT key {key!r}")


def dfot_reference_key_map(model: DFoT) -> dict[str, str]:
    """``{reference key: our key}`` for every state-dict entry of ``model``."""
    return {dfot_reference_key(k): k for k in model.state_dict()}


def export_reference_dfot_layout(model: DFoT, vqvae: PoseVQVAE | None = None) -> dict[str, Tensor]:
    """``model``'s weights (and ``vqvae``'s under ``_vqvae.``) in the reference layout, e.g. to round-trip."""
    state = model.state_dict()
    out = {ref: state[ours].detach().clone() for ref, ours in dfot_reference_key_map(model).items()}
    if vqvae is not None:
        out.update({VQVAE_PREFIX + k: v for k, v in export_reference_layout(vqvae).items()})
    return out


# ------------------------------------------------------------------------------------- reading the sizes


def _model_cfg(cfg: dict[str, Any] | None) -> dict[str, Any]:
    if not cfg:
        return {}
    mc = cfg.get("model_cfg", cfg)
    return mc if isinstance(mc, dict) else {}


def _need(ref_state: dict[str, Tensor], key: str, source: str) -> Tensor:
    if key not in ref_state:
        raise CheckpointError(f"{source}: missing reference key {key!r}; not a MAGNet DFoT checkpoint")
    return ref_state[key]


def infer_reference_dfot(ref_state: dict[str, Tensor], cfg: dict[str, Any] | None = None,
                         source: str = "checkpoint") -> tuple[DFoTConfig, int, int]:
    """``(DFoTConfig, num_persons, latent_dim)`` of a reference DFoT state dict (shapes + optional config)."""
    mc = _model_cfg(cfg)
    w_in = _need(ref_state, DFOT_PREFIX + "init_mlp.0.weight", source)
    w_out = _need(ref_state, DFOT_PREFIX + "out.weight", source)
    pe = _need(ref_state, DFOT_PREFIX + "p_embed.person_emb.weight", source)
    lin1 = _need(ref_state, DFOT_PREFIX + "transformer.layers.0.linear1.weight", source)
    if w_in.dim() != 2 or w_out.dim() != 2 or pe.dim() != 2 or lin1.dim() != 2:
        raise CheckpointError(f"{source}: DFoT weights have unexpected ranks; not a MAGNet DFoT checkpoint")
    d_model, width = int(w_out.shape[1]), int(w_out.shape[0])
    num_persons, pe_dim = int(pe.shape[0]), int(pe.shape[1])
    latent_dim = width - 4 * TF_DIM * num_persons
    if latent_dim < 1:
        raise CheckpointError(f"{source}: output width {width} is too small for {num_persons} persons")
    layers = {int(m[1]) for k in ref_state
              if (m := re.match(re.escape(DFOT_PREFIX) + r"transformer\.layers\.(\d+)\.", k))}
    num_layers = max(layers) + 1
    mode = mc.get("person_embedding_mode")
    if mode is None:
        mode = "add" if pe_dim == d_model and int(w_in.shape[1]) - width == d_model // 2 else "concat"
    noise_dim = int(w_in.shape[1]) - width - (pe_dim if mode == "concat" else 0)
    try:
        config = DFoTConfig(
            d_model=d_model, num_layers=num_layers, num_heads=int(mc.get("num_heads", 8)),
            ffn_dim=int(lin1.shape[0]), dropout=float(mc.get("dropout_p", 0.05)), noise_emb_dim=noise_dim,
            person_emb_dim=pe_dim if mode == "concat" else DFoTConfig().person_emb_dim,
            person_embedding_mode=str(mode),
        )
    except MagnetError as exc:
        raise CheckpointError(f"{source}: the DFoT sizes read from the weights are not valid ({exc})") from exc
    return config, num_persons, latent_dim


def reference_diffusion_kwargs(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """Keyword arguments for :class:`magnet.models.diffusion.DiscreteDiffusion` from a reference config."""
    mc = _model_cfg(cfg)
    return {
        "max_t": int(mc.get("max_t", 1000)),
        "objective": str(mc.get("diffusion_objective", "pred_x0")),
        "noise_sampling": str(mc.get("diffusion_noise_rand_type", "uniform")),
        "min_snr_weight": bool(mc.get("is_min_snr_weight", False)),
        "logsnr_mu": float(mc.get("diffusion_noise_logsnr_mu", 0.0)),
        "logsnr_sigma": float(mc.get("diffusion_noise_logsnr_sigma", 1.0)),
    }


# -------------------------------------------------------------------------------------------- conversion


def convert_reference_dfot_state(ref_state: dict[str, Tensor], config: DFoTConfig, num_persons: int,
                                 latent_dim: int, source: str = "checkpoint") -> dict[str, Tensor]:
    """Map the ``diffuser.model.`` part of a reference state dict onto :class:`DFoT` keys (strict).

    ``_vqvae.`` keys are ignored here (see :func:`magnet.models.reference_import.convert_reference_state`); any
    other key is unexpected. A missing key, an unexpected key or a shape mismatch raises a one-line
    CheckpointError.
    """
    with torch.device("meta"):
        model = DFoT(config, num_persons, latent_dim)
    own = model.state_dict()
    key_map = dfot_reference_key_map(model)
    missing = [k for k in key_map if k not in ref_state]
    if missing:
        raise CheckpointError(f"{source}: missing reference key {missing[0]!r} ({len(missing)} missing); "
                              "not a complete MAGNet DFoT checkpoint for this configuration")
    unexpected = [k for k in ref_state if k not in key_map and not k.startswith(VQVAE_PREFIX)]
    if unexpected:
        raise CheckpointError(f"{source}: unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected); "
                              "not a MAGNet DFoT checkpoint for this configuration")
    out: dict[str, Tensor] = {}
    for ref, ours in key_map.items():
        value = ref_state[ref]
        if tuple(value.shape) != tuple(own[ours].shape):
            raise CheckpointError(f"{source}: key {ref!r} has shape {tuple(value.shape)}, expected "
                                  f"{tuple(own[ours].shape)} ({num_persons} persons, latent {latent_dim})")
        out[ours] = value.detach().to(torch.float32).clone()
    return out


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:
        raise CheckpointError(f"cannot read {path}: {' '.join(str(exc).split())}; is it a safetensors file?") from exc


def load_reference_dfot(path: str | os.PathLike, step: int | str | None = None
                        ) -> tuple[DFoT, PoseVQVAE, dict[str, Any]]:
    """Read a reference DFoT checkpoint -> ``(DFoT, PoseVQVAE, reference config dict)``, both in eval mode.

    ``path``/``step`` as in :func:`magnet.models.reference_import.find_reference_checkpoint`. The VQ-VAE sizes
    come from ``model_cfg.vqvae_cfg`` (else the paper preset); the DFoT sizes from the weights.
    """
    weights, cfg_path = find_reference_checkpoint(path, step)
    cfg = read_reference_config(cfg_path) if cfg_path is not None else {}
    ref_state = _read_safetensors(weights)
    config, num_persons, latent_dim = infer_reference_dfot(ref_state, cfg, str(weights))
    dfot_state = convert_reference_dfot_state(ref_state, config, num_persons, latent_dim, str(weights))
    vq_config = reference_model_config(cfg)
    vq_state = convert_reference_state(ref_state, vq_config, VQVAE_PREFIX, str(weights))
    if vq_config.d_latent != latent_dim:
        raise CheckpointError(f"{weights}: the DFoT token holds {latent_dim}-d latents but the embedded VQ-VAE has "
                              f"d_latent {vq_config.d_latent}; the checkpoint and its config.yaml disagree")
    dfot = DFoT(config, num_persons, latent_dim)
    dfot.load_state_dict(dfot_state, strict=True)
    vqvae = PoseVQVAE(vq_config)
    vqvae.load_state_dict(vq_state, strict=True)
    return dfot.eval(), vqvae.eval(), cfg


def import_reference_dfot(src: str | os.PathLike, out_dir: str | os.PathLike, step: int | str | None = None
                          ) -> tuple[Path, Path]:
    """Convert a reference DFoT checkpoint into ``out_dir/dfot.safetensors`` + ``out_dir/vqvae.safetensors``."""
    weights, _ = find_reference_checkpoint(src, step)
    dfot, vqvae, cfg = load_reference_dfot(src, step)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    diffusion = reference_diffusion_kwargs(cfg)
    # The same encoding as DFoTModule.export_weights (booleans as JSON "true" / "false").
    meta = {"source": str(weights), **{f"diffusion.{k}": json.dumps(v) if isinstance(v, bool) else str(v)
                                       for k, v in diffusion.items()}}
    return (save_dfot(dfot, out / "dfot.safetensors", metadata=meta),
            save_vqvae(vqvae, out / "vqvae.safetensors", metadata={"source": str(weights), "prefix": VQVAE_PREFIX}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Import the reference MAGNet DFoT weights (with its VQ-VAE).")
    parser.add_argument("src", help="reference run directory, checkpoints_<N> directory or model.safetensors")
    parser.add_argument("out_dir", help="output directory for dfot.safetensors and vqvae.safetensors")
    parser.add_argument("--step", default=None, help="checkpoint step (e.g. 500000, 500K, best); default largest")
    args = parser.parse_args(argv)
    try:
        dfot_path, vq_path = import_reference_dfot(args.src, args.out_dir, args.step)
    except MagnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {dfot_path} and {vq_path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
