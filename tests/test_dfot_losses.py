"""Tests for magnet.models.dfot_losses: hand values, masking, void partners, canonical consistency."""

from __future__ import annotations

import math

import pytest
import torch

from magnet.geometry import axis_angle_to_matrix, matrix_to_rot6d, tf9_identity, yaw_matrix
from magnet.models.dfot_losses import DFoTLoss, consistency_terms, partner_index, partner_valid_mask
from magnet.models.tokens import TokenLayout, make_tokens, transforms_to_token_blocks
from magnet.representation import PackedLayout, compute_stats, pack_sequence


def test_partner_index_and_valid_mask():
    assert partner_index(3).tolist() == [[1, 2], [0, 2], [0, 1]]
    assert partner_index(1).shape == (1, 0)
    valid = torch.tensor([True, True, False])
    assert partner_valid_mask(valid).tolist() == [[True, False], [True, False], [False, False]]


def test_hand_values_solo():
    lay = TokenLayout(1, latent_dim=4)
    loss = DFoTLoss(lay)
    target = torch.zeros(2, 3, 1, lay.width)
    pred = target.clone()
    pred[..., lay.pose_latent] = 0.5   # smooth-L1 0.5 * 0.25 = 0.125
    pred[..., lay.delta] = -2.0        # smooth-L1 2 - 0.5 = 1.5
    out = loss(pred, target, torch.ones(2, 3, 1, dtype=torch.bool))
    assert set(out) == {"latent", "delta", "loss"}
    assert out["latent"].item() == pytest.approx(0.125)
    assert out["delta"].item() == pytest.approx(1.5)
    assert out["loss"].item() == pytest.approx(1.625)
    # normalised by the number of valid tokens: half the tokens off, only valid ones carry the error
    valid = torch.tensor([True, False, True, False, True, False]).reshape(2, 3, 1)
    pred2 = target.clone()
    pred2[~valid] = 100.0
    pred2[valid] = 0.5
    out2 = loss(pred2, target, valid)
    assert out2["latent"].item() == pytest.approx(0.125)


def test_hand_values_partners_and_weights():
    lay = TokenLayout(2, latent_dim=4)
    target = torch.zeros(1, 2, 2, lay.width)
    pred = target.clone()
    pred[0, 0, 0, lay.partners] = 1.0   # one token: smooth-L1 0.5 on every partner dim
    loss = DFoTLoss(lay, latent_weight=2.0, partner_weight=3.0, warmup_steps=0)
    out = loss(pred, target, torch.ones(1, 2, 2, dtype=torch.bool))
    assert out["partners"].item() == pytest.approx(0.5 / 4)
    assert out["latent"].item() == 0.0 and out["delta"].item() == 0.0
    c = out["consistency_trans"] + out["consistency_rot"]
    assert out["loss"].item() == pytest.approx(3.0 * 0.5 / 4 + 0.1 * c.item(), rel=1e-6)


def test_masked_tokens_do_not_change_the_loss():
    torch.manual_seed(0)
    lay = TokenLayout(3, latent_dim=8)
    target = torch.randn(2, 4, 3, lay.width)
    pred = target + 0.3 * torch.randn_like(target)
    valid = torch.ones(2, 4, 3, dtype=torch.bool)
    valid[0, 0] = False     # padding at the start of item 0 (the next token's first frame looks back into it)
    valid[0, 3:] = False    # and at its end
    valid[1, :, 2] = False  # person 2 of item 1 is void
    for ref in (False, True):
        loss = DFoTLoss(lay, warmup_steps=0, reference_partner_targets=ref)
        base = loss(pred, target, valid)
        pred2, target2 = pred.clone(), target.clone()
        pred2[~valid] = torch.randn_like(pred2[~valid]) * 5
        target2[~valid] = 7.0
        if not ref:  # with the fix, slots TOWARD void / padded partners are free too
            pred2[1, :, 0, lay.partner(1)] = 9.0
            pred2[1, :, 1, lay.partner(1)] = -9.0
        other = loss(pred2, target2, valid)
        # the reference's consistency terms read the void partner's predicted deltas, so only the fix makes
        # every term independent of masked tokens
        keys = list(base) if not ref else ["latent", "delta", "partners"]
        for key in keys:
            assert other[key].item() == pytest.approx(base[key].item(), rel=1e-5, abs=1e-6), (ref, key)


def test_void_partner_slots_excluded_or_reference_included():
    lay = TokenLayout(3, latent_dim=4)
    target = torch.zeros(1, 2, 3, lay.width)
    valid = torch.tensor([True, True, False]).expand(1, 2, 3)
    pred = target.clone()
    pred[0, :, 0, lay.partner(1)] = 1.0  # person 0's slot toward void person 2 predicts non-zero
    fixed = DFoTLoss(lay, warmup_steps=0)(pred, target, valid)
    ref = DFoTLoss(lay, warmup_steps=0, reference_partner_targets=True)(pred, target, valid)
    assert fixed["partners"].item() == 0.0
    # reference: per token mean over 2 x 36 dims (one slot at 0.5), over 4 valid tokens (two with the error)
    assert ref["partners"].item() == pytest.approx((0.5 / 2) * 2 / 4)
    # all valid: both modes agree
    allv = torch.ones(1, 2, 3, dtype=torch.bool)
    a = DFoTLoss(lay, warmup_steps=0)(pred, target, allv)
    b = DFoTLoss(lay, warmup_steps=0, reference_partner_targets=True)(pred, target, allv)
    for key in a:
        assert a[key].item() == pytest.approx(b[key].item(), rel=1e-6)


