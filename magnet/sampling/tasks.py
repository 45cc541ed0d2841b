"""Per-task rules that need no model: which plan a task runs and which requests it refuses (spec 4.1, 4.4).

``plan_for(config, num_persons, clip_frames)`` and ``check_request(config, num_persons, clip_frames,
clip_persons)`` are shared by :class:`magnet.sampling.Sampler` and ``sample.py``'s ``plan_only`` mode, so a plan
printed before sampling is the plan that runs.
"""

from __future__ import annotations

from magnet.errors import ConfigError, DataError
from magnet.sampling.config import SamplingConfig
from magnet.sampling.plans import (
    CHAIN_TASKS,
    ROLLING_TASKS,
    Plan,
    chain_plan,
    inbetweening_plan,
    joint_plan,
    pp2joint_plan,
    rolling_plan,
)

__all__ = ["DRIVEN_TASKS", "PARTNER_TASKS", "WINDOW_LATENT", "check_request", "plan_for"]

WINDOW_LATENT = 16
"""Latent frames per window (64 frames): the training window of the DFoT (spec 4.1)."""


PARTNER_TASKS = (*ROLLING_TASKS, *CHAIN_TASKS, "pp2joint")
"""Tasks that need at least two persons."""
DRIVEN_TASKS = (*ROLLING_TASKS, "pp2joint")
"""Tasks with persons given as ground truth (``driven``)."""


def check_request(cfg: SamplingConfig, num_persons: int, clip_frames: int, clip_persons: int,
                  where: str = "the clip", window: int = WINDOW_LATENT) -> None:
    """One-line errors for a task / checkpoint / clip combination that cannot run, before any model work."""
    P = int(num_persons)
    f = 4
    if cfg.task in PARTNER_TASKS and P < 2:
        raise ConfigError(f"task {cfg.task} needs a partner but the checkpoint generates {P} person; use a "
                          "checkpoint trained for 2 or more persons (or task=joint / inbetweening)")
    if clip_persons < P:
        raise DataError(f"{where} has {clip_persons} person(s) but the checkpoint generates {P}; pick clips with "
                        f"at least {P} persons or a checkpoint trained for {clip_persons}")
    if cfg.task in DRIVEN_TASKS:
        bad = [i for i in cfg.driven if not 0 <= i < P]
        if bad:
            raise ConfigError(f"driven person {bad[0]} is out of range for a {P}-person checkpoint (slots 0..{P - 1})")
        if len(set(cfg.driven)) >= P:
            raise ConfigError(f"driven={list(cfg.driven)} leaves no person to generate with {P} persons; drive at "
                              f"most {P - 1}")
        if not cfg.driven:
            raise ConfigError(f"task {cfg.task} needs at least one driven person (driven=[0])")
        if len(set(cfg.driven)) != len(cfg.driven):
            raise ConfigError(f"driven={list(cfg.driven)} names a person twice")
    if cfg.context_latent >= window:
        raise ConfigError(f"context_seq_len {cfg.context_seq_len} fills the whole {window * f}-frame window; use at "
                          f"most {(window - 1) * f}")
    if cfg.task == "inbetweening":
        _check_keyframes(cfg, clip_frames, where, window)
        return
    # the reference reads the ground-truth canonical frame AT the first generated frame (spec 4.8)
    need = cfg.context_seq_len + (1 if cfg.compat == "reference" else 0)
    if clip_frames < max(need, 1):
        extra = " plus one" if cfg.compat == "reference" else ""
        raise DataError(f"{where} has {clip_frames} frames, fewer than the context of {cfg.context_seq_len} "
                        f"frames{extra} that task {cfg.task} needs; lower context_seq_len or pick a longer clip")
    if cfg.task in DRIVEN_TASKS and cfg.compat == "fixed" and min(clip_frames, cfg.sampling_seq_len) < window * f:
        raise DataError(f"{where} gives {min(clip_frames, cfg.sampling_seq_len)} frames of ground truth "
                        f"(min of the clip and sampling_seq_len); task {cfg.task} needs at least one "
                        f"{window * f}-frame window")


def _check_keyframes(cfg: SamplingConfig, clip_frames: int, where: str, window: int) -> None:
    keys = list(cfg.keyframes)
    if not keys:
        raise ConfigError("inbetweening needs at least one keyframe (keyframes=[0,63])")
    if keys != sorted(set(keys)):
        raise ConfigError(f"keyframes {keys} must be sorted and distinct, e.g. {sorted(set(keys))}")
    length = cfg.sampling_seq_len
    if keys[0] < 0 or keys[-1] >= length:
        raise ConfigError(f"keyframe {keys[-1] if keys[-1] >= length else keys[0]} is outside the sequence of "
                          f"sampling_seq_len={length} frames (keyframes must be in 0..{length - 1})")
    if keys[-1] >= clip_frames:
        raise DataError(f"{where} has {clip_frames} frames but keyframe {keys[-1]} needs its ground truth; pick a "
                        "longer clip or earlier keyframes")
    if length < window * 4:
        raise ConfigError(f"inbetweening needs sampling_seq_len >= {window * 4} frames (one window), got {length}")
    if cfg.compat == "reference" and length // 4 != window:
        raise ConfigError(f"the reference's inbetweening runs exactly one {window * 4}-frame window; "
                          f"sampling_seq_len={length} needs compat=fixed")


def plan_for(cfg: SamplingConfig, num_persons: int, clip_frames: int | None = None,
             window: int = WINDOW_LATENT, frames_per_latent: int = 4) -> Plan:
    """The :class:`Plan` ``cfg`` runs on a ``num_persons`` checkpoint (rolling tasks depend on ``clip_frames``)."""
    P, f = num_persons, frames_per_latent
    common = {"sampling_steps": cfg.sampling_steps, "schedule": cfg.sampling_schedule,
              "offset_proportion": cfg.offset_proportion, "compat": cfg.compat, "window": window,
              "frames_per_latent": f}
    if cfg.task == "joint":
        return joint_plan(P, cfg.sampling_seq_len, cfg.context_seq_len, subseq_len=cfg.sampling_subseq_len,
                          ar_seq_stride=cfg.ar_seq_stride, **common)
    if cfg.task in CHAIN_TASKS:
        return chain_plan(cfg.task, P, cfg.sampling_seq_len, cfg.context_seq_len, subseq_len=cfg.sampling_subseq_len,
                          ar_seq_stride=cfg.ar_seq_stride, **common)
    if cfg.task == "inbetweening":
        return inbetweening_plan(P, cfg.keyframes, cfg.sampling_seq_len, cfg.context_seq_len, **common)
    if clip_frames is None:
        raise ConfigError(f"the plan of task {cfg.task} depends on the clip length; pass clip_frames")
    if cfg.task in ROLLING_TASKS:
        return rolling_plan(cfg.task, P, clip_frames, cfg.driven, cfg.sampling_seq_len, cfg.context_seq_len, **common)
    if cfg.task == "pp2joint":
        return pp2joint_plan(P, clip_frames, cfg.driven, cfg.sampling_seq_len, cfg.context_seq_len,
                             subseq_len=cfg.sampling_subseq_len, ar_seq_stride=cfg.ar_seq_stride, **common)
    raise ConfigError(f"unknown task {cfg.task!r}")
