"""VQ-VAE losses: hand-computed values, masking (default vs reference averaging), weights, finite gradients."""

from __future__ import annotations

import math

import pytest
import torch

from magnet.errors import ConfigError
from magnet.geometry import axis_angle_to_matrix, matrix_to_rot6d
from magnet.models.losses import (
    DEFAULT_LOSS_WEIGHTS,
    LOSS_KEYS,
    frame_masked_mean,
    geodesic_angle_6d,
    vqvae_losses,
)

D = torch.float64
IDENTITY_THETA = math.acos(1.0 - 1e-7)  # the clamp makes the angle of identical rotations ~4.5e-4, not 0


def _rot6d(axis, angle) -> torch.Tensor:
    aa = torch.tensor(axis, dtype=D) * angle
    return matrix_to_rot6d(axis_angle_to_matrix(aa))


def _smooth_l1(v: float) -> float:
    return 0.5 * v * v if abs(v) < 1.0 else abs(v) - 0.5


def _stats():
    g = torch.Generator().manual_seed(0)
    mean = torch.rand(135, generator=g, dtype=D) - 0.5
    std = torch.rand(135, generator=g, dtype=D) + 0.5
    return mean, std


def _frames(t: int) -> torch.Tensor:
    """Denormalised value [1, t, 135]: identity rotations, root at (0, 0.9, 0)."""
    eye6 = _rot6d([0.0, 0.0, 1.0], 0.0)
    v = torch.cat([eye6.repeat(22), torch.tensor([0.0, 0.9, 0.0], dtype=D)])
    return v.repeat(1, t, 1).clone()


def _setup():
    """Target and prediction (denormalised) over 3 frames with known differences in frames 0 and 1."""
    target = _frames(3)
    pred = target.clone()
    pred[0, 0, 0:6] = _rot6d([0.0, 0.0, 1.0], 0.5)  # body joint 0, frame 0: 0.5 rad
    pred[0, 1, 126:132] = _rot6d([1.0, 0.0, 0.0], 2.0)  # root, frame 1: 2.0 rad
    pred[0, 1, 133] += 0.5  # root translation y, frame 1 (normalised diff 0.5 / std)
    # frame 2 is garbage in the prediction; it is masked out
    pred[0, 2, :126] = _rot6d([0.0, 1.0, 0.0], 3.0).repeat(21)
    pred[0, 2, 132:] += 10.0
    return pred, target


def _normalise(x, mean, std):
    return (x - mean) / std


def test_geodesic_angle_hand_values():
    a = _rot6d([0.0, 1.0, 0.0], 0.0)
    for angle in (0.3, 1.0, 2.5):
        b = _rot6d([0.0, 1.0, 0.0], angle)
        assert geodesic_angle_6d(a, b).item() == pytest.approx(angle, abs=1e-9)
    assert geodesic_angle_6d(a, a).item() == pytest.approx(IDENTITY_THETA, rel=1e-6)
    # scaled 6D decodes to the same rotation
    assert geodesic_angle_6d(3.0 * a, _rot6d([0.0, 1.0, 0.0], 1.0)).item() == pytest.approx(1.0, abs=1e-9)


def test_hand_computed_terms_and_masking():
    mean, std = _stats()
    pred_dn, target_dn = _setup()
    pred, target = _normalise(pred_dn, mean, std), _normalise(target_dn, mean, std)
    mask = torch.tensor([[True, True, False]])
    total, terms = vqvae_losses(pred, target, mask, torch.tensor(0.2, dtype=D), mean, std)
    assert set(terms) == set(LOSS_KEYS)
    eps = _smooth_l1(IDENTITY_THETA)
    # body: 2 valid frames x 21 joints, one at 0.5 rad, the others at the clamp floor
    geo_body = (_smooth_l1(0.5) + 41 * eps) / 42
    geo_root = (eps + _smooth_l1(2.0)) / 2
    transl = _smooth_l1(0.5 / std[133].item()) / 6
    assert terms["geo_body_joint_rotations"].item() == pytest.approx(geo_body, rel=1e-6)
    assert terms["geo_canonical_root_rotations"].item() == pytest.approx(geo_root, rel=1e-6)
    assert terms["canonical_root_translations"].item() == pytest.approx(transl, rel=1e-9)
    assert terms["commit_loss"].item() == pytest.approx(0.2)
    expected = 1.0 * geo_body + 0.5 * geo_root + 0.5 * transl + 0.3 * 0.2
    assert total.item() == pytest.approx(expected, rel=1e-6)

    # masked frame content does not matter with the default averaging
    pred2 = pred.clone()
    pred2[0, 2] = torch.randn(135, dtype=D) * 5
    total2, _ = vqvae_losses(pred2, target, mask, torch.tensor(0.2, dtype=D), mean, std)
    assert total2.item() == pytest.approx(total.item(), rel=1e-12)

    # reference averaging: same sums divided by ALL elements (3 frames instead of 2) -> each term x 2/3
    ref_total, ref_terms = vqvae_losses(pred, target, mask, torch.tensor(0.2, dtype=D), mean, std,
                                        reference_averaging=True)
    for key in LOSS_KEYS[:-1]:
        assert ref_terms[key].item() == pytest.approx(terms[key].item() * 2 / 3, rel=1e-9), key
    assert ref_total.item() == pytest.approx((expected - 0.3 * 0.2) * 2 / 3 + 0.3 * 0.2, rel=1e-6)
    ref_total2, _ = vqvae_losses(pred2, target, mask, torch.tensor(0.2, dtype=D), mean, std,
                                 reference_averaging=True)
    assert ref_total2.item() == pytest.approx(ref_total.item(), rel=1e-12)

    # no mask: the garbage frame counts
    total_all, _ = vqvae_losses(pred, target, None, torch.tensor(0.2, dtype=D), mean, std)
    assert total_all.item() > total.item() + 0.5


