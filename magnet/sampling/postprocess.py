"""What the sampler does to finished windows and to the final tokens (reference spec 4.6-4.8).

* :func:`temporal_smoothing`: Laplacian smoothing of a window's interior latent frames (4.6);
* :func:`postprocess_transforms`: ``ty = 0`` and re-orthonormalised rotations in every delta / partner transform,
  plus, in ``temporal`` root mode, partner transforms rewritten from the chained deltas (4.7);
* :func:`reconstruct_roots_reference` / :func:`reconstruct_roots_fixed`: world canonical frames and root poses of
  generated motion (4.8).

Tokens are ``[S, Tm, P, W]`` (normalised transforms); per-frame transforms ``[S, T, P, 9]`` (denormalised).
``compat="reference"`` reproduces the reference, ``"fixed"`` fixes its defects (see each function).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from magnet.geometry import (
    matrix_to_rot6d,
    rot6d_to_matrix,
    tf9_compose,
    tf9_identity,
    tf9_inverse,
    yaw_matrix,
)
from magnet.models.tokens import TF_DIM, TokenLayout, token_blocks_to_transforms
from magnet.representation import PackedLayout

__all__ = [
    "TransformStats",
    "postprocess_transforms",
    "reconstruct_roots_fixed",
    "reconstruct_roots_reference",
    "temporal_smoothing",
]


class TransformStats:
    """Mean/std of the delta and partner 9D transforms (entries 316..324 and 352..360 of the 361 stats)."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, device=None, dtype=torch.float32):
        lay = PackedLayout(1)
        self.delta_mean = torch.as_tensor(mean[lay.delta], dtype=dtype, device=device)
        self.delta_std = torch.as_tensor(std[lay.delta], dtype=dtype, device=device)
        self.partner_mean = torch.as_tensor(mean[352:361], dtype=dtype, device=device)
        self.partner_std = torch.as_tensor(std[352:361], dtype=dtype, device=device)


def temporal_smoothing(tokens: Tensor, strength: float, keep: Tensor | None = None) -> Tensor:
    """``x_t <- x_t - s (x_t - (x_{t-1} + x_{t+1}) / 2)`` on every interior latent frame of ``tokens[S, Tm, P, W]``
    (Jacobi: old values on the right), every token dim. ``keep[Tm, P]`` (bool): tokens left as they are
    (``compat=fixed`` keeps ground-truth tokens; the reference smooths the whole window)."""
    if tokens.shape[1] < 3 or strength == 0:
        return tokens
    out = tokens.clone()
    mid = tokens[:, 1:-1]
    out[:, 1:-1] = mid - strength * (mid - 0.5 * (tokens[:, :-2] + tokens[:, 2:]))
    if keep is not None and bool(keep.any()):
        out = torch.where(keep[None, :, :, None], tokens, out)
    return out


def _orthonormalise(x: Tensor) -> Tensor:
    """``ty = 0`` and Gram-Schmidt on the 6D part of 9D transforms ``[..., 9]``."""
    r6 = matrix_to_rot6d(rot6d_to_matrix(x[..., :6]))
    t = x[..., 6:9].clone()
    t[..., 1] = 0.0
    return torch.cat([r6, t], dim=-1)


def postprocess_transforms(tokens: Tensor, layout: TokenLayout, stats: TransformStats, context_len: int,
                           temporal: bool, compat: str = "fixed", keep: Tensor | None = None) -> Tensor:
    """The reference's ``_postprocess_transforms`` on a finished window ``tokens[S, Tm, P, W]`` (spec 4.7).

    Every delta and partner transform gets ``ty = 0`` and a re-orthonormalised rotation. With ``temporal`` (root
    mode ``temporal``) and P > 1 the partner transforms after the context are rewritten from the chained deltas:
    person 0 is anchored at the identity and partner j at its transform to person 0 at the end of the context,
    every person's canonical frame is chained with its deltas, and ``SP_ij = C_i^-1 C_j``.

    ``compat="reference"``: the anchor is sub-frame 0 of token ``context_len - 1``; token ``context_len`` keeps the
    anchor and later tokens chain only their sub-frame-0 delta (1 of 4); only sub-frame 0 of the partner slots of
    tokens ``>= context_len`` is rewritten; the whole window is processed. ``compat="fixed"``: the anchor is the
    last frame of the context, every frame's delta is chained and every frame after the context rewritten;
    ``keep[Tm, P]`` tokens (ground truth) are left as they are.
    """
    S, tm, P, _ = tokens.shape
    f = layout.frames_per_latent
    delta_n, partners_n = token_blocks_to_transforms(tokens[..., layout.delta], tokens[..., layout.partners], f)
    delta = delta_n * stats.delta_std + stats.delta_mean                       # [S, T, P, 9]
    partners = partners_n * stats.partner_std + stats.partner_mean             # [S, T, P, P-1, 9]
    delta = _orthonormalise(delta)
    partners = _orthonormalise(partners)
    if temporal and P > 1:
        partners = _rewrite_partners(delta, partners, int(context_len), compat, f)
    delta_n = (delta - stats.delta_mean) / stats.delta_std
    partners_n = (partners - stats.partner_mean) / stats.partner_std
    # back into per-latent blocks (frame-major deltas; partner-major, then frame-major partners)
    d_blk = delta_n.reshape(S, tm, f, P, TF_DIM).transpose(2, 3).reshape(S, tm, P, f * TF_DIM)
    p_blk = partners_n.reshape(S, tm, f, P, P - 1, TF_DIM).permute(0, 1, 3, 4, 2, 5).reshape(
        S, tm, P, (P - 1) * f * TF_DIM)
    out = tokens.clone()
    out[..., layout.delta] = d_blk.to(tokens.dtype)
    out[..., layout.partners] = p_blk.to(tokens.dtype)
    if keep is not None and bool(keep.any()):
        out = torch.where(keep[None, :, :, None], tokens, out)
    return out


