"""Import of the reference implementation's released VQ-VAE weights (reference spec 7.3).

A reference run directory looks like ``<run>/config.yaml`` + ``<run>/checkpoints_<N>/model.safetensors``
(also ``save_checkpoints_<N>/`` and ``best_checkpoints/``). Its VQ-VAE state dict uses ``nn.Sequential``
indices; this module maps them one-to-one onto :class:`magnet.models.vqvae.PoseVQVAE` names:

=====================================================  ===============================================
reference                                              ours
=====================================================  ===============================================
``vqvae.encoder.model.0``                              ``encoder.conv_in``
``vqvae.encoder.model.{2+i}.0``                        ``encoder.down.{i}.conv``
``vqvae.encoder.model.{2+i}.1.model.{j}.<x>``          ``encoder.down.{i}.res.blocks.{j}.<x>``
``vqvae.encoder.model.{2+down_t}``                     ``encoder.conv_out``
``vqvae.encoder.last_ln``                              ``encoder.norm_out``
``vqvae.decoder.model.0``                              ``decoder.conv_in``
``vqvae.decoder.model.{2+i}.0.model.{j}.<x>``          ``decoder.up.{i}.res.blocks.{j}.<x>``
``vqvae.decoder.model.{2+i}.2``                        ``decoder.up.{i}.conv``
``vqvae.decoder.model.{2+down_t}``                     ``decoder.conv_mid``
``vqvae.decoder.model.{4+down_t}``                     ``decoder.conv_out``
``vqvae.quantizer.{codebook,code_sum,code_count}``     ``quantizer.{codebook,code_sum,code_count}``
``z_mask`` (dead parameter)                            dropped
=====================================================  ===============================================

``<x>`` is ``norm1``, ``conv1``, ``norm2`` or ``conv2`` (``.weight`` / ``.bias``); block j = 0 is the largest
dilation in both. ``quantizer.initialised`` is set to True on import (the reference does not store it).
The DFoT checkpoint embeds the whole VQ-VAE under the prefix ``_vqvae.`` (pass ``prefix="_vqvae."``).

Command line: ``python -m magnet.models.reference_import <run_or_checkpoint_dir> <out.safetensors>``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from magnet.errors import CheckpointError, MagnetError
from magnet.models.vqvae import PoseVQVAE, VQVAEConfig, save_vqvae

__all__ = [
    "export_reference_layout",
    "find_reference_checkpoint",
    "import_reference_vqvae",
    "load_reference_model",
    "load_reference_vqvae",
    "read_reference_config",
    "reference_key",
    "reference_key_map",
    "reference_model_config",
]

Z_MASK_KEY = "z_mask"
_NOT_IN_REFERENCE = ("quantizer.initialised",)


# -------------------------------------------------------------------------------------------- key mapping


def reference_key(key: str, down_t: int) -> str:
    """Reference name of one of our state-dict keys (``down_t`` = number of down/up stages)."""
    rules: list[tuple[str, Any]] = [
        (r"encoder\.conv_in\.(.+)", lambda m: f"vqvae.encoder.model.0.{m[1]}"),
        (r"encoder\.down\.(\d+)\.conv\.(.+)", lambda m: f"vqvae.encoder.model.{2 + int(m[1])}.0.{m[2]}"),
        (r"encoder\.down\.(\d+)\.res\.blocks\.(\d+)\.(.+)",
         lambda m: f"vqvae.encoder.model.{2 + int(m[1])}.1.model.{m[2]}.{m[3]}"),
        (r"encoder\.conv_out\.(.+)", lambda m: f"vqvae.encoder.model.{2 + down_t}.{m[1]}"),
        (r"encoder\.norm_out\.(.+)", lambda m: f"vqvae.encoder.last_ln.{m[1]}"),
        (r"decoder\.conv_in\.(.+)", lambda m: f"vqvae.decoder.model.0.{m[1]}"),
        (r"decoder\.up\.(\d+)\.res\.blocks\.(\d+)\.(.+)",
         lambda m: f"vqvae.decoder.model.{2 + int(m[1])}.0.model.{m[2]}.{m[3]}"),
        (r"decoder\.up\.(\d+)\.conv\.(.+)", lambda m: f"vqvae.decoder.model.{2 + int(m[1])}.2.{m[2]}"),
        (r"decoder\.conv_mid\.(.+)", lambda m: f"vqvae.decoder.model.{2 + down_t}.{m[1]}"),
        (r"decoder\.conv_out\.(.+)", lambda m: f"vqvae.decoder.model.{4 + down_t}.{m[1]}"),
        (r"quantizer\.(codebook|code_sum|code_count)", lambda m: f"vqvae.quantizer.{m[1]}"),
    ]
    for pattern, build in rules:
        m = re.fullmatch(pattern, key)
        if m:
            return build(m)
    raise KeyError(f"no reference name for key {key!r}")


def reference_key_map(model: PoseVQVAE) -> dict[str, str]:
    """``{reference key: our key}`` for every state-dict entry of ``model`` that the reference stores."""
    return {reference_key(k, model.config.down_t): k for k in model.state_dict() if k not in _NOT_IN_REFERENCE}


def export_reference_layout(model: PoseVQVAE) -> dict[str, Tensor]:
    """``model``'s weights under the reference's key names (with a zero ``z_mask``), e.g. to round-trip."""
    state = model.state_dict()
    out = {ref: state[ours].detach().clone() for ref, ours in reference_key_map(model).items()}
    out[Z_MASK_KEY] = torch.zeros(1, 1, model.config.d_latent, dtype=state["quantizer.codebook"].dtype)
    return out


# ------------------------------------------------------------------------------------- finding the files


def _step_from(step: int | str) -> int | str:
    """``500000``, ``"500000"``, ``"500K"``/``"500k"`` -> 500000; ``"best"`` -> ``"best"``."""
    if isinstance(step, int):
        return step
    s = str(step).strip()
    if s.lower() == "best":
        return "best"
    m = re.fullmatch(r"(\d+)([kK]?)", s)
    if not m:
        raise CheckpointError(f"checkpoint step {step!r} is not a number, '<n>K' or 'best'")
    return int(m[1]) * (1000 if m[2] else 1)


def find_reference_checkpoint(path: str | os.PathLike, step: int | str | None = None) -> tuple[Path, Path | None]:
    """Locate ``(model.safetensors, config.yaml or None)`` in a reference run.

    ``path`` may be a run directory (``config.yaml`` + ``checkpoints_<N>/``), a checkpoint directory holding
    ``model.safetensors`` (config at ``../config.yaml``) or the safetensors file itself. In a run directory
    ``step`` picks ``checkpoints_<step>`` (falling back to ``save_checkpoints_<step>``), ``"best"`` picks
    ``best_checkpoints`` and None the largest step. A run or checkpoint directory must have a config.yaml.
    """
    p = Path(path)
    if p.is_file():
        cfg = p.parent.parent / "config.yaml"
        return p, (cfg if cfg.is_file() else None)
    if not p.is_dir():
        raise CheckpointError(f"reference checkpoint {p} does not exist; pass a run directory, a checkpoints_<N> "
                              "directory or a model.safetensors file")
    if (p / "model.safetensors").is_file():
        ckpt_dir, run_dir = p, p.parent
    else:
        run_dir = p
        ckpt_dir = _pick_checkpoint_dir(p, step)
    cfg = run_dir / "config.yaml"
    if not cfg.is_file():
        raise CheckpointError(f"config.yaml not found in {run_dir}; the reference run layout has it next to "
                              "checkpoints_<N>/ (pass the model.safetensors file itself to use the paper sizes)")
    return ckpt_dir / "model.safetensors", cfg


def _pick_checkpoint_dir(run_dir: Path, step: int | str | None) -> Path:
    steps: dict[int, Path] = {}
    for prefix in ("save_checkpoints_", "checkpoints_"):  # checkpoints_<N> wins over save_checkpoints_<N>
        for d in run_dir.glob(f"{prefix}*"):
            m = re.fullmatch(rf"{prefix}(\d+)", d.name)
            if m and (d / "model.safetensors").is_file():
                steps[int(m[1])] = d
    if step is None:
        if not steps:
            best = run_dir / "best_checkpoints"
            if (best / "model.safetensors").is_file():
                return best
            raise CheckpointError(f"no checkpoints_<N>/model.safetensors found in {run_dir}; pass a reference "
                                  "run directory or a checkpoint directory")
        return steps[max(steps)]
    want = _step_from(step)
    if want == "best":
        best = run_dir / "best_checkpoints"
        if not (best / "model.safetensors").is_file():
            raise CheckpointError(f"{best}/model.safetensors not found; available steps: {sorted(steps)}")
        return best
    if want not in steps:
        raise CheckpointError(f"no checkpoints_{want} (or save_checkpoints_{want}) with a model.safetensors in "
                              f"{run_dir}; available steps: {sorted(steps)}")
    return steps[want]


class _TolerantLoader(yaml.SafeLoader):
    """SafeLoader that reads unknown tags (e.g. python objects) as plain mappings / lists / strings."""


def _construct_unknown(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


_TolerantLoader.add_multi_constructor("", _construct_unknown)


def read_reference_config(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a reference ``config.yaml`` into a dict (interpolations like ``${x}`` stay strings)."""
    try:
        with open(path, encoding="utf-8") as f:
            cfg = yaml.load(f, Loader=_TolerantLoader)
    except (OSError, yaml.YAMLError) as exc:
        raise CheckpointError(f"cannot read reference config {path}: {' '.join(str(exc).split())}") from exc
    if not isinstance(cfg, dict):
        raise CheckpointError(f"reference config {path} is not a YAML mapping")
    return cfg


