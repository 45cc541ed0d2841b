"""VQ-VAE training losses (reference spec 2.3).

All terms use smooth-L1 (beta = 1). With ``x[N, T, 135]`` = body 6D (0:126) ++ canonical root 9D
(126:132 rotation 6D, 132:135 translation), all normalised:

==================================  ==================================================================  ======
key                                 definition                                                          weight
==================================  ==================================================================  ======
``body_joint_rotations``            smooth-L1 on normalised body 6D                                     0.0
``canonical_root_rotations``        smooth-L1 on normalised root 6D                                     0.0
``canonical_root_translations``     smooth-L1 on normalised root translation                            0.5
``geo_body_joint_rotations``        smooth-L1(theta, 0) on DENORMALISED body 6D -> matrices             1.0
``geo_canonical_root_rotations``    the same on the root rotation                                       0.5
``commit_loss``                     the quantizer's commitment loss                                     0.3
==================================  ==================================================================  ======

theta = arccos(clamp((tr(R_pred^T R_target) - 1) / 2, -1 + 1e-7, 1 - 1e-7)).

Masking: by default every term is the mean over the VALID elements (frames with mask 1). With
``reference_averaging=True`` a term is (loss * mask) averaged over ALL elements, masked ones included, as the
reference does (its loss then shrinks with the share of padding in the batch).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from magnet.errors import ConfigError
from magnet.geometry import rot6d_to_matrix
from magnet.representation import PackedLayout

__all__ = [
    "DEFAULT_LOSS_WEIGHTS",
    "LOSS_KEYS",
    "frame_masked_mean",
    "geodesic_angle_6d",
    "value_mean_std",
    "vqvae_losses",
]

DEFAULT_LOSS_WEIGHTS: dict[str, float] = {
    "body_joint_rotations": 0.0,
    "canonical_root_rotations": 0.0,
    "canonical_root_translations": 0.5,
    "geo_body_joint_rotations": 1.0,
    "geo_canonical_root_rotations": 0.5,
    "commit_loss": 0.3,
}
LOSS_KEYS = tuple(DEFAULT_LOSS_WEIGHTS)

_BODY = slice(0, 126)
_ROOT_ROT = slice(126, 132)
_ROOT_TRANSL = slice(132, 135)
_COS_EPS = 1e-7


def value_mean_std(mean, std) -> tuple[Tensor, Tensor]:
    """The 135 statistics of the VQ-VAE value from the 361-entry mean/std (body 6D ++ canonical root 9D).

    ``mean``, ``std``: arrays or tensors with at least 334 entries (the stats vector, or a packed vector).
    """
    mean = torch.as_tensor(np.asarray(mean) if not isinstance(mean, Tensor) else mean)
    std = torch.as_tensor(np.asarray(std) if not isinstance(std, Tensor) else std)
    layout_body, layout_root = PackedLayout.body_rot, PackedLayout.canon_root
    pick = lambda v: torch.cat([v[..., layout_body], v[..., layout_root]], dim=-1)
    return pick(mean), pick(std)


def geodesic_angle_6d(pred_6d: Tensor, target_6d: Tensor) -> Tensor:
    """Rotation angle ``[...]`` (radians) between two 6D rotations ``[..., 6]``, with the reference's clamp.

    The cosine is clamped to ``[-1 + 1e-7, 1 - 1e-7]`` so the gradient stays finite at theta = 0 and pi.
    """
    r_pred = rot6d_to_matrix(pred_6d)
    r_target = rot6d_to_matrix(target_6d)
    # tr(R_pred^T R_target) = sum of the element-wise product.
    trace = (r_pred * r_target).sum(dim=(-1, -2))
    cos = ((trace - 1.0) * 0.5).clamp(-1.0 + _COS_EPS, 1.0 - _COS_EPS)
    return torch.acos(cos)


def frame_masked_mean(loss: Tensor, mask: Tensor | None, reference_averaging: bool = False) -> Tensor:
    """Mean of ``loss[N, T, ...]`` under a frame mask ``mask[N, T]`` (None = all valid).

    Default: sum over valid frames / number of valid elements. ``reference_averaging``: (loss * mask).mean().
    """
    if mask is None:
        return loss.mean()
    if tuple(mask.shape) != tuple(loss.shape[:2]):
        raise ValueError(f"frame_masked_mean: mask {tuple(mask.shape)} does not match loss {tuple(loss.shape)}")
    m = mask.to(loss.dtype).reshape(*mask.shape, *([1] * (loss.dim() - 2)))
    weighted = loss * m
    if reference_averaging:
        return weighted.mean()
    per_frame = loss[0, 0].numel() if loss.numel() else 1
    return weighted.sum() / (m.sum() * per_frame).clamp_min(1.0)


def _smooth_l1(a: Tensor, b: Tensor) -> Tensor:
    return F.smooth_l1_loss(a, b, reduction="none", beta=1.0)


def vqvae_losses(
    recon: Tensor,
    target: Tensor,
    mask: Tensor | None,
    commit_loss: Tensor | None,
    mean: Tensor,
    std: Tensor,
    weights: Mapping[str, float] | None = None,
    reference_averaging: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """VQ-VAE loss terms and their weighted sum.

    ``recon``, ``target``: normalised values ``[N, T, 135]``; ``mask[N, T]`` (bool or 0/1, None = all valid);
    ``commit_loss``: scalar from the quantizer (None = 0); ``mean``, ``std``: ``[135]`` value statistics
    (:func:`value_mean_std`) for the geodesic terms; ``weights``: overrides of :data:`DEFAULT_LOSS_WEIGHTS`
    (unknown keys raise ConfigError). Returns ``(total, {key: term})`` with every key of ``LOSS_KEYS``.
    """
    w = dict(DEFAULT_LOSS_WEIGHTS)
    if weights is not None:
        unknown = sorted(set(weights) - set(w))
        if unknown:
            raise ConfigError(f"unknown VQ-VAE loss weight keys {unknown}; known keys are {list(LOSS_KEYS)}")
        w.update({k: float(v) for k, v in weights.items()})
    if recon.shape != target.shape or recon.dim() != 3 or recon.shape[-1] != 135:
        raise ValueError(f"vqvae_losses: expected recon and target [N, T, 135], got {tuple(recon.shape)} and "
                         f"{tuple(target.shape)}")
    mean = mean.to(device=recon.device, dtype=recon.dtype)
    std = std.to(device=recon.device, dtype=recon.dtype)
    if mean.shape != (135,) or std.shape != (135,):
        raise ValueError(f"vqvae_losses: mean/std must have shape (135,), got {tuple(mean.shape)}, "
                         f"{tuple(std.shape)}")
    avg = lambda loss: frame_masked_mean(loss, mask, reference_averaging)

    n, t = recon.shape[:2]
    recon_dn = recon * std + mean
    target_dn = target * std + mean
    terms: dict[str, Tensor] = {
        "body_joint_rotations": avg(_smooth_l1(recon[..., _BODY], target[..., _BODY])),
        "canonical_root_rotations": avg(_smooth_l1(recon[..., _ROOT_ROT], target[..., _ROOT_ROT])),
        "canonical_root_translations": avg(_smooth_l1(recon[..., _ROOT_TRANSL], target[..., _ROOT_TRANSL])),
    }
    theta_body = geodesic_angle_6d(recon_dn[..., _BODY].reshape(n, t, 21, 6),
                                   target_dn[..., _BODY].reshape(n, t, 21, 6))
    theta_root = geodesic_angle_6d(recon_dn[..., _ROOT_ROT], target_dn[..., _ROOT_ROT])
    terms["geo_body_joint_rotations"] = avg(_smooth_l1(theta_body, torch.zeros_like(theta_body)))
    terms["geo_canonical_root_rotations"] = avg(_smooth_l1(theta_root, torch.zeros_like(theta_root)))
    terms["commit_loss"] = (commit_loss.to(recon.dtype) if commit_loss is not None
                            else recon.new_zeros(()))

    total = recon.new_zeros(())
    for key, weight in w.items():
        if weight != 0.0:
            total = total + weight * terms[key]
    return total, terms
