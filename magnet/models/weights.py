"""Shared plumbing of the model configs and plain weights files (safetensors + config in the metadata)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from magnet.errors import CheckpointError, ConfigError
from magnet.utils import atomic_path


class PresetConfig:
    """Mixin for the frozen config dataclasses: dict round trip and named presets.

    Subclasses set ``LABEL`` (used in messages) and fill ``PRESETS`` after the class is defined.
    """

    LABEL: ClassVar[str] = "model"
    PRESETS: ClassVar[dict[str, Any]] = {}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """Build from a mapping; unknown keys raise ConfigError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"{cls.LABEL} config: unknown keys {unknown}; known keys are {sorted(names)}")
        return cls(**dict(d))

    @classmethod
    def preset(cls, name: str, **overrides: Any):
        """A named preset (``paper`` or ``tiny``) with optional field overrides."""
        if name not in cls.PRESETS:
            raise ConfigError(f"unknown {cls.LABEL} preset {name!r}; choose one of {sorted(cls.PRESETS)}")
        return dataclasses.replace(cls.PRESETS[name], **overrides)

    @classmethod
    def from_spec(cls, spec: Any):
        """A config from what a Hydra config gives: an instance, a preset name, or ``{preset: name, **overrides}``
        (preset ``paper`` when omitted)."""
        if isinstance(spec, cls):
            return spec
        if isinstance(spec, str):
            return cls.preset(spec)
        spec = dict(spec)
        return cls.preset(spec.pop("preset", "paper"), **spec)


def save_weights(model: nn.Module, path: str | os.PathLike, fmt: str, meta: dict[str, str],
                 metadata: dict[str, str] | None = None) -> Path:
    """Write ``model``'s state dict with ``{"format": fmt, **meta, **metadata}`` as metadata, atomically."""
    from safetensors.torch import save_file

    meta = {"format": fmt, **meta, **{str(k): str(v) for k, v in (metadata or {}).items()}}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return Path(path)


def read_weights(path: str | os.PathLike, fmt: str, what: str, hint: str,
                 map_location: str | torch.device = "cpu") -> tuple[dict[str, str], dict[str, Tensor]]:
    """``(metadata, state dict)`` of a file written by :func:`save_weights` with format ``fmt``.

    ``what`` names the model in messages (``"VQ-VAE"``); ``hint`` says how to get a valid file.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} weights file {path} not found; pass the file written by import or training")
    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict
    except Exception as exc:
        raise CheckpointError(f"cannot read {what} weights {path}: {' '.join(str(exc).split())}") from exc
    if meta.get("format") != fmt or "config" not in meta:
        raise CheckpointError(f"{path} is not a magnet {what} weights file (format {meta.get('format')!r}); {hint}")
    return meta, state


def config_from_metadata(meta: dict[str, str], config_cls: type) -> Any:
    return config_cls.from_dict(json.loads(meta["config"]))


def load_state_strict(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """``load_state_dict`` that raises a one-line CheckpointError naming the first bad key."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing:
        raise CheckpointError(f"{source}: missing key {missing[0]!r} ({len(missing)} missing); "
                              "the file does not match this model configuration")
    if unexpected:
        raise CheckpointError(f"{source}: unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected); "
                              "the file does not match this model configuration")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{source}: key {k!r} has shape {tuple(state[k].shape)}, "
                                  f"the model expects {tuple(v.shape)}")
    model.load_state_dict(state, strict=True)
