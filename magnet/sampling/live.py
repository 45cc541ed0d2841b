"""Live motion control: the driven persons' frames arrive a chunk at a time, the generated persons answer for the
same span (reference spec 4.4 ``motion_control_live``, as a streaming API).

    session = sampler.live(context=clip[:32], driven=[0], num_samples=1, seed=0)
    for frames in stream:                       # raw packed frames [F, P, D], F a multiple of 4 (e.g. 32)
        chunk = session.push(frames)            # the same span for every person: chunk.motion [S, F, P, D]

Each push runs one window of 16 latent frames ending at the newest frame: its earlier frames are context (the
generated persons' own history, the driven persons' ground truth), its newest ``F / 4`` latent frames are
denoised through the whole schedule with the driven persons clean. The batch task (``compat=fixed``) is this loop
run over a whole clip: the same windows, the same ground-truth encoding (each window's own frames), the same
tokens (tested). Only the driven persons' entries of the pushed frames are read; their transforms toward the
generated persons come from the generated persons' prediction, not from the frames. ``push`` decodes the window
it ran (the batch task decodes the whole sequence once at the end, so the decoded frames near chunk borders can
differ slightly; the tokens do not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from magnet.errors import ConfigError, DataError
from magnet.representation import num_persons_for_dim, world_joints
from magnet.sampling.config import SamplingConfig
from magnet.sampling.plans import PlanBuilder, add_rolling_window, task_group_size
from magnet.sampling.postprocess import reconstruct_roots_fixed

if TYPE_CHECKING:  # pragma: no cover
    from magnet.sampling.sampler import Sampler

__all__ = ["LiveChunk", "LiveSession"]


@dataclass
class LiveChunk:
    """What one :meth:`LiveSession.push` returns (the pushed span only): ``motion [S, F, P, D]`` denormalised
    packed motion of every person (driven persons as pushed), ``world_root [S, F, P, 9]``, ``joints [S, F, P, 22,
    3]`` (None without ``joints``), ``start`` (first frame of the span in the session), ``network_calls``."""

    motion: Tensor
    world_root: Tensor
    joints: Tensor | None
    start: int
    network_calls: int


class LiveSession:
    """A streaming ``motion_control_live`` run (see the module docstring); made by :meth:`Sampler.live`."""

    def __init__(self, sampler: Sampler, context: Any, config: SamplingConfig, seed: int = 0,
                 noise: Tensor | None = None, joints: bool = True):
        if config.task != "motion_control_live":
            raise ConfigError(f"a live session runs motion_control_live, not {config.task}")
        if config.compat != "fixed":
            raise ConfigError("a live session runs compat=fixed (the reference encodes the whole clip at once, "
                              "which needs every frame in advance)")
        self.s, self.cfg, self.joints = sampler, config, joints
        raw = context if isinstance(context, Tensor) else torch.as_tensor(np.asarray(context))
        f = sampler.frames_per_latent
        tc = config.context_latent
        if raw.dim() != 3:
            raise DataError(f"the live context has shape {tuple(raw.shape)}; expected packed motion [T, P, D]")
        if raw.shape[0] < tc * f:
            raise DataError(f"the live context has {raw.shape[0]} frames but context_seq_len is "
                            f"{config.context_seq_len}; pass at least that many opening frames")
        # the frames arrive later: check the task, persons and options as if a full window of them were there
        window_frames = sampler.window * f
        sampler.check(config, window_frames, int(raw.shape[1]), where="the live context")
        self.raw = sampler.select_clip(raw[: tc * f])[None]                         # [1, Tc*4, P, D] as given
        self.gt = sampler.stats.normalise(self.raw)
        self.P, self.W = sampler.num_persons, sampler.token_layout.width
        self.S = config.sampling_num
        self.generator = torch.Generator(device=sampler.device).manual_seed(int(seed))
        self.noise = noise
        self.tokens = torch.zeros(self.S, 0, self.P, self.W, device=sampler.device)
        self.done = tc                                                              # latent frames generated
        self.pending = 0                                                            # latent frames waiting
        known = self.raw
        lay = sampler.packed_layout
        self.canon = known[..., lay.world_canon].expand(self.S, -1, -1, -1).clone()   # [S, F, P, 9]
        self.root = known[..., lay.world_root].expand(self.S, -1, -1, -1).clone()
        self._extend_tokens(tc)
        ctx = sampler.encode(self.gt)                                               # opening context, all persons
        self.tokens[:, :tc] = ctx
        self.window_index = 0

    # -------------------------------------------------------------------------------------------------- state

    @property
    def frames(self) -> int:
        """Frames answered so far (the context included)."""
        return self.done * self.s.frames_per_latent

    def _extend_tokens(self, n: int) -> None:
        have = self.tokens.shape[1]
        shape = (self.S, n, self.P, self.W)
        if self.noise is not None:
            part = self.noise[:, have:have + n].to(self.s.device, torch.float32)
            if part.shape[1] != n:
                raise DataError(f"the session's noise covers {self.noise.shape[1]} latent frames; {have + n} needed")
        else:
            part = torch.randn(shape, generator=self.generator, device=self.s.device)
        self.tokens = torch.cat([self.tokens, part], dim=1)

    # -------------------------------------------------------------------------------------------------- push

    @torch.no_grad()
    def push(self, frames: Any) -> LiveChunk | None:
        """Add the driven persons' next ``F`` frames (raw packed ``[F, P_clip, D]``, F a multiple of 4, the other
        persons' entries ignored) and return every person's motion for those frames; ``None`` while the first
        window (64 frames, context included) is not yet full."""
        s, f, tm = self.s, self.s.frames_per_latent, self.s.window
        x = frames if isinstance(frames, Tensor) else torch.as_tensor(np.asarray(frames))
        if x.dim() != 3 or num_persons_for_dim(int(x.shape[-1])) != x.shape[1]:
            raise DataError(f"pushed frames have shape {tuple(x.shape)}; expected packed motion [F, P, D]")
        F = int(x.shape[0])
        if F < f or F % f:
            raise DataError(f"push frames in multiples of {f} (one latent frame), got {F}")
        raw_new = s.select_clip(x)[None]
        new = s.stats.normalise(raw_new)
        generated = [p for p in range(self.P) if p not in self.cfg.driven]
        new[:, :, generated] = 0.0                                                  # unknown: the normalised mean
        self.gt = torch.cat([self.gt, new], dim=1)
        self.raw = torch.cat([self.raw, raw_new], dim=1)
        self.pending += F // f
        end = self.done + self.pending
        if end < tm:
            return None
        if self.pending > tm - 1:
            raise DataError(f"{self.pending * f} frames pending exceed one window ({(tm - 1) * f} at most); push "
                            "smaller chunks")
        start, ctx_len = end - tm, tm - self.pending
        builder = PlanBuilder(self.P, tm, self.cfg.sampling_steps)
        add_rolling_window(builder, "motion_control_live", start, ctx_len, self.cfg.driven, start == 0,
                           self.cfg.sampling_steps, self.cfg.sampling_schedule, self.cfg.offset_proportion, "fixed")
        plan = builder.build(task="motion_control_live", schedule=self.cfg.sampling_schedule, compat="fixed",
                             sampling_steps=self.cfg.sampling_steps, total_latent=end,
                             context_latent=self.cfg.context_latent,
                             group_size=task_group_size("motion_control_live", self.cfg.sampling_schedule, self.P, 1),
                             frames_per_latent=f)
        plan.meta.update({"gt_latent": end, "driven": sorted(set(self.cfg.driven))})
        self._extend_tokens(end - self.tokens.shape[1])
        calls = s.network_calls
        xs = self.tokens.clone()
        tokens, _ = s._run_plan(xs, self.gt, plan, self.cfg, self.generator, None)
        self.tokens = tokens
        span = slice(self.done * f, end * f)
        chunk = self._answer(plan, start, span)
        self.done, self.pending = end, 0
        chunk.network_calls = s.network_calls - calls
        return chunk

    def _answer(self, plan, start: int, span: slice) -> LiveChunk:
        """Decode the window that ran and place its new frames in the world."""
        s, f, tm = self.s, self.s.frames_per_latent, self.s.window
        lay = s.packed_layout
        win = self.tokens[:, start:start + tm]
        gt_win = self.gt[:, start * f:(start + tm) * f]
        samples = s._finish(win, None, gt_win, plan, self.cfg, False, 0, roots=False)
        motion = samples.motion                                                      # [S, 64, P, D] window
        first = start * f
        known = torch.zeros(tm * f, self.P, dtype=torch.bool, device=s.device)
        known[: span.start - first] = True                                           # frames answered before
        known[:, list(self.cfg.driven)] = True
        gt_canon = torch.zeros(self.S, tm * f, self.P, 9, device=s.device)
        gt_root = torch.zeros_like(gt_canon)
        gt_canon[:, : span.start - first] = self.canon[:, first:span.start]
        gt_root[:, : span.start - first] = self.root[:, first:span.start]
        raw_gt = self.raw[:, start * f:(start + tm) * f]
        for d in self.cfg.driven:
            gt_canon[:, :, d] = raw_gt[:, :, d, lay.world_canon]
            gt_root[:, :, d] = raw_gt[:, :, d, lay.world_root]
        partners = motion[..., lay.partners].reshape(self.S, tm * f, self.P, self.P - 1, 9)
        C, root = reconstruct_roots_fixed(motion[..., lay.delta], motion[..., lay.canon_root], partners, gt_canon,
                                          gt_root, known, self.cfg.root_transform_mode, min(self.cfg.driven))
        motion[..., lay.world_canon] = C
        motion[..., lay.world_root] = root
        for d in self.cfg.driven:
            motion[:, :, d] = raw_gt[:, :, d].to(motion.dtype)
        new = slice(span.start - first, span.stop - first)
        self.canon = torch.cat([self.canon, motion[:, new, :, lay.world_canon]], dim=1)
        self.root = torch.cat([self.root, motion[:, new, :, lay.world_root]], dim=1)
        out = motion[:, new]
        joints = world_joints(out, s.body_model) if self.joints else None
        return LiveChunk(motion=out, world_root=out[..., lay.world_root], joints=joints, start=span.start,
                         network_calls=0)
