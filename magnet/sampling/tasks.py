"""Per-task rules that need no model: which plan a task runs and which requests it refuses (spec 4.1, 4.4).

``plan_for(config, num_persons, clip_frames)`` and ``check_request(config, num_persons, clip_frames,
clip_persons)`` are shared by :class:`magnet.sampling.Sampler` and ``sample.py``'s ``plan_only`` mode, so a plan
printed before sampling is the plan that runs.
"""

from __future__ import annotations

from magnet.errors import ConfigError, DataError
from magnet.sampling.config import IMPLEMENTED_TASKS, SamplingConfig
from magnet.sampling.plans import ROLLING_TASKS, Plan, joint_plan, rolling_plan

__all__ = ["WINDOW_LATENT", "check_request", "plan_for"]

WINDOW_LATENT = 16
"""Latent frames per window (64 frames): the training window of the DFoT (spec 4.1)."""


def check_request(cfg: SamplingConfig, num_persons: int, clip_frames: int, clip_persons: int,
                  where: str = "the clip", window: int = WINDOW_LATENT) -> None:
    """One-line errors for a task / checkpoint / clip combination that cannot run, before any model work."""
    if cfg.task not in IMPLEMENTED_TASKS:
        raise ConfigError(f"task {cfg.task} is not implemented yet (implemented: {', '.join(IMPLEMENTED_TASKS)})")
    P = int(num_persons)
    if clip_persons < P:
        raise DataError(f"{where} has {clip_persons} person(s) but the checkpoint generates {P}; pick clips with "
                        f"at least {P} persons or a checkpoint trained for {clip_persons}")
    if cfg.context_latent >= window:
        raise ConfigError(f"context_seq_len {cfg.context_seq_len} fills the whole {window * 4}-frame window; use at "
                          f"most {(window - 1) * 4}")
    # the reference reads the ground-truth canonical frame AT the first generated frame (spec 4.8)
    need = cfg.context_seq_len + (1 if cfg.compat == "reference" else 0)
    if clip_frames < max(need, 1):
        extra = " plus one" if cfg.compat == "reference" else ""
        raise DataError(f"{where} has {clip_frames} frames, fewer than the context of {cfg.context_seq_len} "
                        f"frames{extra} that task {cfg.task} needs; lower context_seq_len or pick a longer clip")
    if cfg.task in ROLLING_TASKS and cfg.compat == "fixed" and clip_frames < window * 4:
        raise DataError(f"{where} has {clip_frames} frames; task {cfg.task} needs at least one {window * 4}-frame "
                        "window of ground truth")
    for i in cfg.driven if cfg.task in ROLLING_TASKS else ():
        if not 0 <= i < P:
            raise ConfigError(f"driven person {i} is out of range for a {P}-person checkpoint (0..{P - 1})")


def plan_for(cfg: SamplingConfig, num_persons: int, clip_frames: int | None = None,
             window: int = WINDOW_LATENT, frames_per_latent: int = 4) -> Plan:
    """The :class:`Plan` ``cfg`` runs on a ``num_persons`` checkpoint (rolling tasks depend on ``clip_frames``)."""
    if cfg.task == "joint":
        return joint_plan(num_persons, cfg.sampling_seq_len, cfg.context_seq_len, cfg.sampling_steps,
                          cfg.sampling_schedule, cfg.sampling_subseq_len, cfg.ar_seq_stride, cfg.offset_proportion,
                          cfg.compat, window, frames_per_latent)
    if cfg.task in ROLLING_TASKS:
        if clip_frames is None:
            raise ConfigError(f"the plan of task {cfg.task} depends on the clip length; pass clip_frames")
        return rolling_plan(cfg.task, num_persons, clip_frames, cfg.driven, cfg.sampling_seq_len,
                            cfg.context_seq_len, cfg.sampling_steps, cfg.sampling_schedule, cfg.offset_proportion,
                            cfg.compat, window, frames_per_latent)
    raise ConfigError(f"task {cfg.task} is not implemented yet (implemented: {', '.join(IMPLEMENTED_TASKS)})")
