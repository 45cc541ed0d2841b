"""Tests for magnet.models.tokens: token layout, regrouping frames into latent blocks and back."""

from __future__ import annotations

import pytest
import torch

from magnet.errors import ConfigError, DataError
from magnet.models.tokens import (
    TokenLayout,
    latent_valid_mask,
    make_tokens,
    pack_tokens,
    token_blocks_to_transforms,
    tokens_to_transforms,
    transforms_to_token_blocks,
    unpack_tokens,
    write_transforms,
)
from magnet.representation import PackedLayout, person_dim


@pytest.mark.parametrize("P,width", [(1, 548), (2, 584), (3, 620), (4, 656)])
def test_layout_paper_widths_and_slices(P, width):
    lay = TokenLayout(P)
    assert lay.width == width == 512 + 36 * P
    assert lay.pose_latent == slice(0, 512)
    assert lay.delta == slice(512, 548)
    assert lay.partners == slice(548, width)
    assert lay.transforms == slice(512, width)
    for j in range(P - 1):
        assert lay.partner(j) == slice(548 + 36 * j, 584 + 36 * j)
    with pytest.raises(IndexError):
        lay.partner(P - 1)
    assert list(lay.fields()) == ["pose_latent", "delta", "partners"]
    assert TokenLayout(P, latent_dim=64).width == 64 + 36 * P
    assert TokenLayout.for_tokens(torch.zeros(1, 1, P, width)) == lay


def test_layout_rejects_bad_sizes():
    with pytest.raises(ConfigError):
        TokenLayout(0)
    with pytest.raises(ConfigError):
        TokenLayout(2, latent_dim=0)
    with pytest.raises(DataError):
        TokenLayout.for_tokens(torch.zeros(1, 1, 2, 72))


@pytest.mark.parametrize("P", [1, 2, 3, 4])
def test_blocks_hold_the_right_frames(P):
    lay = PackedLayout(P)
    x = torch.randn(2, 8, P, person_dim(P), dtype=torch.float64)
    delta, partners = transforms_to_token_blocks(x, lay)
    assert delta.shape == (2, 2, P, 36) and partners.shape == (2, 2, P, 36 * (P - 1))
    for k in range(2):
        for m in range(4):
            assert torch.equal(delta[:, k, :, 9 * m:9 * m + 9], x[:, 4 * k + m, :, lay.delta])
            for j in range(P - 1):
                got = partners[:, k, :, 36 * j + 9 * m:36 * j + 9 * m + 9]
                assert torch.equal(got, x[:, 4 * k + m, :, lay.partner(j)])


@pytest.mark.parametrize("P", [1, 2, 3, 4])
def test_round_trip_tokens_and_transforms(P):
    lay = PackedLayout(P)
    tl = TokenLayout(P, latent_dim=16)
    x = torch.randn(3, 12, P, person_dim(P))
    latent = torch.randn(3, 3, P, 16)
    tokens = make_tokens(x, latent, lay)
    assert tokens.shape == (3, 3, P, tl.width)
    parts = unpack_tokens(tokens, tl)
    assert torch.equal(parts["pose_latent"], latent)
    assert torch.equal(pack_tokens(parts["pose_latent"], parts["delta"], parts["partners"]), tokens)
    d, sp = tokens_to_transforms(tokens, tl)
    assert d.shape == (3, 12, P, 9) and sp.shape == (3, 12, P, P - 1, 9)
    assert torch.equal(d, x[..., lay.delta])
    assert torch.equal(sp.reshape(3, 12, P, -1), x[..., lay.partners])
    d2, sp2 = token_blocks_to_transforms(parts["delta"], parts["partners"])
    assert torch.equal(d2, d) and torch.equal(sp2, sp)
    # writing the transforms into a different packed tensor restores exactly those fields
    y = write_transforms(torch.zeros_like(x), d, sp, lay)
    assert torch.equal(y[..., lay.delta], x[..., lay.delta])
    assert torch.equal(y[..., lay.partners], x[..., lay.partners])
    assert torch.count_nonzero(y[..., : lay.delta.start]) == 0


def test_frames_per_latent_other_than_four():
    lay = PackedLayout(2)
    x = torch.randn(1, 6, 2, person_dim(2))
    delta, partners = transforms_to_token_blocks(x, lay, frames_per_latent=2)
    assert delta.shape == (1, 3, 2, 18)
    d, sp = token_blocks_to_transforms(delta, partners, frames_per_latent=2)
    assert torch.equal(d, x[..., lay.delta])
    assert torch.equal(sp[..., 0, :], x[..., lay.partner(0)])


def test_valid_mask_takes_first_frame_of_each_group():
    valid = torch.ones(1, 8, 2, dtype=torch.bool)
    valid[0, 4, 1] = False  # first frame of latent 1, person 1
    valid[0, 1, 0] = False  # not a group start: ignored
    m = latent_valid_mask(valid)
    assert m.tolist() == [[[True, True], [True, False]]]


def test_shape_errors():
    lay = PackedLayout(2)
    with pytest.raises(DataError):
        transforms_to_token_blocks(torch.zeros(1, 6, 2, person_dim(2)), lay)  # 6 not a multiple of 4
    with pytest.raises(DataError):
        transforms_to_token_blocks(torch.zeros(1, 8, 3, person_dim(3)), lay)  # wrong person count
    with pytest.raises(DataError):
        unpack_tokens(torch.zeros(1, 2, 2, 100), TokenLayout(2, 16))
    with pytest.raises(DataError):
        pack_tokens(torch.zeros(1, 2, 2, 16), torch.zeros(1, 2, 2, 36), torch.zeros(1, 2, 2, 72))
    with pytest.raises(DataError):
        token_blocks_to_transforms(torch.zeros(1, 2, 2, 36), torch.zeros(1, 2, 2, 30))
