"""Finding and loading what the sampler needs: the DFoT, its frozen VQ-VAE, the normalisation statistics and the
diffusion options, from any of the artefacts users have.

``load_generation_models(path)`` accepts

* ``dfot.safetensors`` (written by training or by ``magnet.models.dfot_import``), with ``vqvae.safetensors`` beside
  it (or the file its metadata names);
* a DFoT training run directory (its ``dfot.safetensors``, else ``checkpoints/last.ckpt``);
* a DFoT Lightning checkpoint (``.ckpt``; it holds the VQ-VAE and the statistics);
* a reference run directory (``config.yaml`` + ``checkpoints_<N>/model.safetensors``), imported on the fly; its
  statistics come from the ``mean_std_path`` its config names (resolved against the working directory and the
  run directory), or from ``stats=``.

Statistics: ``stats=`` (an npz path or :class:`MotionStats`) wins over what the artefact carries.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from magnet.errors import CheckpointError, ConfigError
from magnet.models.dfot import DFoT, DFoTConfig, load_dfot
from magnet.models.vqvae import PoseVQVAE, VQVAEConfig, load_vqvae
from magnet.representation import STATS_PER_PERSON, MotionStats

__all__ = ["GenerationModels", "load_generation_models", "read_checkpoint_info"]

DFOT_FORMAT = "magnet-dfot-1"
VQVAE_FORMAT = "magnet-vqvae-1"


@dataclass
class GenerationModels:
    """What :func:`load_generation_models` returns (models in eval mode on the CPU)."""

    dfot: DFoT
    vqvae: PoseVQVAE
    stats: MotionStats
    diffusion: dict[str, Any] = field(default_factory=dict)
    source: str = ""


def _safetensors_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except Exception as exc:
        raise CheckpointError(f"cannot read {path} ({type(exc).__name__}); the file is corrupt or not a safetensors "
                              "weights file") from exc


def _safetensors_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        return list(f.keys())


def _diffusion_from_metadata(meta: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if not key.startswith("diffusion."):
            continue
        name = key[len("diffusion."):]
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def _resolve_stats(stats: MotionStats | str | os.PathLike | None) -> MotionStats | None:
    if stats is None or isinstance(stats, MotionStats):
        return stats
    return MotionStats.load(stats)


def _stats_from_metadata(meta: dict[str, str], path: Path) -> MotionStats | None:
    from magnet.training.base import stats_from_metadata

    return stats_from_metadata(meta, path)


def _is_reference_run(p: Path) -> bool:
    return p.is_dir() and (p / "config.yaml").is_file() and any(
        c.is_dir() and c.name.split("_")[-1].isdigit() or c.name == "best_checkpoints" for c in p.iterdir())


def read_checkpoint_info(path: str | os.PathLike) -> dict[str, Any]:
    """Cheap look at a DFoT artefact without building models: ``{num_persons, latent_dim, kind, path}``.

    Used to plan (``plan_only=true``) before paying for the model. Raises a one-line :class:`CheckpointError`
    on a missing, corrupt or non-DFoT artefact.
    """
    p = _locate(Path(path))
    if p.suffix == ".ckpt":
        ckpt = _read_ckpt(p)
        info = ckpt["magnet"]
        return {"num_persons": int(info["num_persons"]), "latent_dim": int(info["latent_dim"]), "kind": "ckpt",
                "path": str(p)}
    if p.is_dir():  # reference run directory
        models = load_generation_models(p, stats=None, need_stats=False)
        return {"num_persons": models.dfot.num_persons, "latent_dim": models.dfot.token_layout.latent_dim,
                "kind": "reference", "path": str(p)}
    meta = _safetensors_metadata(p)
    _check_dfot_meta(meta, p)
    return {"num_persons": int(meta["num_persons"]), "latent_dim": int(meta["latent_dim"]), "kind": "safetensors",
            "path": str(p)}


def _locate(p: Path) -> Path:
    """The file (or reference run directory) to load for ``p``."""
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} not found; pass ckpt=<DFoT run dir>, its dfot.safetensors, a "
                              "checkpoints/last.ckpt or a reference run directory")
    if p.is_dir():
        for candidate in (p / "dfot.safetensors", p / "checkpoints" / "last.ckpt"):
            if candidate.is_file():
                return candidate
        if _is_reference_run(p):
            return p
        if (p / "vqvae.safetensors").is_file():
            raise CheckpointError(f"{p} holds a VQ-VAE but no DFoT (dfot.safetensors or checkpoints/last.ckpt); "
                                  "pass the stage-2 (DFoT) run directory")
        raise CheckpointError(f"{p} holds no DFoT weights (dfot.safetensors, checkpoints/last.ckpt or a reference "
                              "config.yaml + checkpoints_<N>/); pass the stage-2 run directory")
    return p


def _check_dfot_meta(meta: dict[str, str], p: Path) -> None:
    fmt = meta.get("format")
    if fmt == VQVAE_FORMAT:
        raise CheckpointError(f"{p} holds VQ-VAE weights, not a DFoT; pass the stage-2 dfot.safetensors (or its run "
                              "directory)")
    if fmt != DFOT_FORMAT:
        raise CheckpointError(f"{p} is not a magnet DFoT weights file (format {fmt!r}); pass a dfot.safetensors, a "
                              "DFoT run directory or a reference run directory")


def _read_ckpt(p: Path) -> dict[str, Any]:
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {p} cannot be read ({type(exc).__name__}); the file is corrupt or not a "
                              "Lightning checkpoint") from exc
    info = ckpt.get("magnet") if isinstance(ckpt, dict) else None
    stage = info.get("stage") if isinstance(info, dict) else None
    if stage != "dfot":
        raise CheckpointError(f"checkpoint {p} is from stage {stage!r}, not 'dfot'; pass a stage-2 (DFoT) checkpoint")
    return ckpt


def load_generation_models(path: str | os.PathLike, stats: MotionStats | str | os.PathLike | None = None,
                           need_stats: bool = True) -> GenerationModels:
    """Load the DFoT, VQ-VAE, statistics and diffusion options from ``path`` (see the module docstring)."""
    p = _locate(Path(path))
    given = _resolve_stats(stats)
    if p.is_dir():
        models = _load_reference_run(p, given, need_stats)
    elif p.suffix == ".ckpt":
        models = _load_ckpt(p, given)
    else:
        models = _load_safetensors(p, given)
    if need_stats:
        if models.stats is None:
            raise CheckpointError(f"{p} carries no normalisation statistics; pass stats=<the training mean/std npz>")
        if models.dfot.num_persons > 1 and not models.stats.has_partner_stats:
            raise CheckpointError(f"the statistics for {p} ({models.stats.source}) have no partner entries but the "
                                  f"DFoT has {models.dfot.num_persons} persons; pass the training mean/std npz")
    models.dfot.eval()
    models.vqvae.eval()
    models.vqvae.requires_grad_(False)
    models.dfot.requires_grad_(False)
    return models


def _load_safetensors(p: Path, stats: MotionStats | None) -> GenerationModels:
    meta = _safetensors_metadata(p)
    _check_dfot_meta(meta, p)
    dfot = load_dfot(p)
    vq_path = p.with_name(meta.get("vqvae", "vqvae.safetensors"))
    if not vq_path.is_file():
        raise CheckpointError(f"{p} needs its VQ-VAE {vq_path}, which is missing; keep vqvae.safetensors beside "
                              "dfot.safetensors (training and magnet.models.dfot_import write both)")
    vq_meta = _safetensors_metadata(vq_path)
    if vq_meta.get("format") != VQVAE_FORMAT:
        raise CheckpointError(f"{vq_path} is not a magnet VQ-VAE weights file (format {vq_meta.get('format')!r})")
    vqvae = load_vqvae(vq_path)
    _check_pair(dfot, vqvae, p)
    if stats is None:
        stats = _stats_from_metadata(meta, p) or _stats_from_metadata(vq_meta, vq_path)
    return GenerationModels(dfot, vqvae, stats, _diffusion_from_metadata(meta), str(p))


def _check_pair(dfot: DFoT, vqvae: PoseVQVAE, p: Path) -> None:
    if vqvae.config.d_latent != dfot.token_layout.latent_dim:
        raise CheckpointError(f"{p}: the DFoT expects {dfot.token_layout.latent_dim}-d latents but its VQ-VAE has "
                              f"d_latent {vqvae.config.d_latent}; the two files do not belong together")


def _load_ckpt(p: Path, stats: MotionStats | None) -> GenerationModels:
    ckpt = _read_ckpt(p)
    info = ckpt["magnet"]
    state = ckpt.get("state_dict") or {}
    try:
        dfot = DFoT(DFoTConfig.from_dict(info["model_config"]), int(info["num_persons"]), int(info["latent_dim"]),
                    int(info.get("frames_per_latent", 4)))
        dfot.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}, strict=True)
        vqvae = PoseVQVAE(VQVAEConfig.from_dict(info["vqvae_config"]))
        vqvae.load_state_dict({k[len("vqvae."):]: v for k, v in state.items() if k.startswith("vqvae.")}, strict=True)
    except (KeyError, RuntimeError, ConfigError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {p}: the DFoT / VQ-VAE weights or configs are incomplete "
                              f"({' '.join(str(exc).split())[:160]})") from exc
    _check_pair(dfot, vqvae, p)
    if stats is None:
        mean, std = state.get("stats_mean"), state.get("stats_std")
        if mean is not None and std is not None and bool(torch.isfinite(mean[STATS_PER_PERSON]).all()):
            stats = MotionStats(mean.double().numpy(), std.double().numpy(), source=str(p))
    return GenerationModels(dfot, vqvae, stats, dict(info.get("diffusion") or {}), str(p))


def _load_reference_run(p: Path, stats: MotionStats | None, need_stats: bool) -> GenerationModels:
    from magnet.models.dfot_import import load_reference_dfot, reference_diffusion_kwargs

    dfot, vqvae, cfg = load_reference_dfot(p)
    if stats is None and need_stats:
        stats = _reference_stats(cfg, p)
    return GenerationModels(dfot, vqvae, stats, reference_diffusion_kwargs(cfg), str(p))


def _reference_stats(cfg: dict[str, Any], p: Path) -> MotionStats:
    found = None
    for holder in (cfg, cfg.get("model_cfg") or {}, cfg.get("data_cfg") or {}):
        if isinstance(holder, dict) and holder.get("mean_std_path"):
            found = str(holder["mean_std_path"])
            break
    if found is None:
        raise CheckpointError(f"reference run {p}: its config.yaml names no mean_std_path; pass stats=<the mean/std "
                              "npz the model was trained with>")
    for candidate in (Path(found), p / found, p.parent / found):
        if candidate.is_file():
            return MotionStats.load(candidate)
    raise CheckpointError(f"reference run {p}: the mean/std file {found} it names was not found (looked in the "
                          "working directory and the run directory); pass stats=<path to that npz>")
