"""Guidance for one denoising step (reference spec 4.5): CFG-style composition and x0-space guidance.

**Composition** (``cfg_scale_dict``): the model output is ``sum_key w_key f(x_key)`` where each key masks the
window's input before the network sees it (levels are never changed, weights are used as given):

* ``clean``: the input as it is; ``{clean: 1}`` is exactly one plain network call;
* ``full``: every context token replaced by pure noise; ``subset``: only the first half of the context tokens;
* ``partial``: context tokens ``0.5 noise + 0.5 x``;
* ``personN``: every token of person N pure noise; ``~personN``: every token of every other person pure noise.

Several keys are evaluated in one batched network call. A window without context tokens runs ``clean`` only.

**x0-space guidance**, on the predicted clean tokens, when the step's progress lies in the term's
``[start_ratio, end_ratio]``:

* smoothing: ``L = mean((second difference over frames of the decoded normalised body 6D)^2)``, the gradient taken
  through the VQ-VAE decoder (``decode_wo_quantize``, conditioned on the context's betas and the prediction's own
  deltas) into the pose latent; the transforms' part is analytic: ``(2 / N) (1, -2, 1)``-Laplacian of the
  second difference over latent frames of the normalised delta / partner dims; ``x0 <- x0 - w_s grad``;
* foot skating: ``L = mean((frame difference of the decoded normalised 6D of body joints 7, 8, 10, 11)^2)``,
  pose latent only; ``x0 <- x0 - w_f grad``.

Both gradients are taken at the network's prediction. :meth:`Guidance.guide` computes them with ONE decoder forward
and ONE backward for the input only (the decoder's weights need no gradient); :meth:`Guidance.guide_two_pass` is
the straightforward version (one forward and backward per term, optionally with weight gradients as the reference
computes them) that tests and benchmarks compare against.

Progress: the reference counts network calls (``call / total``), which runs past 1 in the two-chain tasks and
switches guidance off half-way; ``compat=fixed`` counts denoising steps.
"""

from __future__ import annotations

import re
from contextlib import contextmanager

import torch
from torch import Tensor

from magnet.errors import ConfigError
from magnet.models.tokens import TokenLayout
from magnet.models.vqvae import PoseVQVAE, fold_persons

__all__ = ["CFG_KEYS", "FOOT_JOINTS", "Guidance", "parse_cfg_key"]

CFG_KEYS = ("clean", "full", "subset", "partial", "personN", "~personN")
FOOT_JOINTS = (6, 7, 9, 10)
"""Foot-skating joints, indices into the 21 body joints (SMPL-X 7, 8, 10, 11: ankles and feet)."""
PARTIAL_NOISE = 0.5
SUBSET_FRACTION = 0.5
_PERSON = re.compile(r"^(~?)person(\d+)$")


def parse_cfg_key(key: str, num_persons: int | None = None) -> tuple[str, int | None]:
    """``"clean"`` -> ``("clean", None)``; ``"person1"`` -> ``("person", 1)``; ``"~person0"`` -> ``("~person", 0)``."""
    if key in ("clean", "full", "subset", "partial"):
        return key, None
    m = _PERSON.match(key)
    if m is None:
        raise ConfigError(f"cfg_scale_dict key {key!r} unknown; use clean, full, subset, partial, personN or "
                          "~personN")
    n = int(m.group(2))
    if num_persons is not None and not 0 <= n < num_persons:
        raise ConfigError(f"cfg_scale_dict key {key!r}: person {n} out of range for {num_persons} persons")
    return ("~person" if m.group(1) else "person"), n


