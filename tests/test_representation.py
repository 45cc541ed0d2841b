"""Tests for magnet.representation: layout, packing/derived transforms, stats, normalisation, person selection."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from magnet.errors import DataError
from magnet.geometry import axis_angle_to_matrix, matrix_to_rot6d, rot6d_to_matrix, yaw_matrix
from magnet.representation import (
    NUM_NORMALISED,
    STATS_DIM,
    STATS_PARTNER,
    STATS_PER_PERSON,
    MotionStats,
    PackedLayout,
    StatsAccumulator,
    canonical_from_root,
    compute_stats,
    integrate_canonical,
    num_persons_for_dim,
    pack_sequence,
    person_dim,
    select_persons,
    unpack,
    world_joints,
    world_root_trajectory,
)


def make_clip(T: int, P: int, seed: int = 0):
    """Random multi-person raw motion (float64): yaw-rotated tilted roots walking on the floor, random bodies."""
    g = torch.Generator().manual_seed(seed)
    yaw0 = torch.rand(P, generator=g, dtype=torch.float64) * 2 * math.pi
    yaw_rate = (torch.rand(P, generator=g, dtype=torch.float64) - 0.5) * 0.2
    yaw = yaw0 + yaw_rate * torch.arange(T, dtype=torch.float64)[:, None]  # [T, P]
    tilt = axis_angle_to_matrix(0.2 * torch.randn(T, P, 3, generator=g, dtype=torch.float64))
    root_R = yaw_matrix(yaw) @ tilt
    start = 3.0 * torch.randn(P, 3, generator=g, dtype=torch.float64) + torch.tensor([5.0, 0.0, -2.0], dtype=torch.float64)
    steps = 0.03 * torch.randn(T, P, 3, generator=g, dtype=torch.float64)
    root_t = start + steps.cumsum(0)
    root_t[..., 1] = 0.9 + 0.05 * torch.rand(T, P, generator=g, dtype=torch.float64)
    betas = torch.randn(P, 10, generator=g, dtype=torch.float64).expand(T, P, 10).clone()
    body = axis_angle_to_matrix(0.5 * torch.randn(T, P, 21, 3, generator=g, dtype=torch.float64))
    hands = axis_angle_to_matrix(0.3 * torch.randn(T, P, 30, 3, generator=g, dtype=torch.float64))
    contacts = (torch.rand(T, P, 21, generator=g) > 0.5).to(torch.float64)
    return {"betas": betas, "body_rot": body, "hand_rot": hands, "root_R": root_R, "root_t": root_t,
            "contacts": contacts}


def rt(x9):
    return rot6d_to_matrix(x9[..., :6]), x9[..., 6:9]


def mul(a, b):
    (Ra, ta), (Rb, tb) = a, b
    return Ra @ Rb, (Ra @ tb[..., None])[..., 0] + ta


def inv(a):
    R, t = a
    return R.transpose(-1, -2), -(R.transpose(-1, -2) @ t[..., None])[..., 0]


# ------------------------------------------------------------------------------------------------- layout


def test_person_dim_values_and_inverse():
    assert [person_dim(p) for p in (1, 2, 3, 4)] == [374, 383, 392, 401]
    assert [num_persons_for_dim(d) for d in (374, 383, 392, 401, 410)] == [1, 2, 3, 4, 5]
    assert [NUM_NORMALISED(p) for p in (1, 2, 3)] == [352, 361, 370]
    assert STATS_DIM == 361
    for bad in (0, 135, 373, 375, 382, 384):
        with pytest.raises(DataError, match=str(bad)):
            num_persons_for_dim(bad)
    with pytest.raises(DataError):
        person_dim(0)


@pytest.mark.parametrize("P", [1, 2, 3, 4])
def test_layout_slices_contiguous_and_covering(P):
    lay = PackedLayout(P)
    fields = lay.fields()
    assert list(fields) == ["betas", "body_rot", "hand_rot", "delta", "canon_root", "world_root", "world_canon",
                            "partners", "contacts", "mask"]
    sizes = {"betas": 10, "body_rot": 126, "hand_rot": 180, "delta": 9, "canon_root": 9, "world_root": 9,
             "world_canon": 9, "partners": 9 * (P - 1), "contacts": 21, "mask": 1}
    pos = 0
    for name, sl in fields.items():
        assert sl.start == pos, name
        assert sl.stop - sl.start == sizes[name], name
        pos = sl.stop
    assert pos == lay.dim == person_dim(P)
    assert lay.mask == slice(lay.dim - 1, lay.dim)
    assert lay.normalised == slice(0, 352 + 9 * (P - 1))
    for j in range(P - 1):
        assert lay.partner(j) == slice(352 + 9 * j, 361 + 9 * j)
    with pytest.raises(IndexError):
        lay.partner(P - 1)
    # the stats vector follows the same ranges up to 352, then one partner 9-vector
    assert STATS_PER_PERSON == slice(0, PackedLayout(1).world_canon.stop)
    assert STATS_PARTNER == slice(352, 361)


def test_canonical_from_root_is_heading_yaw():
    theta = torch.tensor([0.3, -2.0, 3.0], dtype=torch.float64)
    t = torch.tensor([[1.0, 0.9, 2.0], [0.0, 1.1, -4.0], [-3.0, 0.5, 0.5]], dtype=torch.float64)
    C_R, C_t = canonical_from_root(yaw_matrix(theta), t)
    torch.testing.assert_close(C_R, yaw_matrix(theta), rtol=0, atol=1e-12)  # pure yaw root -> same yaw
    assert torch.equal(C_t[:, 1], torch.zeros(3, dtype=torch.float64))
    assert torch.equal(C_t[:, [0, 2]], t[:, [0, 2]])
    # tilted root: canonical x axis is the normalised horizontal projection of the pelvis x axis
    R = yaw_matrix(torch.tensor(1.2, dtype=torch.float64)) @ axis_angle_to_matrix(
        torch.tensor([0.3, 0.2, -0.4], dtype=torch.float64))
    C_R, _ = canonical_from_root(R, torch.zeros(3, dtype=torch.float64))
    e = R[:, 0].clone()
    e[1] = 0
    torch.testing.assert_close(C_R[:, 0], e / e.norm(), rtol=0, atol=1e-12)
    assert torch.equal(C_R[:, 1], torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))


# ------------------------------------------------------------------------------------------------ packing


@pytest.mark.parametrize("P", [2, 3])
def test_pack_sequence_derived_transforms(P):
    T = 40
    clip = make_clip(T, P, seed=P)
    x = pack_sequence(**clip)
    lay = PackedLayout(P)
    assert x.shape == (T, P, person_dim(P)) and x.dtype == torch.float64

    C = rt(x[..., lay.world_canon])
    root = rt(x[..., lay.world_root])
    canon_root = rt(x[..., lay.canon_root])
    delta = x[..., lay.delta]

    # recentring: mean over persons of C_i(0).t x/z is 0; y of C is 0
    assert torch.allclose(C[1][0].mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.equal(C[1][..., 1], torch.zeros(T, P, dtype=torch.float64))
    # the recentring shift is the same for every frame and person, root heights and rotations are unchanged
    shift = clip["root_t"] - root[1]
    assert torch.allclose(shift, shift[0, 0].expand_as(shift), atol=1e-12) and shift[0, 0, 1] == 0
    assert torch.allclose(x[..., lay.world_root][..., :6], matrix_to_rot6d(clip["root_R"]), atol=0)

    # T_canonical_root translation is (0, pelvis height, 0)
    assert torch.equal(canon_root[1][..., 0], torch.zeros(T, P, dtype=torch.float64))
    assert torch.equal(canon_root[1][..., 2], torch.zeros(T, P, dtype=torch.float64))
    assert torch.allclose(canon_root[1][..., 1], clip["root_t"][..., 1], atol=1e-12)
    # C . T_canonical_root = T_world_root
    R, t = mul(C, canon_root)
    assert torch.allclose(R, root[0], atol=1e-10) and torch.allclose(t, root[1], atol=1e-10)

    # delta: identity at t = 0, ty exactly 0, integrates back to C
    ident = torch.tensor([1.0, 0, 0, 0, 1, 0, 0, 0, 0], dtype=torch.float64)
    assert torch.equal(delta[0], ident.expand(P, 9))
    assert torch.equal(delta[..., 7], torch.zeros(T, P, dtype=torch.float64))
    C_int = integrate_canonical(delta, x[0, :, lay.world_canon])
    assert torch.allclose(C_int, x[..., lay.world_canon], atol=1e-9)
    assert not torch.allclose(delta[1:], ident.expand(T - 1, P, 9), atol=1e-3)  # the people really move

    # partners: ty exactly 0, SP_ij = C_i^-1 C_j, and SP_ij(t) = D_i(t)^-1 SP_ij(t-1) D_j(t)
    D = rt(delta)
    for i in range(P):
        others = [j for j in range(P) if j != i]
        for slot, j in enumerate(others):
            sp9 = x[:, i, lay.partner(slot)]
            assert torch.equal(sp9[:, 7], torch.zeros(T, dtype=torch.float64))
            sp = rt(sp9)
            want = mul(inv((C[0][:, i], C[1][:, i])), (C[0][:, j], C[1][:, j]))
            assert torch.allclose(sp[0], want[0], atol=1e-10) and torch.allclose(sp[1], want[1], atol=1e-10)
            Di = (D[0][1:, i], D[1][1:, i])
            Dj = (D[0][1:, j], D[1][1:, j])
            pred = mul(mul(inv(Di), (sp[0][:-1], sp[1][:-1])), Dj)
            assert torch.allclose(pred[0], sp[0][1:], atol=1e-6) and torch.allclose(pred[1], sp[1][1:], atol=1e-6)

    # copied fields
    assert torch.equal(x[..., lay.betas], clip["betas"])
    assert torch.equal(x[..., lay.body_rot], matrix_to_rot6d(clip["body_rot"]).reshape(T, P, 126))
    assert torch.equal(x[..., lay.hand_rot], matrix_to_rot6d(clip["hand_rot"]).reshape(T, P, 180))
    assert torch.equal(x[..., lay.contacts], clip["contacts"])
    assert torch.equal(x[..., lay.mask], torch.ones(T, P, 1, dtype=torch.float64))


def test_pack_without_recentre_keeps_world_translations_and_accepts_numpy():
    clip = make_clip(5, 2, seed=7)
    x = pack_sequence(**{k: v.numpy() for k, v in clip.items()}, recentre=False)
    lay = PackedLayout(2)
    assert torch.equal(x[..., lay.world_root][..., 6:], clip["root_t"])
    hands_none = pack_sequence(**{**clip, "hand_rot": None})
    eye6 = torch.tensor([1.0, 0, 0, 0, 1, 0], dtype=torch.float64)
    assert torch.equal(hands_none[..., lay.hand_rot], eye6.repeat(30).expand(5, 2, 180))


def test_pack_rejects_bad_shapes():
    clip = make_clip(4, 2)
    with pytest.raises(DataError, match="body_rot"):
        pack_sequence(**{**clip, "body_rot": clip["body_rot"][:, :, :20]})
    with pytest.raises(DataError, match="contacts"):
        pack_sequence(**{**clip, "contacts": clip["contacts"][:3]})


def test_unpack_recovers_inputs():
    clip = make_clip(6, 3, seed=3)
    x = pack_sequence(**clip, recentre=False)
    u = unpack(x.to(torch.float32))
    assert u["betas"].shape == (6, 3, 10) and u["contacts"].shape == (6, 3, 21) and u["mask"].shape == (6, 3)
    torch.testing.assert_close(u["body_rot"], clip["body_rot"].float(), atol=1e-5, rtol=0)
    torch.testing.assert_close(u["hand_rot"], clip["hand_rot"].float(), atol=1e-5, rtol=0)
    torch.testing.assert_close(u["world_root"][0], clip["root_R"].float(), atol=1e-5, rtol=0)
    torch.testing.assert_close(u["world_root"][1], clip["root_t"].float(), atol=1e-5, rtol=0)
    assert u["partners"][0].shape == (6, 3, 2, 3, 3) and u["partners"][1].shape == (6, 3, 2, 3)
    assert torch.equal(u["mask"], torch.ones(6, 3))


def test_integrate_canonical_batched_and_validated():
    yaw = torch.tensor([0.1, 0.2, -0.3, 0.4])
    d = torch.cat([matrix_to_rot6d(yaw_matrix(yaw)), torch.tensor([[0.0, 0.0, 1.0]]).expand(4, 3)], -1)
    delta = d[None, :, None, :]  # [B=1, T=4, P=1, 9]
    start = torch.cat([matrix_to_rot6d(torch.eye(3)), torch.tensor([1.0, 0.0, 2.0])])[None, None]
    C = integrate_canonical(delta, start)
    assert C.shape == (1, 4, 1, 9)
    R, t = rt(C[0, :, 0])
    # heading accumulates (delta(0) ignored): 0, 0.2, -0.1, 0.3
    torch.testing.assert_close(R, yaw_matrix(torch.tensor([0.0, 0.2, -0.1, 0.3])), atol=1e-6, rtol=0)
    # each step walks 1 m along the previous frame's rotated z axis
    step1 = torch.tensor([1.0, 0.0, 3.0])
    torch.testing.assert_close(t[1], step1, atol=1e-6, rtol=0)
    torch.testing.assert_close(t[2], step1 + yaw_matrix(torch.tensor(0.2)) @ torch.tensor([0.0, 0.0, 1.0]),
                               atol=1e-6, rtol=0)
    with pytest.raises(DataError):
        integrate_canonical(delta, start[0])


def test_world_root_trajectory_rebuilds_world_root_from_relative_fields():
    T, P = 30, 3
    x = pack_sequence(**make_clip(T, P, seed=11))
    lay = PackedLayout(P)
    traj = world_root_trajectory(x)
    assert traj.shape == (T, P, 9)
    torch.testing.assert_close(traj, x[..., lay.world_root], atol=1e-9, rtol=0)
    # only delta, canon_root and the start frame are used: wiping the world fields changes nothing
    y = x.clone()
    y[1:, :, lay.world_root] = 0.0
    y[1:, :, lay.world_canon] = 0.0
    torch.testing.assert_close(world_root_trajectory(y[None])[0], traj, atol=1e-12, rtol=0)
    # another start frame moves the whole trajectory rigidly: a 1 m shift along x shifts every root by 1 m
    start = x[0, :, lay.world_canon].clone()
    start[:, 6] += 1.0
    moved = world_root_trajectory(x, start)
    torch.testing.assert_close(moved[..., 6], traj[..., 6] + 1.0, atol=1e-9, rtol=0)
    torch.testing.assert_close(moved[..., [7, 8]], traj[..., [7, 8]], atol=1e-9, rtol=0)
    with pytest.raises(DataError):
        world_root_trajectory(x[0])


def test_world_joints_fk_from_packed_fields():
    from magnet.body import default_body_model

    body = default_body_model()
    clip = make_clip(5, 2, seed=4)
    x = pack_sequence(**clip, recentre=False).to(torch.float32)
    j = world_joints(x[None].expand(3, -1, -1, -1), body)  # leading batch axis
    assert j.shape == (3, 5, 2, 22, 3) and j.dtype == torch.float32
    # pelvis = world root translation; the whole body equals FK of the raw inputs
    torch.testing.assert_close(j[0, ..., 0, :], clip["root_t"].float(), atol=1e-5, rtol=0)
    want, _ = body.forward_kinematics(clip["body_rot"], clip["root_R"], clip["root_t"], clip["betas"])
    torch.testing.assert_close(j[1], want.float(), atol=1e-4, rtol=0)
    # moving and yawing the world root moves / rotates every joint rigidly
    lay = PackedLayout(2)
    Y = yaw_matrix(torch.tensor(0.7))
    moved = x.clone()
    R, t = rt(x[..., lay.world_root])
    moved[..., lay.world_root] = torch.cat([matrix_to_rot6d(Y @ R), t @ Y.T + torch.tensor([1.0, 0.0, -2.0])], -1)
    torch.testing.assert_close(world_joints(moved, body), j[0] @ Y.T + torch.tensor([1.0, 0.0, -2.0]),
                               atol=1e-4, rtol=0)
    # the joints really depend on the body rotations
    assert (j[0, ..., 1:, :] - j[0, ..., :1, :]).norm(dim=-1).min() > 0.01


# ------------------------------------------------------------------------------------------------- stats


def _zeros(T, P):
    return np.zeros((T, P, person_dim(P)))


def test_stats_hand_computed_and_every_tenth_frame():
    x = _zeros(25, 2)  # frames 0, 10, 20 are used
    x[:, :, 0] = 1000.0  # ignored frames hold a huge value
    x[[0, 10, 20], 0, 0] = [1.0, 2.0, 3.0]
    x[[0, 10, 20], 1, 0] = [4.0, 5.0, 6.0]
    x[[0, 10, 20], :, 352] = [[0.0, 2.0], [0.0, 2.0], [0.0, 2.0]]  # partner slot, P=2 has one per person
    x[:, :, 5] = 7.0  # constant -> std floored
    stats = compute_stats([x])
    assert stats.mean.shape == stats.std.shape == (361,) and stats.mean.dtype == np.float64
    assert stats.mean[0] == pytest.approx(3.5)
    assert stats.std[0] == pytest.approx(math.sqrt(17.5 / 6))  # population std of 1..6
    assert stats.mean[5] == pytest.approx(7.0) and stats.std[5] == pytest.approx(1e-2)
    assert stats.mean[352] == pytest.approx(1.0) and stats.std[352] == pytest.approx(1.0)
    assert stats.std[1] == 1e-2 and stats.mean[1] == 0.0

    # a 3-person clip adds two partner slots per person to the pooled partner stats
    y = _zeros(1, 3)
    y[0, :, 352:361] = 4.0
    y[0, :, 361:370] = 4.0
    y[0, :, 0] = 3.5
    both = compute_stats([x, y])
    # partner values: 6 from x (three 0s, three 2s) + 6 fours from y (3 persons x 2 slots) -> mean 30/12 = 2.5,
    # var (3 * 2.5^2 + 3 * 0.5^2 + 6 * 1.5^2) / 12 = 33/12
    assert both.mean[352] == pytest.approx(2.5) and both.std[352] == pytest.approx(math.sqrt(33 / 12))
    assert both.mean[0] == pytest.approx(3.5)


def test_stats_streaming_equals_one_shot():
    rng = np.random.default_rng(0)
    clips = [rng.normal(5.0, 3.0, size=(T, 2, 383)) for T in (31, 12, 47)]
    stats = compute_stats(clips)
    sub = np.concatenate([c[::10] for c in clips])
    own = sub[..., :352].reshape(-1, 352)
    part = sub[..., 352:361].reshape(-1, 9)
    np.testing.assert_allclose(stats.mean[:352], own.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.std[:352], own.std(0), rtol=1e-10)
    np.testing.assert_allclose(stats.mean[352:], part.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.std[352:], part.std(0), rtol=1e-10)
    acc = StatsAccumulator(frame_step=1)
    for c in clips:
        acc.update(torch.as_tensor(c, dtype=torch.float32))
    np.testing.assert_allclose(acc.result().mean[:352], np.concatenate(clips)[..., :352].reshape(-1, 352).mean(0),
                               rtol=1e-5)


def test_stats_errors():
    with pytest.raises(DataError, match="no frames"):
        compute_stats([])
    with pytest.raises(DataError, match="D=380"):
        compute_stats([np.zeros((3, 2, 380))])


def test_solo_only_stats_have_nan_partner_and_still_normalise_solo():
    rng = np.random.default_rng(1)
    solo = rng.normal(size=(30, 1, 374))
    stats = compute_stats([solo])
    assert np.isnan(stats.mean[352:]).all() and np.isnan(stats.std[352:]).all()
    assert not stats.has_partner_stats
    xn = stats.normalise(solo)
    assert np.isfinite(xn).all()
    np.testing.assert_allclose(stats.denormalise(xn), solo, atol=1e-12)
    with pytest.raises(DataError, match="partner statistics"):
        stats.normalise(rng.normal(size=(4, 2, 383)))


def test_stats_save_load_and_validation(tmp_path):
    rng = np.random.default_rng(2)
    stats = compute_stats([rng.normal(size=(20, 2, 383))])
    path = tmp_path / "d_mean_std.npz"
    stats.save(path)
    with np.load(path) as f:
        assert sorted(f.files) == ["mean", "std"] and f["mean"].dtype == np.float64 and f["std"].shape == (361,)
    back = MotionStats.load(path)
    np.testing.assert_array_equal(back.mean, stats.mean)
    np.testing.assert_array_equal(back.std, stats.std)
    assert list(tmp_path.iterdir()) == [path]  # no temp file left

    # solo-only (NaN partner) stats round-trip too
    solo = compute_stats([rng.normal(size=(5, 1, 374))])
    solo.save(tmp_path / "solo.npz")
    assert np.isnan(MotionStats.load(tmp_path / "solo.npz").mean[352:]).all()

    np.savez(tmp_path / "short.npz", mean=np.zeros(352), std=np.ones(352))
    with pytest.raises(DataError, match="short.npz"):
        MotionStats.load(tmp_path / "short.npz")
    np.savez(tmp_path / "nokey.npz", mean=np.zeros(361))
    with pytest.raises(DataError, match=r"nokey.npz.*std"):
        MotionStats.load(tmp_path / "nokey.npz")
    (tmp_path / "junk.npz").write_text("not an npz")
    with pytest.raises(DataError, match="junk.npz"):
        MotionStats.load(tmp_path / "junk.npz")
    with pytest.raises(DataError, match="not found.*missing.npz"):
        MotionStats.load(tmp_path / "missing.npz")
    bad = stats.std.copy()
    bad[3] = np.nan
    with pytest.raises(DataError):
        MotionStats(stats.mean, bad)


@pytest.mark.parametrize("P", [1, 2, 3])
def test_normalise_denormalise(P):
    rng = np.random.default_rng(P)
    mean = rng.normal(size=361)
    std = rng.uniform(0.5, 2.0, size=361)
    stats = MotionStats(mean, std)
    x = rng.normal(size=(2, 7, P, person_dim(P)))
    xn = stats.normalise(x)
    lay = PackedLayout(P)
    n = NUM_NORMALISED(P)
    np.testing.assert_allclose(xn[..., :352], (x[..., :352] - mean[:352]) / std[:352])
    for j in range(P - 1):  # partner stats tiled
        sl = lay.partner(j)
        np.testing.assert_allclose(xn[..., sl], (x[..., sl] - mean[352:]) / std[352:])
    np.testing.assert_array_equal(xn[..., n:], x[..., n:])  # contacts + mask untouched
    np.testing.assert_allclose(stats.denormalise(xn), x, atol=1e-12)
    # torch, float32 and float64, same numbers
    for dtype in (torch.float32, torch.float64):
        xt = torch.as_tensor(x, dtype=dtype)
        xtn = stats.normalise(xt)
        assert xtn.dtype == dtype
        torch.testing.assert_close(xtn, torch.as_tensor(xn, dtype=dtype), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(stats.denormalise(xtn), xt, atol=1e-5, rtol=1e-5)
    x32 = x.astype(np.float32)
    assert stats.normalise(x32).dtype == np.float32
    with pytest.raises(DataError):
        stats.normalise(np.zeros((3, P, person_dim(P) + 9)))


# ---------------------------------------------------------------------------------------- select_persons


@pytest.mark.parametrize("P", [2, 3, 4])
def test_select_persons_permutation_roundtrip(P):
    rng = np.random.default_rng(10 + P)
    x = rng.normal(size=(5, 3, P, person_dim(P)))
    perm = list(rng.permutation(P))
    inv_perm = list(np.argsort(perm))
    y = select_persons(x, perm)
    assert y.shape == x.shape
    np.testing.assert_array_equal(select_persons(y, inv_perm), x)
    xt = torch.as_tensor(x)
    torch.testing.assert_close(select_persons(select_persons(xt, perm), inv_perm), xt, rtol=0, atol=0)
    np.testing.assert_array_equal(select_persons(x, list(range(P))), x)


def test_select_persons_matches_packing_reordered_persons():
    """Subsets/reorders of packed data equal packing the reordered raw persons (no recentring)."""
    clip = make_clip(8, 4, seed=11)
    x = pack_sequence(**clip, recentre=False)
    for order in ([3, 1, 0], [2, 0], [1], [0, 3, 2, 1]):
        sub = {k: v[:, order] for k, v in clip.items()}
        want = pack_sequence(**sub, recentre=False)
        got = select_persons(x, order)
        assert got.shape == (8, len(order), person_dim(len(order)))
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    clip3 = make_clip(6, 3, seed=12)
    x3 = pack_sequence(**clip3, recentre=False)
    torch.testing.assert_close(select_persons(x3, [2, 0]), pack_sequence(**{k: v[:, [2, 0]] for k, v in
                                                                            clip3.items()}, recentre=False))


def test_select_persons_partner_blocks_by_hand():
    P = 3
    lay = PackedLayout(P)
    x = np.zeros((1, P, lay.dim))
    for i in range(P):
        x[0, i, :lay.partners.start] = 100 * i
        for slot, j in enumerate(j for j in range(P) if j != i):
            x[0, i, lay.partner(slot)] = 10 * i + j  # encodes the pair (i, j)
        x[0, i, lay.contacts] = i
        x[0, i, lay.mask] = 1
    y = select_persons(x, [2, 0])  # new 0 = old 2, new 1 = old 0
    new = PackedLayout(2)
    assert np.all(y[0, 0, :352] == 200) and np.all(y[0, 1, :352] == 0)
    assert np.all(y[0, 0, new.partner(0)] == 20) and np.all(y[0, 1, new.partner(0)] == 2)
    assert np.all(y[0, 0, new.contacts] == 2) and y[0, 0, -1] == 1

    # void persons: all zeros incl. mask; partner slots toward them are zeros
    z = select_persons(x, [1, -1, 0, -1])
    four = PackedLayout(4)
    assert z.shape == (1, 4, 401)
    assert np.all(z[0, 1] == 0) and np.all(z[0, 3] == 0)
    assert z[0, 0, -1] == 1 and z[0, 2, -1] == 1
    # person 0 (old 1): partners new 1 (void), new 2 (old 0), new 3 (void)
    assert np.all(z[0, 0, four.partner(0)] == 0) and np.all(z[0, 0, four.partner(1)] == 10)
    assert np.all(z[0, 0, four.partner(2)] == 0)
    # person 2 (old 0): partners new 0 (old 1), new 1 (void), new 3 (void)
    assert np.all(z[0, 2, four.partner(0)] == 1) and np.all(z[0, 2, four.partner(1)] == 0)
    assert np.all(z[0, 2, four.contacts] == 0) and np.all(z[0, 0, four.contacts] == 1)


def test_select_persons_rejects_bad_orders():
    x = np.zeros((2, 3, 392))
    for order in ([0, 0], [3], [], [-2]):
        with pytest.raises(DataError):
            select_persons(x, order)
    with pytest.raises(DataError):
        select_persons(np.zeros((2, 2, 392)), [0])