def reference_model_config(cfg: dict[str, Any] | None) -> VQVAEConfig:
    """Our :class:`VQVAEConfig` from a reference config dict (``model_cfg`` or ``model_cfg.vqvae_cfg``).

    Missing values take the paper defaults. Options our model does not implement raise CheckpointError.
    """
    model_cfg: dict[str, Any] = {}
    if cfg:
        mc = cfg.get("model_cfg", cfg)
        if isinstance(mc, dict) and isinstance(mc.get("vqvae_cfg"), dict):
            mc = mc["vqvae_cfg"]
        if isinstance(mc, dict) and ("code_nb" in mc or "d_hidden" in mc):
            model_cfg = mc
    unsupported = {"activation": "gelu", "norm": "LN", "is_add_last_ln": True, "without_cond": False, "stride_t": 2}
    for key, ours in unsupported.items():
        if key in model_cfg and model_cfg[key] != ours:
            raise CheckpointError(f"reference VQ-VAE config has {key}={model_cfg[key]!r}; magnet only "
                                  f"implements {key}={ours!r}")
    paper = VQVAEConfig.preset("paper")
    set_r = bool(model_cfg.get("is_set_r", True))

    def num(key: str, default: Any, cast: Any) -> Any:
        v = model_cfg.get(key, default)
        return None if v is None else cast(v)

    return VQVAEConfig(
        d_hidden=num("d_hidden", paper.d_hidden, int),
        d_latent=num("d_latent", paper.d_latent, int),
        depth=num("depth", paper.depth, int),
        down_t=num("down_t", paper.down_t, int),
        dilation_growth=num("dilation_growth_rate", paper.dilation_growth, int),
        codebook_size=num("code_nb", paper.codebook_size, int),
        ema_mu=num("ema_mu", paper.ema_mu, float),
        alive_thresh=num("alive_thresh", paper.alive_thresh, float),
        r_max=num("r_max", paper.r_max, float) if set_r else None,
        r_min=num("r_min", paper.r_min, float) if set_r else None,
    )