def _partner_slot(i: int, j: int) -> int:
    """Index of person ``j`` among person ``i``'s partners (ascending, self skipped)."""
    return j if j < i else j - 1


def _rewrite_partners(delta: Tensor, partners: Tensor, c: int, compat: str, f: int) -> Tensor:
    """Partner transforms from chained canonical frames (see :func:`postprocess_transforms`)."""
    S, T, P, _ = delta.shape
    out = partners.clone()
    if compat == "reference":
        tm = T // f
        tok = np.arange(tm)
        anchor_tok = tok[c - 1]                       # Python indexing, as the reference (c = 0 wraps around)
        rewrite = tok[slice(c, None)]
        first = int(rewrite[0]) if rewrite.size else tm
        frames = [int(k) * f for k in rewrite]
        anchor_frame = int(anchor_tok) * f
        C = [tf9_identity((S,), dtype=delta.dtype, device=delta.device)]
        C += [partners[:, anchor_frame, 0, _partner_slot(0, j)] for j in range(1, P)]
        chain = {}
        for k in range(first, tm):
            if k > first:
                C = [tf9_compose(C[i], delta[:, k * f, i]) for i in range(P)]
            chain[k] = C
        for fr in frames:
            Ck = chain[fr // f]
            for i in range(P):
                for j in range(P):
                    if i != j:
                        out[:, fr, i, _partner_slot(i, j)] = tf9_compose(tf9_inverse(Ck[i]), Ck[j])
        return out
    start = max(c, 1) * f                             # first frame after the context (at least one frame of it)
    anchor = start - 1
    C = [tf9_identity((S,), dtype=delta.dtype, device=delta.device)]
    C += [partners[:, anchor, 0, _partner_slot(0, j)] for j in range(1, P)]
    for fr in range(start, T):
        C = [tf9_compose(C[i], delta[:, fr, i]) for i in range(P)]
        for i in range(P):
            for j in range(P):
                if i != j:
                    out[:, fr, i, _partner_slot(i, j)] = tf9_compose(tf9_inverse(C[i]), C[j])
    return out


def reconstruct_roots_reference(delta: Tensor, canon_root: Tensor, gt_world_canon: Tensor, gt_world_root: Tensor,
                                context_frames: int) -> tuple[Tensor, Tensor]:
    """World canonical frames and roots as the reference's inference computes them (spec 4.8), whatever the root
    mode: every person integrates its own deltas from the ground-truth canonical frame AT frame
    ``context_frames`` (the delta of that frame is ignored); frames before it take the ground-truth root.

    ``delta``, ``canon_root`` ``[S, T, P, 9]`` generated (denormalised); ``gt_world_canon``, ``gt_world_root``
    ``[B, Tg, P, 9]`` (B = 1 or S, ``Tg > context_frames``) -> ``(C[S, T, P, 9], root[S, T, P, 9])``.
    """
    S, T, P, _ = delta.shape
    t0 = int(context_frames)
    dt = delta.dtype
    C = torch.empty_like(delta)
    cur = gt_world_canon[:, t0].to(dt).expand(S, P, 9)
    C[:, t0] = cur
    for t in range(t0 + 1, T):
        cur = tf9_compose(cur, delta[:, t])
        C[:, t] = cur
    root = tf9_compose(C, canon_root)
    n_gt = min(t0, gt_world_root.shape[1], T)
    root[:, :n_gt] = gt_world_root[:, :n_gt].to(dt)
    C[:, :n_gt] = gt_world_canon[:, :n_gt].to(dt)
    return C, root


def _planar_fraction(E: Tensor, s: float) -> Tensor:
    """A fraction ``s`` of the planar (yaw + x/z translation) transform ``E[..., 9]``: yaw ``s theta``, translation
    ``s t``."""
    R, t = rot6d_to_matrix(E[..., :6]), E[..., 6:9]
    theta = torch.atan2(R[..., 0, 2], R[..., 0, 0])
    Rs = yaw_matrix(theta * s).to(E.dtype)
    return torch.cat([Rs[..., :, 0], Rs[..., :, 1], t * s], dim=-1)


def reconstruct_roots_fixed(delta: Tensor, canon_root: Tensor, partners: Tensor, gt_world_canon: Tensor,
                            gt_world_root: Tensor, known: Tensor, mode: str, anchor: int = 0,
                            keyframes: bool = False) -> tuple[Tensor, Tensor]:
    """World canonical frames and roots of generated motion, ``compat=fixed`` (spec 4.8 with its defects fixed).

    ``delta``, ``canon_root`` ``[S, T, P, 9]``, ``partners`` ``[S, T, P, P-1, 9]`` generated (denormalised);
    ``gt_world_canon``, ``gt_world_root`` ``[B, Tg, P, 9]`` (B = 1 or S); ``known[T', P]`` (bool): frames whose
    ground truth is given (the context, driven persons, keyframes; frames from ``min(T', Tg)`` on are unknown). At known frames the canonical
    frame and the root are the ground truth's; elsewhere each person integrates its own deltas from the previous
    frame (``C(t) = C(t-1) Delta(t)``, so the first generated delta is used and no ground truth after the context is
    read). ``mode="temporal_partner"``: a person other than ``anchor`` is placed at ``C_anchor(t) SP(t)`` (the
    predicted transform from the anchor: no drift between persons) wherever it is not known.

    ``keyframes=True`` (inbetweening): every person is integrated from each of its known frames towards the next
    one, and the mismatch at the next known frame is spread linearly (yaw and translation) over the frames
    between, so the trajectory passes every keyframe exactly; before the first known frame it is integrated
    backwards.
    """
    S, T, P, _ = delta.shape
    Tg = gt_world_canon.shape[1]
    dt = delta.dtype
    full = torch.zeros(T, P, dtype=torch.bool, device=delta.device)
    n = min(T, Tg, known.shape[0])
    full[:n] = known[:n]
    known = full
    gtc = gt_world_canon.to(dt)
    C = torch.empty_like(delta)
    if keyframes:
        for p in range(P):
            keys = torch.nonzero(known[:, p]).flatten().tolist()
            if not keys:
                raise ValueError(f"reconstruct_roots_fixed: person {p} has no known frame to start from")
            k0 = keys[0]
            C[:, k0, p] = gtc[:, k0, p].expand(S, 9)
            for t in range(k0 - 1, -1, -1):
                C[:, t, p] = tf9_compose(C[:, t + 1, p], tf9_inverse(delta[:, t + 1, p]))
            for a, b in zip(keys, keys[1:] + [T]):
                C[:, a, p] = gtc[:, a, p].expand(S, 9)
                for t in range(a + 1, min(T, b)):
                    C[:, t, p] = tf9_compose(C[:, t - 1, p], delta[:, t, p])
                if b < T and b > a + 1:
                    fwd_b = tf9_compose(C[:, b - 1, p], delta[:, b, p])
                    err = tf9_compose(tf9_inverse(fwd_b), gtc[:, b, p].expand(S, 9))
                    for t in range(a + 1, b):
                        C[:, t, p] = tf9_compose(C[:, t, p], _planar_fraction(err, (t - a) / (b - a)))
    else:
        if not bool(known[0].all()):
            raise ValueError("reconstruct_roots_fixed: the first frame must be known for every person")
        for t in range(T):
            if t == 0:
                C[:, 0] = gtc[:, 0].expand(S, P, 9)
                continue
            step = tf9_compose(C[:, t - 1], delta[:, t])
            if bool(known[t].any()):
                step = torch.where(known[t][None, :, None], gtc[:, t].expand(S, P, 9), step)
            C[:, t] = step
        if mode == "temporal_partner" and P > 1:
            for j in range(P):
                if j == anchor:
                    continue
                free = ~known[:, j]
                if not bool(free.any()):
                    continue
                placed = tf9_compose(C[:, :, anchor], partners[:, :, anchor, _partner_slot(anchor, j)])
                C[:, :, j] = torch.where(free[None, :, None], placed, C[:, :, j])
    root = tf9_compose(C, canon_root)
    if bool(known.any()):
        n = min(T, Tg)
        root[:, :n] = torch.where(known[:n][None, :, :, None], gt_world_root[:, :n].to(dt).expand(S, -1, -1, -1),
                                  root[:, :n])
    return C, root
