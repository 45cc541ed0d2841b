"""The DFoT sampler (reference spec 4): plans, denoising steps, rollouts, decoding and root reconstruction.

``Sampler.from_checkpoint(path)`` loads a trained DFoT with its VQ-VAE and statistics; ``generate(task=...,
context=clip)`` returns :class:`Samples`. One code path serves ``sample.py``, the Python API and the validation
callback. The steps of joint generation (spec 4.3):

1. the ground-truth clip (raw packed ``[T, P_clip, D]``; its first P persons) is normalised; the context frames are
   encoded with the VQ-VAE into clean tokens;
2. the token sequence ``[S, Tz, P, W]`` starts as Gaussian noise (or the ``noise=`` given) with the context tokens
   in their slots;
3. every window of the :class:`~magnet.sampling.plans.Plan` is denoised call by call: the network predicts the
   clean tokens from the window at its levels (level -1 = clean is fed as it is), the DDIM (or DDPM) step moves
   every token to its next level, context tokens are not written back, tokens whose level does not change stay
   exactly as they are; a finished window is smoothed (4.6) and its transforms post-processed (4.7);
4. the tokens are decoded (latents snapped to the codebook, decoder conditioned on the context's betas and the
   generated deltas) and the world roots reconstructed (4.8).

``SamplingConfig.compat`` selects the reference's computation (``reference``) or ours with its defects fixed
(``fixed``, default); every difference is listed in the README.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from magnet.errors import ConfigError, DataError
from magnet.geometry import matrix_to_quat, rot6d_to_matrix, tf9_identity, tf9_to_tf7
from magnet.models.diffusion import DiscreteDiffusion
from magnet.models.tokens import make_tokens, token_blocks_to_transforms, unpack_tokens
from magnet.models.vqvae import fold_persons, unfold_persons, vqvae_inputs
from magnet.representation import MotionStats, PackedLayout, num_persons_for_dim, select_persons, world_joints
from magnet.sampling.checkpoint import GenerationModels, load_generation_models
from magnet.sampling.config import SamplingConfig
from magnet.sampling.guidance import Guidance
from magnet.sampling.plans import ROLLING_TASKS, Plan
from magnet.sampling.postprocess import (
    TransformStats,
    postprocess_transforms,
    reconstruct_roots,
    temporal_smoothing,
)
from magnet.sampling.tasks import WINDOW_LATENT, check_request, plan_for

__all__ = ["Sampler", "Samples"]


@dataclass
class Samples:
    """What :meth:`Sampler.generate` returns (tensors on the sampler's device, float32 unless noted).

    ``motion``: ``[S, T, P, D(P)]`` denormalised packed motion (world fields reconstructed, hands identity,
    contacts 0); ``world_root``: ``[S, T, P, 9]`` world pelvis poses (9D); ``joints``: ``[S, T, P, 22, 3]`` world
    positions of SMPL-X joints 0..21 (None when ``joints=False``); ``tokens``: ``[S, Tz, P, W]`` the final tokens;
    ``gt``: ``[B, Tg, P, D(P)]`` the ground truth used (raw, first P persons; B = 1 for a clip, S for
    :meth:`Sampler.generate_windows`); ``plan``: the plan that ran;
    ``context_frames``; ``network_calls``: transformer forwards made (CFG terms counted separately).
    """

    motion: Tensor
    world_root: Tensor
    joints: Tensor | None
    tokens: Tensor
    gt: Tensor
    plan: Plan
    context_frames: int
    network_calls: int
    config: SamplingConfig

    @property
    def num_samples(self) -> int:
        return int(self.motion.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.motion.shape[1])

    def output_arrays(self) -> dict[str, Any]:
        """The reference's npz content (spec 7.1): row 0 the ground truth padded or cut to T frames (padding
        repeats the last frame with an identity delta), rows 1..S the samples; ``betas`` are the ground truth's."""
        S, T, P, _ = self.motion.shape
        lay = PackedLayout(P)
        gt = pad_frames(self.gt[0].to(self.motion), T, lay)
        rows = torch.cat([gt[None], self.motion], dim=0)                         # [1+S, T, P, D]
        betas = gt[..., lay.betas][None].expand(S + 1, -1, -1, -1)
        body = matrix_to_quat(rot6d_to_matrix(rows[..., lay.body_rot].reshape(S + 1, T, P, 21, 6)))
        root = tf9_to_tf7(rows[..., lay.world_root])
        return {
            "betas": betas.cpu().numpy(), "T_world_root": root.cpu().numpy(),
            "body_joint_rotations": body.cpu().numpy(), "context_timesteps": self.context_frames,
            "timesteps": T, "gt_timesteps": min(int(self.gt.shape[1]), T), "mode": self.config.task,
            "joint_phase_start_timesteps": -1,
        }


