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
from magnet.geometry import matrix_to_quat, rot6d_to_matrix, tf9_identity, tf9_inverse, tf9_to_tf7
from magnet.models.diffusion import DiscreteDiffusion
from magnet.models.tokens import make_tokens, token_blocks_to_transforms, unpack_tokens
from magnet.models.vqvae import fold_persons, unfold_persons, vqvae_inputs
from magnet.representation import MotionStats, PackedLayout, num_persons_for_dim, select_persons, world_joints
from magnet.sampling.checkpoint import GenerationModels, load_generation_models
from magnet.sampling.config import SamplingConfig
from magnet.sampling.guidance import Guidance
from magnet.sampling.plans import CHAIN_TASKS, ROLLING_TASKS, Plan
from magnet.sampling.postprocess import (
    TransformStats,
    postprocess_transforms,
    reconstruct_roots_fixed,
    reconstruct_roots_reference,
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
            "joint_phase_start_timesteps": int(self.plan.meta.get("joint_phase_start", -1)),
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
        return self.stats.normalise(self.select_clip(clip))

    def select_clip(self, clip: Any) -> Tensor:
        """Raw packed clip ``[T, P_clip, D(P_clip)]`` -> raw ``[T, P, D(P)]`` float32 (its first P persons, partner
        blocks rebuilt for them), checked."""
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
            x = select_persons(x, list(range(self.num_persons)))
        return x

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
              rows: Tensor | None = None, step: int = 0) -> tuple[Tensor, Tensor]:
        """One network call (with the CFG composition), x0 guidance and one denoising step on the window
        ``x[S, Tm, P, W]`` -> ``(stepped window, x0 prediction)``; ``context[Tm, P]`` marks the tokens the CFG
        masking modes act on. ``rows``: the flat token indices whose new value is kept (the network computes only
        those when no x0 guidance runs, since guidance decodes every token's prediction; the other rows of the
        returned x0 are then 0)."""
        if any(guidance.active(progress, step)):
            rows = None
        with self._precision(cfg):
            out, calls = guidance.network(x, levels, context, generator, rows)
        out = out.float()
        self.network_calls += calls
        x0, eps = self.diffusion.model_predictions(out, x, levels)
        pred_x0 = self.diffusion.objective == "pred_x0"
        # the reference applies x0 guidance only with the pred_x0 objective (it keeps the raw output otherwise)
        if pred_x0 or cfg.compat == "fixed":
            with self._precision(cfg):
                guided = guidance.guide(x0, progress, step)  # x0 itself when no guidance runs at this step
        else:
            guided = x0
        if guided is not x0 or pred_x0:
            x0, eps = guided, None  # the noise implied by the (guided) x0 at the clamped level, inside the step
        if cfg.denoising_process == "ddpm":
            if cfg.compat == "reference":
                return self._ddpm_reference(x, levels, next_levels, x0, generator), x0
            return self.diffusion.ddim_step(x, levels, next_levels, x0, eps, eta=1.0, generator=generator), x0
        eta = float(cfg.ddim_eta)
        return self.diffusion.ddim_step(x, levels, next_levels, x0, eps, eta=eta, generator=generator), x0

    def _precision(self, cfg: SamplingConfig):
        """bfloat16 autocast for the networks when ``cfg.precision == "bf16"`` (a no-op context for fp32)."""
        import contextlib

        if cfg.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

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
        gt_raw = self.select_clip(raw)[None]
        return self._generate(self.stats.normalise(gt_raw), cfg, seed, noise, joints, progress, gt_raw)

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
                  progress: Callable[[int, int], None] | None, gt_raw: Tensor | None = None) -> Samples:
        """``gt_norm[B, T, P, D]`` normalised ground truth, B = 1 (shared by every sample) or B = S; ``gt_raw`` the
        same before normalisation (default: denormalised back)."""
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
        return self._finish(tokens, given, gt_norm, plan, cfg, joints, self.network_calls - calls_before, gt_raw=gt_raw)

    def live(self, context: Any, driven: tuple[int, ...] = (0,), num_samples: int = 1, seed: int = 0,
             noise: Tensor | None = None, joints: bool = True, **overrides: Any):
        """A streaming ``motion_control_live`` session (:class:`magnet.sampling.live.LiveSession`): ``context`` holds
        the opening frames of every person (raw packed, at least ``context_seq_len``); then ``push`` the driven
        persons' frames as they arrive and receive every person's motion for the same span."""
        from magnet.sampling.live import LiveSession

        cfg = SamplingConfig.for_task("motion_control_live", sampling_num=int(num_samples), driven=tuple(driven),
                                      **overrides)
        return LiveSession(self, context, cfg, seed=seed, noise=noise, joints=joints)

    # ------------------------------------------------------------------------------------------ ground truth

    def _gt_source(self, gt_norm: Tensor, plan: Plan, cfg: SamplingConfig) -> Callable[[int, int], Tensor | None]:
        """``window(start, window_index) -> [B, Tm, P, W] | None``: the clean ground-truth tokens a window injects
        (rolling tasks: the driven persons and the first context; inbetweening: the keyframes)."""
        f, tm, T = self.frames_per_latent, self.window, plan.total_latent
        task = cfg.task
        if task == "inbetweening":
            keys = self._keyframe_tokens(gt_norm, plan, cfg)
            return lambda ws, w: keys[:, ws:ws + tm]
        if task not in ROLLING_TASKS and task != "pp2joint":
            return lambda ws, w: None
        phase2 = int(plan.meta.get("phase2_window", 1 << 30))
        t_gt = int(plan.meta["gt_latent"])
        if cfg.compat == "reference":
            # the reference encodes the ground truth of T_gt latent frames at once and pads it with zero tokens
            full = self.encode(gt_norm[:, : t_gt * f])
            pad = full.new_zeros(full.shape[0], max(T - t_gt, 0), *full.shape[2:])
            full = torch.cat([full, pad], dim=1)
            return lambda ws, w: None if w >= phase2 else full[:, ws:ws + tm]
        cache: dict[int, Tensor] = {}
        tc = plan.context_latent
        generated = [p for p in range(self.num_persons) if p not in plan.meta.get("driven", [])]

        def window(ws: int, w: int) -> Tensor | None:
            # each window's ground truth encoded from that window's frames only, as in training; the opening
            # context of the generated persons from the context frames alone (never from frames after it)
            if w >= phase2:
                return None
            if ws not in cache:
                tokens = self.encode(gt_norm[:, ws * f:(ws + tm) * f])
                if ws == 0 and tc:
                    ctx = self.encode(gt_norm[:, : tc * f])
                    tokens[:, :tc, generated] = ctx[:, :, generated]
                cache[ws] = tokens
            return cache[ws]

        return window

    def _keyframe_tokens(self, gt_norm: Tensor, plan: Plan, cfg: SamplingConfig) -> Tensor:
        """Clean tokens of the keyframes ``[B, Tz, P, W]`` (zeros elsewhere): each keyframe's 4-frame chunk is
        encoded on its own; the reference takes frames ``[f, f + 4)``, ``compat=fixed`` the latent frame holding
        ``f`` (frames ``4 (f // 4) ...``); the transforms are the ground truth's of that latent frame."""
        f, T = self.frames_per_latent, plan.total_latent
        B = gt_norm.shape[0]
        out = gt_norm.new_zeros(B, T, self.num_persons, self.token_layout.width)
        frames = gt_norm.shape[1]
        whole = gt_norm[:, : min(frames, T * f) // f * f]
        blocks = make_tokens(whole, whole.new_zeros(B, whole.shape[1] // f, self.num_persons,
                                                    self.token_layout.latent_dim), self.packed_layout)
        for key in plan.meta["keyframes"]:
            k = key // f
            first = key if cfg.compat == "reference" else k * f
            chunk = gt_norm[:, first:first + f]
            if chunk.shape[1] < f:  # the reference reads 3 frames past a keyframe at the end: repeat the last
                chunk = torch.cat([chunk, chunk[:, -1:].expand(-1, f - chunk.shape[1], -1, -1)], dim=1)
            token = self.encode(chunk)[:, 0]                                            # [B, P, W]
            token[..., self.token_layout.transforms] = blocks[:, k, :, self.token_layout.transforms]
            out[:, k] = token
        return out

    def _driven_partners(self, gt_win: Tensor, ref: Tensor, driven: list[int]) -> Tensor:
        """``gt_win[S, Tm, P, W]`` with every driven person's partner transforms toward a generated person replaced
        by the inverse of that person's transform toward the driven one in ``ref`` (the latest prediction): the
        ground truth says where the driven person is, not where the generated partner is (``compat=fixed``)."""
        lay, f = self.token_layout, self.frames_per_latent
        S, tm, P, _ = gt_win.shape
        out = gt_win.clone()
        ts = self.tstats
        for g in range(P):
            if g in driven:
                continue
            for d in driven:
                src = ref[:, :, g, lay.partner(_slot(g, d))].reshape(S, tm, f, 9) * ts.partner_std + ts.partner_mean
                inv = (tf9_inverse(src) - ts.partner_mean) / ts.partner_std
                out[:, :, d, lay.partner(_slot(d, g))] = inv.reshape(S, tm, f * 9).to(out.dtype)
        return out

    def _given(self, plan: Plan, cfg: SamplingConfig) -> Tensor:
        """``[T, P]`` bool: tokens that are ground truth (the context, driven persons, keyframes)."""
        T, P = plan.total_latent, self.num_persons
        given = torch.zeros(T, P, dtype=torch.bool, device=self.device)
        if cfg.task == "inbetweening":
            for key in plan.meta["keyframes"]:
                given[key // self.frames_per_latent] = True
            return given
        given[: plan.context_latent] = True
        driven = list(plan.meta.get("driven", []))
        if driven:
            given[: int(plan.meta["gt_latent"]), driven] = True
        return given

    def _after_window(self, cfg: SamplingConfig, plan: Plan, window: int) -> tuple[bool, bool]:
        """``(smooth, post-process)`` after a finished window (spec 4.4: partner prediction and its phase in
        pp2joint do neither; the reference's inbetweening skips the post-processing of its window)."""
        if cfg.task == "partner_prediction":
            return False, False
        if cfg.task == "pp2joint" and window < int(plan.meta["phase2_window"]):
            return False, False
        smooth, post = cfg.use_temporal_smoothing, cfg.is_update_history_transforms
        if cfg.task == "inbetweening" and cfg.compat == "reference":
            post = False
        return smooth and window >= cfg.temporal_smoothing_start_step, post

    # ------------------------------------------------------------------------------------------ rollout

    def _run_plan(self, xs: Tensor, gt_norm: Tensor, plan: Plan, cfg: SamplingConfig,
                  generator: torch.Generator, progress: Callable[[int, int], None] | None) -> tuple[Tensor, Tensor]:
        """Denoise ``xs[S, T, P, W]`` window by window along ``plan`` with the ground truth ``gt_norm[B, Tg, P, D]``
        (B = 1 or S) -> ``(tokens, given[T, P])`` where ``given`` marks ground-truth tokens."""
        S, _, P, _ = xs.shape
        tm, tc = self.window, plan.context_latent
        dev = self.device
        run = _PlanTensors(plan, dev, self.prune_rows)
        guidance = Guidance(self.dfot, self.vqvae, self.token_layout, cfg, gt_norm[:, 0, :, self.packed_layout.betas])
        if cfg.task == "joint" or cfg.task in CHAIN_TASKS:  # the others inject their ground truth per window
            xs[:, :tc] = self.encode(gt_norm[:, : tc * self.frames_per_latent])
        if cfg.task in CHAIN_TASKS:
            tokens = self._run_chains(xs, plan, cfg, run, guidance, generator, progress)
            self.decoder_calls += guidance.decoder_calls
            return tokens, self._given(plan, cfg)
        gt_window = self._gt_source(gt_norm, plan, cfg)
        given = self._given(plan, cfg)
        eps_driven = torch.randn(xs.shape, generator=generator, device=dev) if plan.driven.any() else None
        fixed = cfg.compat == "fixed"
        driven = list(plan.meta.get("driven", []))
        derive = fixed and bool(driven)
        for w, calls in enumerate(plan.window_calls()):
            ws = int(plan.window_start[calls[0]])
            ctx_len = int(plan.context_len[calls[0]])
            win = xs[:, ws:ws + tm].clone()
            gt_win = gt_window(ws, w)
            if gt_win is not None and derive:
                first = run.inject[calls[0]][None, :, :, None]
                start_win = torch.where(first, gt_win, win)  # the window as its first call will see it
                gt_win = self._driven_partners(gt_win.expand(S, -1, -1, -1), _hold_context(start_win, ctx_len),
                                               driven)
            for n in calls:
                if gt_win is not None and run.has_inject[n]:
                    win = torch.where(run.inject[n][None, :, :, None], gt_win, win)
                new, x0 = self._call(win, n, plan, cfg, run, guidance, generator)
                win = torch.where(run.context[n][None, :, :, None], win, new)
                if gt_win is not None:
                    if derive:  # the driven persons' transforms toward the generated ones follow the prediction
                        ref = torch.where(run.keep[n][None, :, :, None], x0, win)
                        gt_win = self._driven_partners(gt_win, ref, driven)
                    if run.has_driven[n]:
                        noised = self.diffusion.q_sample(gt_win.expand_as(win), run.next_levels[n].expand(S, tm, P),
                                                         eps_driven[:, ws:ws + tm])
                        win = torch.where(run.driven[n][None, :, :, None], noised, win)
                    if run.has_inject[n]:
                        win = torch.where(run.inject[n][None, :, :, None], gt_win, win)
                run.tick(progress)
            smooth, post = self._after_window(cfg, plan, w)
            keep = given[ws:ws + tm] if fixed else None
            if smooth:
                win = temporal_smoothing(win, float(cfg.temporal_smoothing_strength), keep)
            if post:
                win = postprocess_transforms(win, self.token_layout, self.tstats, ctx_len,
                                             cfg.root_transform_mode == "temporal", cfg.compat, keep)
            xs[:, ws:ws + tm] = win
        self.decoder_calls += guidance.decoder_calls
        if cfg.task in ROLLING_TASKS:
            t_gt = int(plan.meta["gt_latent"])
            return xs[:, :t_gt], given[:t_gt]
        return xs, given

    def _call(self, win: Tensor, n: int, plan: Plan, cfg: SamplingConfig, run: _PlanTensors, guidance: Guidance,
              generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Network call ``n`` of the plan on the window ``win`` -> ``(stepped window (not yet masked), x0)``."""
        S, tm, P, _ = win.shape
        lv = run.levels[n].expand(S, tm, P)
        nx = run.next_levels[n].expand(S, tm, P)
        if cfg.compat == "fixed":
            cfg_ctx, ratio = run.context[n], float(plan.step[n]) / run.total_steps
        else:  # the reference: the first context_len latent frames; progress counts network calls
            cfg_ctx, ratio = run.positions < int(plan.context_len[n]), float(n) / run.total_steps
        return self._step(win, lv, nx, cfg_ctx, ratio, cfg, guidance, generator, run.rows(n), int(plan.step[n]))

    def _run_chains(self, xs: Tensor, plan: Plan, cfg: SamplingConfig, run: _PlanTensors, guidance: Guidance,
                    generator: torch.Generator, progress: Callable[[int, int], None] | None) -> Tensor:
        """The two-chain tasks (spec 4.4): chains A (the output) and B start from the same context; see
        :func:`magnet.sampling.plans.chain_plan` for what each call does."""
        tm = self.window
        xa = xs
        xb = torch.randn(xs.shape, generator=generator, device=self.device)
        xb[:, : plan.context_latent] = xs[:, : plan.context_latent]
        turn = cfg.task == "agentic_turn_taking"
        n = 0
        while n < plan.num_calls:
            ws = int(plan.window_start[n])
            ids = [n]
            while n + len(ids) < plan.num_calls and plan.step[n + len(ids)] == plan.step[n]:
                ids.append(n + len(ids))
            wa, wb = xa[:, ws:ws + tm], xb[:, ws:ws + tm]
            S, _, P, W = wa.shape
            if turn:
                na, nb = ids
                new_a, _ = self._call(wa, na, plan, cfg, run, guidance, generator)
                wa.copy_(torch.where(run.context[na][None, :, :, None], wa, new_a))
                p = int(plan.pointer[na])
                fa, fb = wa.reshape(S, tm * P, W), wb.reshape(S, tm * P, W)
                if p >= 0:
                    fb[:, p] = fa[:, p]
                new_b, _ = self._call(wb, nb, plan, cfg, run, guidance, generator)
                wb.copy_(torch.where(run.context[nb][None, :, :, None], wb, new_b))
                q = int(plan.pointer[nb])
                if 0 <= q < tm * P:
                    fa[:, q] = fb[:, q]
            else:
                na, nb = ids[0], ids[1]
                new_a, _ = self._call(wa, na, plan, cfg, run, guidance, generator)
                new_b, _ = self._call(wb, nb, plan, cfg, run, guidance, generator)
                ctx = run.context[na][None, :, :, None]
                wa.copy_(torch.where(ctx, wa, new_a))
                wb.copy_(torch.where(ctx, wb, new_b))
                # each chain adopts the other's clean tokens of its own person (A: person 1, B: person 0)
                wa[:, :, 1] = torch.where(ctx[:, :, 1], wb[:, :, 1], new_a[:, :, 1])
                wb[:, :, 0] = torch.where(ctx[:, :, 0], wa[:, :, 0], new_b[:, :, 0])
                if len(ids) > 2:  # the reference's third call on B, whose result it discards
                    self._call(wb, ids[2], plan, cfg, run, guidance, generator)
            run.tick(progress)
            n += len(ids)
        return xa

    def _known_frames(self, plan: Plan, cfg: SamplingConfig, T: int, gt_frames: int) -> tuple[Tensor, Tensor]:
        """``(known, copy)`` ``[min(T, Tg), P]`` bool for ``compat=fixed``: ``copy`` = frames output as the ground
        truth (driven persons over the ground-truth span, keyframes), ``known`` = ``copy`` plus the context frames
        (ground-truth roots)."""
        n, P, f = min(T, gt_frames), self.num_persons, self.frames_per_latent
        copy = torch.zeros(n, P, dtype=torch.bool, device=self.device)
        known = torch.zeros(n, P, dtype=torch.bool, device=self.device)
        if cfg.task == "inbetweening":
            for key in plan.meta["keyframes"]:
                if key < n:
                    copy[key] = True
        else:
            known[: cfg.context_seq_len] = True
            driven = list(plan.meta.get("driven", []))
            if driven:
                copy[: int(plan.meta["gt_latent"]) * f, driven] = True
        return known | copy, copy

    @torch.no_grad()
    def _reference_keyframe_decode(self, value: Tensor, tokens: Tensor, gt_norm: Tensor, plan: Plan,
                                   cfg: SamplingConfig, betas_norm: Tensor) -> Tensor:
        """The reference's inbetweening: frames ``[f, f + 4)`` of each keyframe that fits are replaced by the
        decoding (without snapping) of the keyframe's own latent."""
        f, T = self.frames_per_latent, value.shape[1]
        S, _, P, _ = tokens.shape
        keys = self._keyframe_tokens(gt_norm, plan, cfg)
        out = value.clone()
        for key in plan.meta["keyframes"]:
            if key + f > T:
                continue
            k = key // f
            z = keys[:, k:k + 1, :, self.token_layout.pose_latent].expand(S, -1, -1, -1)
            delta = tokens[:, k:k + 1, :, self.token_layout.delta]
            cond = torch.cat([betas_norm.to(tokens)[:, None].expand(S, 1, P, -1), delta], dim=-1)
            dec = unfold_persons(self.vqvae.decode_wo_quantize(fold_persons(z).contiguous(), fold_persons(cond)), P)
            out[:, key:key + f] = dec
        return out

    def _finish(self, tokens: Tensor, given: Tensor | None, gt_norm: Tensor, plan: Plan, cfg: SamplingConfig,
                joints: bool, calls: int, roots: bool = True, gt_raw: Tensor | None = None) -> Samples:
        """Decode, assemble packed motion, reconstruct the world roots (``roots=False``: the caller places it)."""
        S, tz, P, _ = tokens.shape
        lay = self.packed_layout
        f = self.frames_per_latent
        T = tz * f
        fixed = cfg.compat == "fixed"
        betas_norm = gt_norm[:, 0, :, lay.betas]                                       # [B, P, 10]
        value = self.decode(tokens, betas_norm)                                        # [S, T, P, 135]
        if cfg.task == "inbetweening" and not fixed:
            value = self._reference_keyframe_decode(value, tokens, gt_norm, plan, cfg, betas_norm)
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
        gt_raw = self.stats.denormalise(gt_norm) if gt_raw is None else gt_raw.to(gt_norm.dtype)
        gt_canon = gt_raw[..., lay.world_canon]
        gt_root = gt_raw[..., lay.world_root]
        partners = motion[..., lay.partners].reshape(S, T, P, P - 1, 9)
        context = cfg.context_seq_len
        if not roots:
            return Samples(motion=motion, world_root=motion[..., lay.world_root], joints=None, tokens=tokens,
                           gt=gt_raw, plan=plan, context_frames=context, network_calls=calls, config=cfg)
        if fixed:
            known, copy = self._known_frames(plan, cfg, T, int(gt_raw.shape[1]))
            anchor = min(plan.meta.get("driven", [0]) or [0])
            C, root = reconstruct_roots_fixed(motion[..., lay.delta], motion[..., lay.canon_root], partners,
                                              gt_canon, gt_root, known, cfg.root_transform_mode, anchor,
                                              keyframes=cfg.task == "inbetweening")
        else:
            t0 = context if context > 0 else f  # the reference's inference uses 4 frames when the context is 0
            C, root = reconstruct_roots_reference(motion[..., lay.delta], motion[..., lay.canon_root], gt_canon,
                                                  gt_root, t0)
        motion[..., lay.world_canon] = C
        motion[..., lay.world_root] = root
        if fixed and bool(copy.any()):  # the given ground truth (driven persons, keyframes) is output as given
            n = copy.shape[0]
            motion[:, :n] = torch.where(copy[None, :, :, None], gt_raw[:, :n].to(motion.dtype), motion[:, :n])
            root = motion[..., lay.world_root]
        world = world_joints(motion, self.body_model) if joints else None
        ctx_frames = 0 if cfg.task == "inbetweening" and fixed else context
        return Samples(motion=motion, world_root=root, joints=world, tokens=tokens, gt=gt_raw, plan=plan,
                       context_frames=ctx_frames, network_calls=calls, config=cfg)


def _slot(i: int, j: int) -> int:
    """Index of person ``j`` among person ``i``'s partners (ascending, self skipped)."""
    return j if j < i else j - 1


def _hold_context(win: Tensor, ctx_len: int) -> Tensor:
    """``win[S, Tm, P, W]`` with every latent frame from ``ctx_len`` on replaced by the last context frame: the best
    guess of the generated persons' transforms before the first prediction."""
    if not 0 < ctx_len < win.shape[1]:
        return win
    out = win.clone()
    out[:, ctx_len:] = win[:, ctx_len - 1:ctx_len]
    return out


class _PlanTensors:
    """A plan's per-call arrays as tensors on the sampler's device, and the step counter for progress."""

    def __init__(self, plan: Plan, device: torch.device, prune_rows: bool):
        self.levels = torch.as_tensor(plan.levels, dtype=torch.long, device=device)
        self.next_levels = torch.as_tensor(plan.next_levels, dtype=torch.long, device=device)
        self.context = torch.as_tensor(plan.context, device=device)
        self.inject = torch.as_tensor(plan.inject, device=device)
        self.driven = torch.as_tensor(plan.driven, device=device)
        self.has_inject = plan.inject.reshape(plan.num_calls, -1).any(axis=1).tolist()
        self.has_driven = plan.driven.reshape(plan.num_calls, -1).any(axis=1).tolist()
        # tokens whose value a step keeps: not context, level changes, not overwritten by ground truth after it
        self.keep = ~self.context & (self.levels != self.next_levels) & ~self.driven & ~self.inject
        self.prune = prune_rows
        self.total_steps = max(plan.num_steps, 1)
        tm, P = plan.window, plan.num_persons
        self.positions = torch.arange(tm, device=device)[:, None].expand(tm, P)
        self.done = 0

    def rows(self, n: int) -> Tensor | None:
        return torch.nonzero(self.keep[n].flatten()).flatten() if self.prune else None

    def tick(self, progress: Callable[[int, int], None] | None) -> None:
        """One denoising step done."""
        self.done += 1
        if progress is not None:
            progress(self.done, self.total_steps)

