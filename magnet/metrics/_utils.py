"""Input checks shared by the metric functions (float64 conversion, clip lists, the mode switch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from magnet.errors import ConfigError, DataError

Mode = Literal["reference", "fixed"]
MODES: tuple[str, ...] = ("reference", "fixed")


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is ``"reference"`` or ``"fixed"``, else raise :class:`ConfigError`."""
    if mode not in MODES:
        raise ConfigError(f"unknown metric mode {mode!r}; use one of {', '.join(MODES)}")
    return mode


def to_float64(x: Tensor | np.ndarray, name: str, *, min_dim: int = 1) -> Tensor:
    """``x`` as a float64 tensor (same device); raise :class:`DataError` on NaN/inf or too few dims."""
    t = torch.as_tensor(x).to(torch.float64)
    if t.dim() < min_dim:
        raise DataError(f"{name} must have at least {min_dim} dims, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise DataError(f"{name} contains NaN or inf values; check the motion it was computed from")
    return t


def clip_list(x: Tensor | np.ndarray | Sequence, name: str) -> list:
    """A single tensor becomes ``[x]``; a list/tuple of clips is returned as a list (must not be empty)."""
    if isinstance(x, (Tensor, np.ndarray)):
        return [x]
    clips = list(x)
    if not clips:
        raise DataError(f"{name} is an empty list of clips; pass at least one clip")
    return clips