def test_normalised_6d_terms_and_custom_weights():
    mean, std = _stats()
    target = torch.zeros(2, 4, 135, dtype=D)
    pred = target.clone()
    pred[..., 0] = 0.4  # body 6D, normalised
    pred[..., 127] = 3.0  # root 6D, normalised
    weights = {"body_joint_rotations": 2.0, "canonical_root_rotations": 1.0, "geo_body_joint_rotations": 0.0,
               "geo_canonical_root_rotations": 0.0, "canonical_root_translations": 0.0, "commit_loss": 0.0}
    total, terms = vqvae_losses(pred, target, None, None, mean, std, weights=weights)
    assert terms["body_joint_rotations"].item() == pytest.approx(_smooth_l1(0.4) / 126)
    assert terms["canonical_root_rotations"].item() == pytest.approx(_smooth_l1(3.0) / 6)
    assert terms["commit_loss"].item() == 0.0
    assert total.item() == pytest.approx(2 * _smooth_l1(0.4) / 126 + _smooth_l1(3.0) / 6)
    assert DEFAULT_LOSS_WEIGHTS["body_joint_rotations"] == 0.0
    with pytest.raises(ConfigError, match="unknown VQ-VAE loss weight keys"):
        vqvae_losses(pred, target, None, None, mean, std, weights={"geo_body": 1.0})
    with pytest.raises(ValueError, match="135"):
        vqvae_losses(pred[..., :134], target[..., :134], None, None, mean, std)


def test_gradient_is_finite_at_identity_and_for_half_turns():
    mean, std = _stats()
    target = _normalise(_frames(2), mean, std)
    for pred in (target.clone(), _normalise(_setup()[0][:, :2], mean, std)):
        pred = pred.clone().requires_grad_(True)
        total, _ = vqvae_losses(pred, target, torch.ones(1, 2), None, mean, std)
        total.backward()
        assert torch.isfinite(pred.grad).all()
    # exactly pi apart: cos clamped at -1 + 1e-7
    a = _rot6d([0.0, 0.0, 1.0], 0.0).requires_grad_(True)
    theta = geodesic_angle_6d(a, _rot6d([0.0, 0.0, 1.0], math.pi))
    theta.backward()
    assert torch.isfinite(a.grad).all() and theta.item() == pytest.approx(math.pi, abs=1e-3)


def test_masked_mean_and_float32():
    loss = torch.arange(12, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    # valid: frames (0,0) -> 0,1 and (0,2) -> 4,5
    assert frame_masked_mean(loss, mask).item() == pytest.approx(10 / 4)
    assert frame_masked_mean(loss, mask, reference_averaging=True).item() == pytest.approx(10 / 12)
    assert frame_masked_mean(loss, torch.zeros(2, 3)).item() == 0.0
    with pytest.raises(ValueError, match="mask"):
        frame_masked_mean(loss, torch.ones(2, 2))
    mean, std = torch.zeros(135), torch.ones(135)
    x = torch.randn(2, 8, 135)
    total, terms = vqvae_losses(x, x.clone(), torch.ones(2, 8, dtype=torch.bool), torch.tensor(0.0), mean, std)
    assert total.dtype == torch.float32
    assert terms["geo_body_joint_rotations"].item() < 1e-5