class Guidance:
    """CFG composition and x0 guidance of one sampling run (see the module docstring).

    ``betas_norm[B, P, 10]`` (B = 1 or S): the normalised betas of the context's first frame (the decoder
    condition).
    """

    def __init__(self, dfot, vqvae: PoseVQVAE, layout: TokenLayout, config, betas_norm: Tensor):
        self.dfot, self.vqvae, self.layout = dfot, vqvae, layout
        self.cfg = config
        self.betas = betas_norm
        self.terms = [(parse_cfg_key(k, layout.num_persons), float(w)) for k, w in config.cfg_scale_dict.items()]
        self.plain = len(self.terms) == 1 and self.terms[0][0][0] == "clean" and self.terms[0][1] == 1.0
        self.decoder_calls = 0

    # ------------------------------------------------------------------------------------------- CFG

    def network(self, x: Tensor, levels: Tensor, context: Tensor, generator: torch.Generator | None,
                rows: Tensor | None = None) -> tuple[Tensor, int]:
        """The composed network output for window ``x[S, Tm, P, W]`` at ``levels[S, Tm, P]``; ``context[Tm, P]``
        (bool) marks the context tokens the masking modes act on; ``rows``: compute only these flat tokens (see
        :meth:`magnet.models.dfot.DFoT.forward`). Returns ``(output, network_calls)``."""
        if self.plain or not bool(context.any()):
            return self.dfot(x, levels, rows), 1
        variants = [self._masked(x, kind, n, context, generator) for (kind, n), _ in self.terms]
        S = x.shape[0]
        out = self.dfot(torch.cat(variants, dim=0), levels.repeat(len(variants), 1, 1), rows)
        total = None
        for i, (_, w) in enumerate(self.terms):
            part = w * out[i * S:(i + 1) * S]
            total = part if total is None else total + part
        return total, 1

    def _masked(self, x: Tensor, kind: str, n: int | None, context: Tensor,
                generator: torch.Generator | None) -> Tensor:
        if kind == "clean":
            return x
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        if kind in ("person", "~person"):
            sel = torch.zeros(x.shape[2], dtype=torch.bool, device=x.device)
            sel[n] = True
            if kind == "~person":
                sel = ~sel
            return torch.where(sel[None, None, :, None], noise, x)
        mask = context
        if kind == "subset":
            flat = mask.flatten().clone()
            idx = torch.nonzero(flat).flatten()
            flat[idx[int(idx.numel() * SUBSET_FRACTION):]] = False
            mask = flat.reshape(mask.shape)
        if kind == "partial":
            return torch.where(mask[None, :, :, None], PARTIAL_NOISE * noise + (1 - PARTIAL_NOISE) * x, x)
        return torch.where(mask[None, :, :, None], noise, x)

    # ----------------------------------------------------------------------------------- x0 guidance

    def active(self, progress: float, step: int = 0) -> tuple[bool, bool]:
        """Whether smoothing / foot-skating guidance run at ``progress`` (inclusive ranges) on denoising step
        ``step`` (only every ``guidance_every``-th step guides)."""
        c = self.cfg
        if step % int(c.guidance_every):
            return False, False
        s = c.use_smoothing_guidance and c.smoothing_guidance_start_ratio <= progress <= c.smoothing_guidance_end_ratio
        f = (c.use_foot_skating_guidance
             and c.foot_skating_guidance_start_ratio <= progress <= c.foot_skating_guidance_end_ratio)
        return bool(s), bool(f)

    def _decode(self, z: Tensor, x0: Tensor) -> Tensor:
        """Normalised body 6D ``[S*P, 4 Tm, 126]`` decoded (without snapping) from latents ``z[S, Tm, P, Dz]``."""
        S, tm, P, _ = z.shape
        betas = self.betas.to(x0).clone()[:, None].expand(S, tm, P, -1)
        dec_cond = fold_persons(torch.cat([betas, x0[..., self.layout.delta]], dim=-1))
        self.decoder_calls += 1
        return self.vqvae.decode_wo_quantize(fold_persons(z), dec_cond)[..., :126]

    @staticmethod
    def smoothing_loss(rot: Tensor) -> Tensor:
        """``mean((r_{t+1} - 2 r_t + r_{t-1})^2)`` over ``rot[N, T, D]``."""
        d2 = rot[:, 2:] - 2 * rot[:, 1:-1] + rot[:, :-2]
        return (d2 ** 2).mean()

    @staticmethod
    def foot_loss(rot: Tensor) -> Tensor:
        """``mean((r_{t+1} - r_t)^2)`` over the 6D of the foot joints of ``rot[N, T, 126]``."""
        n, t, _ = rot.shape
        feet = rot.reshape(n, t, 21, 6)[:, :, list(FOOT_JOINTS)]
        return ((feet[:, 1:] - feet[:, :-1]) ** 2).mean()

    def transform_gradient(self, x0: Tensor) -> Tensor:
        """Analytic gradient of ``mean((second difference over latent frames)^2)`` of the transform dims of
        ``x0[S, Tm, P, W]`` -> ``[S, Tm, P, W - Dz]``."""
        tf = x0[..., self.layout.transforms]
        g = torch.zeros_like(tf)
        if tf.shape[1] < 3:
            return g
        d2 = tf[:, 2:] - 2 * tf[:, 1:-1] + tf[:, :-2]
        g[:, :-2] += d2
        g[:, 1:-1] -= 2 * d2
        g[:, 2:] += d2
        return g * (2.0 / d2.numel())

    def guide(self, x0: Tensor, progress: float, step: int = 0) -> Tensor:
        """x0 guidance with one decoder forward and one input-only backward (both terms at ``x0``)."""
        smooth, foot = self.active(progress, step)
        if not (smooth or foot):
            return x0
        c, lay = self.cfg, self.layout
        # gradients even when the caller runs under inference mode (Lightning's validation): plain copies first
        with torch.inference_mode(False), torch.enable_grad():
            x0c = x0.detach().clone()
            z = x0c[..., lay.pose_latent].detach().requires_grad_(True)
            rot = self._decode(z, x0c)
            loss = 0.0
            if smooth:
                loss = loss + c.smoothing_guidance_weight * self.smoothing_loss(rot)
            if foot:
                loss = loss + c.foot_skating_guidance_weight * self.foot_loss(rot)
            (grad,) = torch.autograd.grad(loss, z)
        out = x0.clone()
        out[..., lay.pose_latent] = x0[..., lay.pose_latent] - grad
        if smooth:
            out[..., lay.transforms] = x0[..., lay.transforms] - c.smoothing_guidance_weight * self.transform_gradient(x0)
        return out

    def guide_two_pass(self, x0: Tensor, progress: float, weight_grads: bool = False, step: int = 0) -> Tensor:
        """The straightforward version of :meth:`guide`: one decoder forward and backward per term (with the
        decoder's weight gradients too when ``weight_grads``, as the reference computes them)."""
        smooth, foot = self.active(progress, step)
        c, lay = self.cfg, self.layout
        out = x0.clone()
        with torch.inference_mode(False), torch.enable_grad(), _weights_trainable(self.vqvae, weight_grads):
            x0c = x0.detach().clone()
            for on, weight, fn in ((smooth, c.smoothing_guidance_weight, self.smoothing_loss),
                                   (foot, c.foot_skating_guidance_weight, self.foot_loss)):
                if not on:
                    continue
                z = x0c[..., lay.pose_latent].detach().requires_grad_(True)
                loss = fn(self._decode(z, x0c))
                loss.backward()
                out[..., lay.pose_latent] = out[..., lay.pose_latent] - weight * z.grad
                if weight_grads:
                    self.vqvae.zero_grad(set_to_none=True)
        if smooth:
            out[..., lay.transforms] = out[..., lay.transforms] - c.smoothing_guidance_weight * self.transform_gradient(x0)
        return out


@contextmanager
def _weights_trainable(module: torch.nn.Module, on: bool):
    if not on:
        yield
        return
    saved = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p, r in zip(module.parameters(), saved):
            p.requires_grad_(r)
        module.zero_grad(set_to_none=True)
