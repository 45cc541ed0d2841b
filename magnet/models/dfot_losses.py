"""DFoT training losses (reference spec 3.4 step 5).

All terms are smooth-L1 (beta = 1) reduced to one value per token ``[B, Tz, P]``, weighted by the token valid mask
and divided by the sum of the weights:

* ``latent``: mean over the pose-latent dims (weight 1);
* ``delta``: mean over the 4 x 9 normalised deltas (weight 1);
* ``partners``: mean over the partner blocks (weight 1);
* ``consistency_trans`` / ``consistency_rot`` (weight 0.1 each x warm-up ``clamp(step / warmup_steps, 0, 1)``):
  on DENORMALISED predicted per-frame transforms, ``S'_ij(t) = D_i(t)^-1 S_ij(t-1) D_j(t)`` must match
  ``S_ij(t)``; translation by smooth-L1 (mean over xyz), rotation by the chordal ``1 - (tr(R'^T R) - 1) / 2``;
  frame 0 counts 0 and each latent group is the sum over its frames divided by the number of contributing frames
  (3 for the first group, 4 after).

Partner slots toward an invalid partner (void person or padding) are excluded from the partner and consistency
terms (our fix); ``reference_partner_targets=True`` keeps them, as the reference does, training those slots
toward zero (the normalised mean). With the fix a frame whose previous frame lies in an invalid token does not
contribute to the consistency terms either. With P <= 1 only ``latent`` and ``delta`` exist.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from magnet.errors import DataError
from magnet.geometry import rot6d_to_matrix
from magnet.models.tokens import TokenLayout, token_blocks_to_transforms, unpack_tokens
from magnet.representation import MotionStats, PackedLayout

__all__ = ["DFoTLoss", "consistency_terms", "partner_index", "partner_valid_mask", "weighted_mean"]


def partner_index(num_persons: int) -> Tensor:
    """``[P, P-1]`` long: the person index of partner slot j of person i (ascending, self skipped)."""
    idx = [[j for j in range(num_persons) if j != i] for i in range(num_persons)]
    return torch.tensor(idx, dtype=torch.long).reshape(num_persons, max(num_persons - 1, 0))


def partner_valid_mask(valid: Tensor) -> Tensor:
    """``valid[..., P]`` -> ``[..., P, P-1]``: person i valid and its partner in slot j valid."""
    p = valid.shape[-1]
    idx = partner_index(p).to(valid.device)
    return valid[..., :, None] & valid[..., idx]


def weighted_mean(values: Tensor, weights: Tensor) -> Tensor:
    """``sum(values * weights) / sum(weights)`` (0 when every weight is 0)."""
    w = weights.to(values.dtype)
    return (values * w).sum() / w.sum().clamp_min(1e-8)


def _chordal(Ra: Tensor, Rb: Tensor) -> Tensor:
    """``1 - (tr(Ra^T Rb) - 1) / 2`` = ``1 - cos(angle)``, ``[..., 3, 3]`` -> ``[...]``."""
    return 1.0 - ((Ra * Rb).sum(dim=(-1, -2)) - 1.0) / 2.0


def consistency_terms(delta: Tensor, partners: Tensor) -> tuple[Tensor, Tensor]:
    """Per-frame, per-slot consistency errors of denormalised transforms.

    ``delta[B, T, P, 9]``, ``partners[B, T, P, P-1, 9]`` -> ``(trans[B, T, P, P-1], rot[B, T, P, P-1])``:
    translation smooth-L1 (mean over xyz) and chordal rotation error between ``D_i(t)^-1 S_ij(t-1) D_j(t)`` and
    ``S_ij(t)``. Frame 0 is 0.
    """
    b, p = delta.shape[0], delta.shape[2]
    idx = partner_index(p).to(delta.device)
    dR, dt = rot6d_to_matrix(delta[..., :6]), delta[..., 6:9]          # [B,T,P,3,3], [B,T,P,3]
    sR, st = rot6d_to_matrix(partners[..., :6]), partners[..., 6:9]    # [B,T,P,P-1,3,3], [...,3]
    # D_i(t)^-1 = (R^T, -R^T t)
    diR = dR[:, 1:].transpose(-1, -2)[:, :, :, None]                   # [B,T-1,P,1,3,3]
    dit = -(diR @ dt[:, 1:, :, None, :, None])[..., 0]                # [B,T-1,P,1,3]
    djR, djt = dR[:, 1:][:, :, idx], dt[:, 1:][:, :, idx]              # [B,T-1,P,P-1,...]
    pR, pt = sR[:, :-1], st[:, :-1]
    # S'(t) = Dinv . S(t-1) . Dj
    aR = diR @ pR
    at = (diR @ pt[..., None])[..., 0] + dit
    cR = aR @ djR
    ct = (aR @ djt[..., None])[..., 0] + at
    trans = F.smooth_l1_loss(ct, st[:, 1:], reduction="none", beta=1.0).mean(-1)
    rot = _chordal(cR, sR[:, 1:])
    zero = trans.new_zeros(b, 1, p, p - 1)
    return torch.cat([zero, trans], 1), torch.cat([zero, rot], 1)


class DFoTLoss(nn.Module):
    """The DFoT training loss for tokens of ``token_layout``.

    ``stats`` (a :class:`magnet.representation.MotionStats`) denormalises the predicted transforms for the
    consistency terms; None means the transforms are already in metric units (mean 0, std 1).
    ``forward(pred[B, Tz, P, W], target[B, Tz, P, W], valid[B, Tz, P], step=0) -> dict`` of scalar terms
    (``latent``, ``delta``, and for P > 1 ``partners``, ``consistency_trans``, ``consistency_rot``) plus the
    weighted sum ``loss`` and the ``consistency_warmup`` factor used.
    """

    def __init__(self, token_layout: TokenLayout, stats: MotionStats | None = None, *,
                 latent_weight: float = 1.0, delta_weight: float = 1.0, partner_weight: float = 1.0,
                 consistency_weight: float = 0.1,
                 warmup_steps: int = 1000, reference_partner_targets: bool = False):
        super().__init__()
        self.layout = token_layout
        self.latent_weight, self.delta_weight = float(latent_weight), float(delta_weight)
        self.partner_weight, self.consistency_weight = float(partner_weight), float(consistency_weight)
        self.warmup_steps = int(warmup_steps)
        self.reference_partner_targets = bool(reference_partner_targets)
        p = token_layout.num_persons
        dm, ds = torch.zeros(9, dtype=torch.float64), torch.ones(9, dtype=torch.float64)
        pm, ps = dm.clone(), ds.clone()
        if stats is not None:
            lay = PackedLayout(p)
            dm = torch.as_tensor(stats.mean[lay.delta], dtype=torch.float64)
            ds = torch.as_tensor(stats.std[lay.delta], dtype=torch.float64)
            if p > 1:
                if not stats.has_partner_stats:
                    raise DataError(f"mean/std {stats.source} has no partner statistics but the DFoT has {p} "
                                    "persons; recompute the stats on multi-person training data")
                sl = slice(lay.partners.start, lay.partners.start + 9)
                pm = torch.as_tensor(stats.mean[sl], dtype=torch.float64)
                ps = torch.as_tensor(stats.std[sl], dtype=torch.float64)
        for name, v in (("delta_mean", dm), ("delta_std", ds), ("partner_mean", pm), ("partner_std", ps)):
            self.register_buffer(name, v, persistent=False)

    def warmup(self, step: int) -> float:
        """Consistency warm-up factor ``clamp(step / warmup_steps, 0, 1)`` (1 when warmup_steps is 0)."""
        if self.warmup_steps <= 0:
            return 1.0
        return min(max(float(step) / self.warmup_steps, 0.0), 1.0)

    def forward(self, pred: Tensor, target: Tensor, valid: Tensor, step: int = 0,
                token_weight: Tensor | None = None) -> dict[str, Tensor]:
        """See the class docstring; ``token_weight[B, Tz, P]`` (e.g. min-SNR) scales every per-token value but
        not the normaliser (the sum of the valid mask)."""
        lay = self.layout
        if pred.shape != target.shape or pred.dim() != 4 or tuple(valid.shape) != tuple(pred.shape[:3]):
            raise DataError(f"DFoT loss: pred {tuple(pred.shape)}, target {tuple(target.shape)} must be "
                            f"[B, Tz, P, W] and valid {tuple(valid.shape)} [B, Tz, P]")
        valid = valid.bool()
        P = pred.shape[2]
        pp, tp = unpack_tokens(pred, lay), unpack_tokens(target, lay)
        wt = valid.to(pred.dtype)
        tw = torch.ones_like(wt) if token_weight is None else token_weight.to(pred.dtype).expand_as(wt)
        out: dict[str, Tensor] = {}

        def sl1(a: Tensor, b: Tensor) -> Tensor:
            return F.smooth_l1_loss(a, b.to(a.dtype), reduction="none", beta=1.0)

        out["latent"] = weighted_mean(sl1(pp["pose_latent"], tp["pose_latent"]).mean(-1) * tw, wt)
        out["delta"] = weighted_mean(sl1(pp["delta"], tp["delta"]).mean(-1) * tw, wt)
        total = self.latent_weight * out["latent"] + self.delta_weight * out["delta"]
        if P > 1:
            b, tz = pred.shape[:2]
            slot_w = (valid[..., None].expand(b, tz, P, P - 1) if self.reference_partner_targets
                      else partner_valid_mask(valid)).to(pred.dtype)                       # [B,Tz,P,P-1]
            sp = sl1(pp["partners"], tp["partners"]).reshape(b, tz, P, P - 1, lay.block_dim).mean(-1)
            out["partners"] = weighted_mean(sp * tw[..., None], slot_w)
            trans, rot = self._consistency(pp["delta"], pp["partners"], slot_w)
            out["consistency_trans"] = weighted_mean(trans * tw[..., None], slot_w)
            out["consistency_rot"] = weighted_mean(rot * tw[..., None], slot_w)
            warm = self.warmup(step)
            out["consistency_warmup"] = pred.new_tensor(warm)
            total = (total + self.partner_weight * out["partners"]
                     + self.consistency_weight * warm * (out["consistency_trans"] + out["consistency_rot"]))
        out["loss"] = total
        return out

    def _consistency(self, delta_blocks: Tensor, partner_blocks: Tensor, slot_w: Tensor) -> tuple[Tensor, Tensor]:
        """Per latent group and slot ``[B, Tz, P, P-1]`` consistency errors of the predicted token blocks."""
        f = self.layout.frames_per_latent
        d, s = token_blocks_to_transforms(delta_blocks, partner_blocks, f)   # [B,T,P,9], [B,T,P,P-1,9]
        d = d * self.delta_std.to(d.dtype) + self.delta_mean.to(d.dtype)
        s = s * self.partner_std.to(s.dtype) + self.partner_mean.to(s.dtype)
        trans, rot = consistency_terms(d, s)                                   # [B,T,P,P-1]
        b, t, p, q = trans.shape
        tz = t // f
        frame_ok = torch.ones(b, t, p, q, dtype=trans.dtype, device=trans.device)
        if not self.reference_partner_targets:
            # the first frame of a group looks back into the previous token, which must be valid too
            prev = torch.cat([slot_w[:, :1], slot_w[:, :-1]], 1).repeat_interleave(f, 1)
            first = (torch.arange(t, device=trans.device) % f == 0)[None, :, None, None]
            frame_ok = torch.where(first, prev, frame_ok)
        frame_ok[:, 0] = 0.0
        count = frame_ok.reshape(b, tz, f, p, q).sum(2).clamp_min(1.0)

        def group(x: Tensor) -> Tensor:
            return (x * frame_ok).reshape(b, tz, f, p, q).sum(2) / count

        return group(trans), group(rot)