# -------------------------------------------------------------------------------------------------- import


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:
        raise CheckpointError(f"cannot read {path}: {' '.join(str(exc).split())}; is it a safetensors file?") from exc


def convert_reference_state(
    ref_state: dict[str, Tensor], config: VQVAEConfig, prefix: str = "", source: str = "checkpoint"
) -> dict[str, Tensor]:
    """Map a reference-keyed state dict onto :class:`PoseVQVAE` ``config`` keys (strict; see module docs).

    With a ``prefix`` only keys that start with it are considered (the rest, e.g. the DFoT's own weights,
    are ignored). Raises a one-line CheckpointError on a missing key, an unexpected key or a shape mismatch.
    """
    with torch.device("meta"):
        model = PoseVQVAE(config)
    own = model.state_dict()
    key_map = reference_key_map(model)
    if not prefix and any(k.startswith("_vqvae.") for k in ref_state):
        raise CheckpointError(f"{source} looks like a DFoT checkpoint (keys start with '_vqvae.'); "
                              "pass prefix '_vqvae.' to import its embedded VQ-VAE")
    if prefix:
        ref_state = {k[len(prefix):]: v for k, v in ref_state.items() if k.startswith(prefix)}
        if not ref_state:
            raise CheckpointError(f"{source}: no key starts with the prefix {prefix!r}; "
                                  "is this the right checkpoint?")
    missing = [k for k in key_map if k not in ref_state]
    if missing:
        raise CheckpointError(f"{source}: missing reference key {prefix}{missing[0]!r} ({len(missing)} missing); "
                              "not a complete MAGNet VQ-VAE checkpoint for this configuration")
    unexpected = [k for k in ref_state if k not in key_map and k != Z_MASK_KEY]
    if unexpected:
        raise CheckpointError(f"{source}: unexpected key {prefix}{unexpected[0]!r} ({len(unexpected)} unexpected); "
                              "not a MAGNet VQ-VAE checkpoint")
    out: dict[str, Tensor] = {}
    for ref, ours in key_map.items():
        value = ref_state[ref]
        if tuple(value.shape) != tuple(own[ours].shape):
            raise CheckpointError(f"{source}: key {prefix}{ref!r} has shape {tuple(value.shape)}, expected "
                                  f"{tuple(own[ours].shape)} (model config {config})")
        out[ours] = value.detach().to(torch.float32).clone()
    out["quantizer.initialised"] = torch.tensor(True)
    return out


