"""Learning-rate schedules."""

from __future__ import annotations

import math

import torch


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier: linear warm-up from 0, cosine decay to ``min_lr_ratio`` at ``total_steps``, then held.

    The reference's DFoT schedule keeps following the cosine after ``total_steps`` (the LR climbs back up); this
    one is clamped, which is what the reference's VQ-VAE schedule does.
    """
    if warmup_steps < 0 or total_steps <= 0 or not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(
            f"bad schedule: warmup_steps={warmup_steps}, total_steps={total_steps}, min_lr_ratio={min_lr_ratio}"
        )
    if warmup_steps > 0 and step < warmup_steps:
        return step / warmup_steps
    if step >= total_steps:
        return min_lr_ratio
    span = max(total_steps - warmup_steps, 1)
    progress = (step - warmup_steps) / span
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepping :func:`warmup_cosine_factor` once per optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine_factor(step, warmup_steps, total_steps, min_lr_ratio)
    )