def pad_frames(x: Tensor, frames: int, layout: PackedLayout) -> Tensor:
    """``x[T, P, D]`` cut or padded to ``frames`` (padding repeats the last frame, delta set to the identity)."""
    if x.shape[0] >= frames:
        return x[:frames]
    pad = x[-1:].expand(frames - x.shape[0], -1, -1).clone()
    pad[..., layout.delta] = tf9_identity(pad.shape[:-1], dtype=x.dtype, device=x.device)
    return torch.cat([x, pad], dim=0)


class Sampler:
    """Generates motion with a trained DFoT (see the module docstring).

    ``dfot``, ``vqvae``: the networks (put in eval mode); ``stats``: the normalisation statistics
    they were trained with; ``diffusion``: :class:`DiscreteDiffusion` keyword arguments (the checkpoint's);
    ``body_model``: for world joint positions (None: the built-in default skeleton); ``device``.
    """

    def __init__(self, dfot, vqvae, stats: MotionStats, diffusion: dict[str, Any] | None = None,
                 body_model: Any = None, device: str | torch.device = "cpu", source: str = ""):
        self.device = torch.device(device)
        # eval mode only: the networks may belong to a module in training (validation sampling), so their
        # requires_grad flags are left alone; guidance asks autograd for the latents' gradient only
        self.dfot = dfot.eval().to(self.device)
        self.vqvae = vqvae.eval().to(self.device)
        self.stats = stats
        self.diffusion = DiscreteDiffusion(**(diffusion or {})).to(self.device)
        self.num_persons = self.dfot.num_persons
        self.token_layout = self.dfot.token_layout
        self.packed_layout = PackedLayout(self.num_persons)
        self.window = WINDOW_LATENT
        self.frames_per_latent = self.token_layout.frames_per_latent
        self.tstats = TransformStats(stats.mean, stats.std, self.device)
        self._body_model = body_model
        self.source = source
        self.network_calls = 0
        self.decoder_calls = 0
        # the network computes its last layer only for the tokens a step keeps (equal to the full forward to float
        # tolerance; False runs every token, the straightforward computation)
        self.prune_rows = True

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
                        stats: MotionStats | str | os.PathLike | None = None, body_model: Any = None) -> Sampler:
        """Load from a ``dfot.safetensors``, a DFoT run directory, a DFoT ``.ckpt`` or a reference run directory
        (imported on the fly); see :func:`magnet.sampling.checkpoint.load_generation_models`."""
        models: GenerationModels = load_generation_models(path, stats=stats)
        return cls(models.dfot, models.vqvae, models.stats, models.diffusion, body_model, device, models.source)

    @property
    def body_model(self):
        if self._body_model is None or isinstance(self._body_model, (str, os.PathLike)):
            from magnet.body import load_body_model

            self._body_model = load_body_model(self._body_model, warn=False)
        return self._body_model.to(self.device)

    # ------------------------------------------------------------------------------------------ planning

    def config(self, task: str = "joint", **overrides: Any) -> SamplingConfig:
        """The reference's settings for ``task`` with ``overrides`` (a :class:`SamplingConfig`)."""
        return SamplingConfig.for_task(task, **overrides)

    def check(self, cfg: SamplingConfig, clip_frames: int, clip_persons: int, where: str = "the clip") -> None:
        """One-line errors for a task / clip combination the sampler cannot run, before any model work."""
        check_request(cfg, self.num_persons, clip_frames, clip_persons, where, self.window)

    def plan(self, cfg: SamplingConfig, clip_frames: int | None = None) -> Plan:
        """The :class:`Plan` of ``cfg`` (rolling tasks depend on the clip length ``clip_frames``)."""
        return plan_for(cfg, self.num_persons, clip_frames, self.window, self.frames_per_latent)

    # ------------------------------------------------------------------------------------------ tokens

    def prepare_clip(self, clip: Any) -> Tensor:
        """Raw packed clip ``[T, P_clip, D(P_clip)]`` -> normalised ``[T, P, D(P)]`` (its first P persons)."""
        x = clip if isinstance(clip, Tensor) else torch.as_tensor(np.asarray(clip))
        if x.dim() != 3:
            raise DataError(f"context clip has shape {tuple(x.shape)}; expected [T, P, D] packed motion")
        p_clip = num_persons_for_dim(int(x.shape[-1]))
        if p_clip != x.shape[1]:
            raise DataError(f"context clip has {x.shape[1]} persons but feature dim {x.shape[-1]} (D of {p_clip})")
        if not bool(torch.isfinite(x).all()):
            raise DataError("context clip holds NaN or Inf values")
        x = x.to(self.device, torch.float32)
        if p_clip != self.num_persons:
            x = self.stats.normalise(x)
            x = select_persons(x, list(range(self.num_persons)))
            return x
        return self.stats.normalise(x)

    def encode(self, x_norm: Tensor) -> Tensor:
        """Clean tokens ``[B, Tz, P, W]`` of normalised frames ``x_norm[B, T, P, D]`` (T a multiple of 4)."""
        value, enc_cond, _, mask = vqvae_inputs(x_norm, self.packed_layout, self.frames_per_latent)
        z, _ = self.vqvae.encode(value, enc_cond, mask)
        latent = unfold_persons(z, self.num_persons)
        return make_tokens(x_norm, latent, self.packed_layout)

    @torch.no_grad()
    def decode(self, tokens: Tensor, betas_norm: Tensor) -> Tensor:
        """Tokens ``[S, Tz, P, W]`` -> normalised VQ-VAE values ``[S, 4 Tz, P, 135]`` (latents snapped to the
        codebook; decoder condition = ``betas_norm[B, P, 10]`` (B = 1 or S) and the tokens' own deltas)."""
        S, tz, P, _ = tokens.shape
        parts = unpack_tokens(tokens, self.token_layout)
        betas = betas_norm.to(tokens)[:, None].expand(S, tz, P, -1)
        dec_cond = fold_persons(torch.cat([betas, parts["delta"]], dim=-1))
        value = self.vqvae.decode(fold_persons(parts["pose_latent"]).contiguous(), dec_cond)
        return unfold_persons(value, P)

    # ------------------------------------------------------------------------------------------ steps

    def _step(self, x: Tensor, levels: Tensor, next_levels: Tensor, context: Tensor, progress: float,
              cfg: SamplingConfig, guidance: Guidance, generator: torch.Generator | None,
              rows: Tensor | None = None) -> Tensor:
        """One network call (with the CFG composition), x0 guidance and one denoising step on the window
        ``x[S, Tm, P, W]``; ``context[Tm, P]`` marks the tokens the CFG masking modes act on. ``rows``: the flat
        token indices whose new value is kept (the network computes only those when no x0 guidance runs, since
        guidance decodes every token's prediction)."""
        if any(guidance.active(progress)):
            rows = None
        out, calls = guidance.network(x, levels, context, generator, rows)
        self.network_calls += calls
        x0, eps = self.diffusion.model_predictions(out, x, levels)
        pred_x0 = self.diffusion.objective == "pred_x0"
        # the reference applies x0 guidance only with the pred_x0 objective (it keeps the raw output otherwise)
        guided = guidance.guide(x0, progress) if pred_x0 or cfg.compat == "fixed" else x0
        if guided is not x0 or pred_x0:
            x0, eps = guided, None  # the noise implied by the (guided) x0 at the clamped level, inside the step
        if cfg.denoising_process == "ddpm":
            if cfg.compat == "reference":
                return self._ddpm_reference(x, levels, next_levels, x0, generator)
            return self.diffusion.ddim_step(x, levels, next_levels, x0, eps, eta=1.0, generator=generator)
        return self.diffusion.ddim_step(x, levels, next_levels, x0, eps, eta=float(cfg.ddim_eta), generator=generator)

    def _ddpm_reference(self, x: Tensor, levels: Tensor, next_levels: Tensor, x0: Tensor,
                        generator: torch.Generator | None) -> Tensor:
        """The reference's DDPM option: the posterior from level k to k - 1, whatever the next level is."""
        d = self.diffusion
        k = levels.clamp_min(0)
        ab = d.alpha_bar(k).to(x.device)
        ab_prev = d.alpha_bar(k - 1).to(x.device)
        beta = 1.0 - ab / ab_prev
        c0 = (ab_prev.sqrt() * beta / (1.0 - ab).clamp_min(1e-12))
        ck = ((1.0 - beta).sqrt() * (1.0 - ab_prev) / (1.0 - ab).clamp_min(1e-12))
        var = beta * (1.0 - ab_prev) / (1.0 - ab).clamp_min(1e-12)
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        sigma = torch.where(k > 0, var.clamp_min(0).sqrt(), torch.zeros_like(var))
        out = c0.to(x.dtype)[..., None] * x0 + ck.to(x.dtype)[..., None] * x + sigma.to(x.dtype)[..., None] * z
        same = (levels == next_levels)[..., None]
        return torch.where(same, x, out)

    # ------------------------------------------------------------------------------------------ generation

    @torch.no_grad()
    def generate(self, task: str | None = None, context: Any = None, num_samples: int | None = None,
                 seed: int = 0, noise: Tensor | None = None, config: SamplingConfig | None = None,
                 joints: bool = True, progress: Callable[[int, int], None] | None = None,
                 **overrides: Any) -> Samples:
        """Generate ``num_samples`` continuations / completions of the ground-truth clip ``context``.

        ``context``: raw packed motion ``[T, P_clip, D]`` as stored in the dataset HDF5 (its first
        ``num_persons`` persons are used; the task decides which frames are given). ``config``: a
        :class:`SamplingConfig` (default: the reference's settings for ``task``, ``joint`` if not given);
        ``overrides`` change single options (``sampling_steps=10``, ``compat="reference"``, ...). ``seed`` fixes
        every random draw; ``noise`` ``[S, Tz, P, W]`` gives the initial token noise instead (``Tz`` = the plan's
        ``total_latent``), so a run is reproducible to the bit and comparable across implementations.
        ``progress(done, total)`` is called after every denoising step.
        """
        if config is None:
            cfg = SamplingConfig.for_task(task or "joint", **overrides)
        else:
            if task is not None and task != config.task:
                raise ConfigError(f"task={task!r} disagrees with config.task={config.task!r}; pass one of them")
            cfg = config.replace(**overrides) if overrides else config
        if num_samples is not None:
            cfg = cfg.replace(sampling_num=int(num_samples))
        if context is None:
            raise ConfigError(f"task {cfg.task} needs a ground-truth clip: pass context=<[T, P, D] packed motion>")
        raw = context if isinstance(context, Tensor) else torch.as_tensor(np.asarray(context))
        if raw.dim() != 3:
            raise DataError(f"context clip has shape {tuple(raw.shape)}; expected [T, P, D] packed motion")
        self.check(cfg, int(raw.shape[0]), int(raw.shape[1]))
        gt_norm = self.prepare_clip(raw)[None]
        return self._generate(gt_norm, cfg, seed, noise, joints, progress)

    @torch.no_grad()
    def generate_windows(self, windows: Tensor, seed: int = 0, joints: bool = True,
                         config: SamplingConfig | None = None, **overrides: Any) -> Samples:
        """One joint sample for each of ``windows[B, T, P, D]`` (NORMALISED packed motion, e.g. a validation batch):
        the first ``context_seq_len`` frames of each window are its context, ``sampling_seq_len`` defaults to T.
        Used by the validation callback; ``Samples.gt`` is then ``[B, T, P, D]``."""
        if windows.dim() != 4 or windows.shape[2] != self.num_persons or windows.shape[3] != self.packed_layout.dim:
            raise DataError(f"windows have shape {tuple(windows.shape)}, expected [B, T, {self.num_persons}, "
                            f"{self.packed_layout.dim}] normalised packed motion")
        B, T = int(windows.shape[0]), int(windows.shape[1])
        overrides.setdefault("sampling_seq_len", T)
        cfg = (config or SamplingConfig.for_task("joint")).replace(sampling_num=B, **overrides)
        if cfg.task != "joint":
            raise ConfigError(f"generate_windows runs the joint task, not {cfg.task}")
        self.check(cfg, T, self.num_persons, where="the window")
        return self._generate(windows.to(self.device, torch.float32), cfg, seed, None, joints, None)

    def _generate(self, gt_norm: Tensor, cfg: SamplingConfig, seed: int, noise: Tensor | None, joints: bool,
                  progress: Callable[[int, int], None] | None) -> Samples:
        """``gt_norm[B, T, P, D]`` normalised ground truth, B = 1 (shared by every sample) or B = S."""
        plan = self.plan(cfg, int(gt_norm.shape[1]))
        S, P, W = cfg.sampling_num, self.num_persons, self.token_layout.width
        shape = (S, plan.total_latent, P, W)
        generator = torch.Generator(device=self.device).manual_seed(int(seed))
        if noise is None:
            xs = torch.randn(shape, generator=generator, device=self.device)
        else:
            if tuple(noise.shape) != shape:
                raise DataError(f"noise has shape {tuple(noise.shape)}, expected {list(shape)} "
                                f"[samples, latent frames, persons, token width] for this plan")
            xs = noise.to(self.device, torch.float32).clone()
        calls_before = self.network_calls
        tokens, given = self._run_plan(xs, gt_norm, plan, cfg, generator, progress)
        return self._finish(tokens, given, gt_norm, plan, cfg, joints, self.network_calls - calls_before)

    def _gt_tokens(self, gt_norm: Tensor, total_latent: int) -> Tensor:
        """Clean tokens ``[B, total_latent, P, W]`` of the ground truth ``gt_norm[B, T, P, D]`` (padded by repeating
        its last frame, identity delta, when it is shorter)."""
        f = self.frames_per_latent
        frames = min(gt_norm.shape[1] // f * f, total_latent * f)
        x = gt_norm[:, :frames]
        if frames < total_latent * f:
            raw = self.stats.denormalise(x)
            x = self.stats.normalise(torch.stack([pad_frames(r, total_latent * f, self.packed_layout) for r in raw]))
        return self.encode(x)

    def _run_plan(self, xs: Tensor, gt_norm: Tensor, plan: Plan, cfg: SamplingConfig,
                  generator: torch.Generator, progress: Callable[[int, int], None] | None) -> tuple[Tensor, Tensor]:
        """Denoise ``xs[S, T, P, W]`` window by window along ``plan`` with the ground truth ``gt_norm[B, Tg, P, D]``
        (B = 1 or S) -> ``(tokens, given[T, P])`` where ``given`` marks ground-truth tokens (context, driven
        persons)."""
        S, T, P, _ = xs.shape
        tm, tc = self.window, plan.context_latent
        dev = self.device
        rolling = cfg.task in ROLLING_TASKS
        gt_tok = self._gt_tokens(gt_norm, T) if rolling else self.encode(gt_norm[:, : tc * self.frames_per_latent])
        xs[:, :tc] = gt_tok[:, :tc]
        given = torch.zeros(T, P, dtype=torch.bool, device=dev)
        given[:tc] = True
        if rolling:
            given[:, list(plan.meta.get("driven", []))] = True
        eps_driven = torch.randn(xs.shape, generator=generator, device=dev) if plan.driven.any() else None
        lv_all = torch.as_tensor(plan.levels, dtype=torch.long, device=dev)
        nx_all = torch.as_tensor(plan.next_levels, dtype=torch.long, device=dev)
        ctx_all = torch.as_tensor(plan.context, device=dev)
        inj_all = torch.as_tensor(plan.inject, device=dev)
        drv_all = torch.as_tensor(plan.driven, device=dev)
        # tokens whose value the step keeps: not context, level changes, not overwritten by ground truth after
        keep_out = ~ctx_all & (lv_all != nx_all) & ~drv_all & ~inj_all
        fixed = cfg.compat == "fixed"
        after_window = cfg.task != "partner_prediction"
        guidance = Guidance(self.dfot, self.vqvae, self.token_layout, cfg, gt_norm[:, 0, :, self.packed_layout.betas])
        positions = torch.arange(tm, device=dev)[:, None].expand(tm, P)
        done, total = 0, plan.num_steps
        for calls in plan.window_calls():
            ws = int(plan.window_start[calls[0]])
            win = xs[:, ws:ws + tm].clone()
            gt_win = gt_tok[:, ws:ws + tm] if rolling else None
            for n in calls:
                lv = lv_all[n].expand(S, tm, P)
                nx = nx_all[n].expand(S, tm, P)
                if rolling and bool(inj_all[n].any()):
                    win = torch.where(inj_all[n][None, :, :, None], gt_win[None], win)
                if fixed:
                    cfg_ctx, ratio = ctx_all[n], float(plan.step[n]) / total
                else:  # the reference: the first context_len latent frames; progress counts network calls
                    cfg_ctx, ratio = positions < int(plan.context_len[n]), float(n) / total
                rows = torch.nonzero(keep_out[n].flatten()).flatten() if self.prune_rows else None
                new = self._step(win, lv, nx, cfg_ctx, ratio, cfg, guidance, generator, rows)
                win = torch.where(ctx_all[n][None, :, :, None], win, new)
                if rolling:
                    if bool(drv_all[n].any()):
                        noised = self.diffusion.q_sample(gt_win.expand_as(win), nx, eps_driven[:, ws:ws + tm])
                        win = torch.where(drv_all[n][None, :, :, None], noised, win)
                    if bool(inj_all[n].any()):
                        win = torch.where(inj_all[n][None, :, :, None], gt_win, win)
                done += 1
                if progress is not None:
                    progress(done, total)
            keep = given[ws:ws + tm] if fixed else None
            if after_window and cfg.use_temporal_smoothing:
                win = temporal_smoothing(win, float(cfg.temporal_smoothing_strength), keep)
            if after_window and cfg.is_update_history_transforms:
                win = postprocess_transforms(win, self.token_layout, self.tstats, int(plan.context_len[calls[0]]),
                                             cfg.root_transform_mode == "temporal", cfg.compat, keep)
            xs[:, ws:ws + tm] = win
        self.decoder_calls += guidance.decoder_calls
        if rolling:
            t_gt = int(plan.meta.get("gt_latent", T))
            return xs[:, :t_gt], given[:t_gt]
        return xs, given

    def _finish(self, tokens: Tensor, given: Tensor, gt_norm: Tensor, plan: Plan, cfg: SamplingConfig,
                joints: bool, calls: int) -> Samples:
        """Decode, assemble packed motion, reconstruct the world roots."""
        S, tz, P, _ = tokens.shape
        lay = self.packed_layout
        f = self.frames_per_latent
        T = tz * f
        betas_norm = gt_norm[:, 0, :, lay.betas]                                       # [B, P, 10]
        value = self.decode(tokens, betas_norm)                                        # [S, T, P, 135]
        delta_n, partners_n = token_blocks_to_transforms(tokens[..., self.token_layout.delta],
                                                         tokens[..., self.token_layout.partners], f)
        x = torch.zeros(S, T, P, lay.dim, device=self.device)
        x[..., lay.betas] = betas_norm[:, None]
        x[..., lay.body_rot] = value[..., :126]
        x[..., lay.canon_root] = value[..., 126:135]
        x[..., lay.delta] = delta_n
        x[..., lay.partners] = partners_n.reshape(S, T, P, (P - 1) * 9)
        x[..., lay.mask] = 1.0
        motion = self.stats.denormalise(x)
        motion[..., lay.hand_rot] = tf9_identity((S, T, P, 30), device=self.device)[..., :6].reshape(S, T, P, 180)
        gt_raw = self.stats.denormalise(gt_norm)
        gt_canon = gt_raw[..., lay.world_canon]
        gt_root = gt_raw[..., lay.world_root]
        partners = motion[..., lay.partners].reshape(S, T, P, P - 1, 9)
        driven = torch.zeros(P, dtype=torch.bool, device=self.device)
        if cfg.compat == "fixed" and cfg.task in ROLLING_TASKS:
            driven[list(cfg.driven)] = True
        C, root = reconstruct_roots(motion[..., lay.delta], motion[..., lay.canon_root], partners, gt_canon, gt_root,
                                    cfg.context_seq_len, cfg.root_transform_mode, cfg.compat, driven)
        motion[..., lay.world_canon] = C
        motion[..., lay.world_root] = root
        world = world_joints(motion, self.body_model) if joints else None
        return Samples(motion=motion, world_root=root, joints=world, tokens=tokens,
                       gt=self.stats.denormalise(gt_norm), plan=plan, context_frames=cfg.context_seq_len,
                       network_calls=calls, config=cfg)