def _identity_tokens(lay: TokenLayout, b: int, tz: int) -> torch.Tensor:
    """Tokens whose every transform is the identity (metric units, stats None)."""
    tok = torch.zeros(b, tz, lay.num_persons, lay.width, dtype=torch.float64)
    ident = tf9_identity((), dtype=torch.float64).repeat(lay.frames_per_latent * (lay.num_persons))
    tok[..., lay.transforms] = ident
    return tok


@pytest.mark.parametrize("frame,group,divisor", [(5, 1, 4), (1, 0, 3)])
def test_consistency_hand_values_grouping(frame, group, divisor):
    """One partner translation off by 0.5 in x at ``frame``: frames ``frame`` and ``frame + 1`` are
    inconsistent, each with smooth-L1 0.125 / 3 (mean over xyz); the group divides by its frame count."""
    lay = TokenLayout(2, latent_dim=2)
    loss = DFoTLoss(lay, warmup_steps=0)
    tok = _identity_tokens(lay, 1, 3)
    k, m = divmod(frame, 4)
    tok[0, k, 0, lay.partner(0).start + 9 * m + 6] = 0.5
    out = loss(tok, tok, torch.ones(1, 3, 2, dtype=torch.bool))
    per_group = 2 * (0.125 / 3) / divisor
    assert out["consistency_trans"].item() == pytest.approx(per_group / 6)  # 3 groups x 2 persons x 1 slot
    assert out["consistency_rot"].item() == pytest.approx(0.0, abs=1e-12)
    assert out["partners"].item() == 0.0  # pred == target
    assert group == k


def test_consistency_rotation_is_chordal():
    # partner rotated by angle a about y at frame 2 only: chordal error 1 - cos(a) at frames 2 and 3
    a = 0.7
    delta = tf9_identity((1, 4, 2), dtype=torch.float64)
    sp = tf9_identity((1, 4, 2, 1), dtype=torch.float64)
    sp[0, 2, 0, 0, :6] = matrix_to_rot6d(yaw_matrix(torch.tensor(a, dtype=torch.float64)))
    trans, rot = consistency_terms(delta, sp)
    assert rot.shape == (1, 4, 2, 1) and trans.abs().max() < 1e-12
    assert rot[0, :, 0, 0].tolist() == pytest.approx([0.0, 0.0, 1 - math.cos(a), 1 - math.cos(a)])
    assert rot[0, :, 1, 0].abs().max() < 1e-12


def _walking_clip(T=16, P=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    yaw = torch.rand(P, generator=g, dtype=torch.float64) * 6 + 0.1 * torch.arange(T, dtype=torch.float64)[:, None]
    root_R = yaw_matrix(yaw) @ axis_angle_to_matrix(0.1 * torch.randn(T, P, 3, generator=g, dtype=torch.float64))
    root_t = 2 * torch.randn(P, 3, generator=g, dtype=torch.float64) + 0.05 * torch.randn(
        T, P, 3, generator=g, dtype=torch.float64).cumsum(0)
    root_t[..., 1] = 0.9
    body = axis_angle_to_matrix(0.3 * torch.randn(T, P, 21, 3, generator=g, dtype=torch.float64))
    return pack_sequence(torch.zeros(T, P, 10), body, None, root_R, root_t, torch.zeros(T, P, 21))


@pytest.mark.parametrize("P", [2, 3])
def test_consistency_zero_on_ground_truth_and_positive_when_perturbed(P):
    x = _walking_clip(T=16, P=P)
    stats = compute_stats([x.numpy()], frame_step=1)
    xn = stats.normalise(x)[None]                                  # [1, 16, P, D] normalised
    lay = TokenLayout(P, latent_dim=8)
    tok = make_tokens(xn, torch.randn(1, 4, P, 8, dtype=torch.float64), PackedLayout(P))
    valid = torch.ones(1, 4, P, dtype=torch.bool)
    loss = DFoTLoss(lay, stats, warmup_steps=1000)
    out = loss(tok, tok, valid, step=2000)
    assert out["consistency_trans"].item() < 1e-12 and out["consistency_rot"].item() < 1e-12
    assert out["consistency_warmup"].item() == 1.0 and out["loss"].item() < 1e-12
    # the partner transforms of the raw clip really change over time (the test is not trivial)
    d, sp = transforms_to_token_blocks(x[None], PackedLayout(P))
    assert sp.std() > 0.1 and d[..., 6:].abs().max() > 1e-3
    noisy = tok.clone()
    noisy[..., lay.transforms] += 0.05 * torch.randn_like(noisy[..., lay.transforms])
    out2 = loss(noisy, tok, valid, step=500)
    assert out2["consistency_trans"].item() > 1e-5 and out2["consistency_rot"].item() > 1e-6
    assert out2["consistency_warmup"].item() == 0.5
    expect = (out2["latent"] + out2["delta"] + out2["partners"]
              + 0.1 * 0.5 * (out2["consistency_trans"] + out2["consistency_rot"]))
    assert out2["loss"].item() == pytest.approx(expect.item(), rel=1e-9)
    # at step 0 the consistency terms are still reported but not added
    out0 = loss(noisy, tok, valid, step=0)
    assert out0["loss"].item() == pytest.approx((out0["latent"] + out0["delta"] + out0["partners"]).item())


def test_token_weight_and_gradients():
    lay = TokenLayout(2, latent_dim=4)
    torch.manual_seed(1)
    target = torch.randn(2, 2, 2, lay.width)
    pred = (target + torch.randn_like(target)).requires_grad_(True)
    valid = torch.ones(2, 2, 2, dtype=torch.bool)
    loss = DFoTLoss(lay, warmup_steps=0)
    full = loss(pred, target, valid)
    half = loss(pred, target, valid, token_weight=torch.full((2, 2, 2), 0.5))
    assert half["loss"].item() == pytest.approx(0.5 * full["loss"].item(), rel=1e-6)
    full["loss"].backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