def load_reference_vqvae(
    path: str | os.PathLike, step: int | str | None = None, prefix: str = ""
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a reference VQ-VAE checkpoint -> ``(state_dict for PoseVQVAE, reference config dict)``.

    The state dict fits ``PoseVQVAE(reference_model_config(config))`` (the paper preset for the released
    weights). ``step``/``path`` as in :func:`find_reference_checkpoint`; ``prefix="_vqvae."`` reads the VQ-VAE
    embedded in a DFoT checkpoint (sizes from ``model_cfg.vqvae_cfg`` if its config has them, else the paper
    preset; the strict shape check refuses anything that does not fit).
    """
    weights, cfg_path = find_reference_checkpoint(path, step)
    cfg = read_reference_config(cfg_path) if cfg_path is not None else {}
    state = convert_reference_state(_read_safetensors(weights), reference_model_config(cfg), prefix, str(weights))
    return state, cfg


def load_reference_model(path: str | os.PathLike, step: int | str | None = None, prefix: str = "") -> PoseVQVAE:
    """A :class:`PoseVQVAE` (eval mode) holding the reference weights found at ``path``."""
    state, cfg = load_reference_vqvae(path, step, prefix)
    model = PoseVQVAE(reference_model_config(cfg))
    model.load_state_dict(state, strict=True)
    return model.eval()


def import_reference_vqvae(
    src: str | os.PathLike, dst_path: str | os.PathLike, step: int | str | None = None, prefix: str = ""
) -> Path:
    """Convert a reference checkpoint into our weights file (:func:`magnet.models.vqvae.save_vqvae`)."""
    weights, _ = find_reference_checkpoint(src, step)
    model = load_reference_model(src, step, prefix)
    return save_vqvae(model, dst_path, metadata={"source": str(weights), "prefix": prefix})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Import the reference MAGNet VQ-VAE weights into magnet.")
    parser.add_argument("src", help="reference run directory, checkpoints_<N> directory or model.safetensors")
    parser.add_argument("dst", help="output weights file (.safetensors)")
    parser.add_argument("--step", default=None, help="checkpoint step (e.g. 500000, 500K, best); default largest")
    parser.add_argument("--prefix", default="", help="key prefix, '_vqvae.' for a DFoT checkpoint")
    args = parser.parse_args(argv)
    try:
        out = import_reference_vqvae(args.src, args.dst, args.step, args.prefix)
    except MagnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
