"""Tests for magnet.metrics: hand-computed values, invariants, modes, and Metric accumulation."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torchmetrics

import magnet.metrics as M
from magnet.errors import ConfigError, DataError
from magnet.metrics import capsules

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------------------------ FD
def test_fd_identical_sets_is_zero():
    x = torch.randn(500, 2, 7, generator=gen(0), dtype=F64) * 3 + 1
    assert abs(M.frechet_distance(x, x.clone())) < 1e-6
    # a list of clips is pooled: same rows split differently -> still 0
    assert abs(M.frechet_distance([x[:200], x[200:]], x)) < 1e-6


def test_fd_matches_diagonal_gaussian_closed_form():
    n = 200_000
    mu1, sd1 = torch.tensor([0.0, 0.0, 0.0], dtype=F64), torch.tensor([1.0, 2.0, 0.5], dtype=F64)
    mu2, sd2 = torch.tensor([1.0, -1.0, 0.5], dtype=F64), torch.tensor([1.5, 1.0, 0.5], dtype=F64)
    a = torch.randn(n, 3, generator=gen(1), dtype=F64) * sd1 + mu1
    b = torch.randn(n, 3, generator=gen(2), dtype=F64) * sd2 + mu2
    expected = float(((mu1 - mu2) ** 2).sum() + ((sd1 - sd2) ** 2).sum())  # 2.25 + 1.25 = 3.5
    assert expected == pytest.approx(3.5)
    assert M.frechet_distance(a, b) == pytest.approx(expected, abs=0.05)


def test_fd_gaussian_formula_on_hand_matrices():
    # commuting: FD = |dmu|^2 + sum (sqrt(a_i) - sqrt(b_i))^2 = 25 + 1 + 4
    fd = M.frechet_distance_gaussian(torch.tensor([0.0, 0.0], dtype=F64), torch.diag(torch.tensor([4.0, 1.0], dtype=F64)),
                                     torch.tensor([3.0, 4.0], dtype=F64), torch.diag(torch.tensor([1.0, 9.0], dtype=F64)))
    assert float(fd) == pytest.approx(30.0, abs=1e-4)
    # non-commuting with identity: tr sqrt(S1) = sqrt(3) + 1 -> FD = 4 + 2 - 2 (sqrt 3 + 1) = 4 - 2 sqrt 3
    s1 = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=F64)
    mu = torch.zeros(2, dtype=F64)
    assert float(M.frechet_distance_gaussian(mu, s1, mu, torch.eye(2, dtype=F64))) == pytest.approx(
        4 - 2 * math.sqrt(3), abs=1e-5)
    # general case against tr sqrtm(S1 S2) = sum sqrt(eig(S1 S2)) (eigenvalues of the product are positive)
    s2 = torch.tensor([[1.0, 0.3], [0.3, 4.0]], dtype=F64)
    cross = torch.linalg.eigvals(s1 @ s2).real.sqrt().sum()
    expected = float(torch.trace(s1) + torch.trace(s2) - 2 * cross + 1.0)  # |dmu|^2 = 1
    got = M.frechet_distance_gaussian(mu, s1, torch.tensor([1.0, 0.0], dtype=F64), s2)
    assert float(got) == pytest.approx(expected, abs=1e-4)


def test_fd_regulariser_and_negative_eigenvalues_are_clamped():
    # a singular (rank-1) covariance stays finite and non-negative thanks to eps and clamping
    v = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    s = torch.outer(v, v)
    fd = M.frechet_distance_gaussian(torch.zeros(3, dtype=F64), s, torch.zeros(3, dtype=F64), s)
    assert math.isfinite(float(fd)) and abs(float(fd)) < 1e-6


def test_moments_give_mean_and_unbiased_covariance():
    x = torch.randn(50, 4, generator=gen(3), dtype=F64) + 10
    mu, cov = M.gaussian_from_moments(*M.feature_moments(x))
    torch.testing.assert_close(mu, x.mean(0))
    torch.testing.assert_close(cov, torch.cov(x.T))
    with pytest.raises(DataError, match="at least 2"):
        M.gaussian_from_moments(*M.feature_moments(x[:1]))


def test_fd_rejects_bad_input():
    with pytest.raises(DataError, match="NaN"):
        M.frechet_distance(torch.tensor([[float("nan"), 1.0], [0.0, 1.0]]), torch.zeros(3, 2))
    with pytest.raises(DataError, match="feature dim"):
        M.frechet_distance(torch.randn(10, 3), torch.randn(10, 4))


def test_window_features_shapes_and_content():
    x = torch.randn(2, 45, 2, 3, generator=gen(4), dtype=F64)
    w = M.window_features(x)
    assert w.shape == (2, 2, 2, 90)  # (45 - 30) // 10 + 1 = 2 windows
    torch.testing.assert_close(w[1, 1, 0], x[1, 10:40, 0].reshape(-1))
    assert M.window_features(x[:, :29]) is None
    assert M.window_features(torch.randn(30, 1, 2)).shape == (1, 1, 60)


def test_windowed_fd_value_and_skip():
    real = torch.randn(3, 70, 2, 4, generator=gen(5), dtype=F64)
    fake = real + 0.5 * torch.randn(3, 70, 2, 4, generator=gen(6), dtype=F64)
    expected = M.frechet_distance(M.window_features(real), M.window_features(fake)) / 30
    assert M.windowed_frechet_distance(real, fake) == pytest.approx(expected, rel=1e-9)
    # a short clip (< 30 frames) is skipped, so it does not change anything
    short = torch.randn(3, 20, 2, 4, generator=gen(7), dtype=F64) * 100
    assert M.windowed_frechet_distance(real, [fake, short]) == pytest.approx(expected, rel=1e-9)
    assert abs(M.windowed_frechet_distance([real, short], real)) < 1e-6
    with pytest.raises(DataError, match="shorter than the 30-frame window"):
        M.windowed_frechet_distance(short, short)


def test_frechet_metric_halves_merge_and_interfaces():
    real = torch.randn(400, 2, 5, generator=gen(8), dtype=F64)
    fake = torch.randn(300, 2, 5, generator=gen(9), dtype=F64) * 1.3 + 0.2
    expected = M.frechet_distance(real, fake)
    one = M.FrechetDistance(5)
    one.update(real, fake)
    halves = M.FrechetDistance(5)
    halves.update_real(real[:150])
    halves.update_fake(fake[:100])
    halves.update(real=real[150:])
    halves.update(fake=fake[100:].float())  # float32 input is accumulated in float64
    # two "ranks" merged as DDP would (sum reduction)
    rank0, rank1 = M.FrechetDistance(5), M.FrechetDistance(5)
    rank0.update(real[:200], fake[:50])
    rank1.update(real[200:], fake[50:])
    rank0.merge_state(rank1)
    for m in (one, halves, rank0):
        assert float(m.compute()) == pytest.approx(expected, rel=1e-5)
    assert one.real_sum.dtype == F64
    with pytest.raises(DataError, match="expected 5"):
        one.update(real=torch.randn(3, 4))
    empty = M.FrechetDistance(5)
    empty.update(real=real)
    with pytest.warns(UserWarning, match="returning NaN"):
        assert math.isnan(float(empty.compute()))


def test_windowed_frechet_metric_matches_function():
    real = torch.randn(2, 64, 2, 3, generator=gen(10), dtype=F64)
    fake = torch.randn(2, 64, 2, 3, generator=gen(11), dtype=F64) + 0.3
    m = M.WindowedFrechetDistance(3)
    m.update(real=real[0], fake=fake[0])
    m.update(real=real[1], fake=fake[1])
    m.update(real=real[1, :20], fake=fake[1, :25])  # too short: skipped
    assert float(m.compute()) == pytest.approx(M.windowed_frechet_distance(list(real), list(fake)), rel=1e-6)


# ----------------------------------------------------------------------------------------------------- diversity
def test_diversity_identical_samples_is_zero_and_known_spread():
    base = torch.randn(1, 12, 2, 5, generator=gen(12), dtype=F64)
    assert M.sample_diversity(base.expand(4, -1, -1, -1)) == pytest.approx(0.0, abs=1e-12)
    # samples -a, 0, +a per dim: unbiased variance a_d^2 everywhere -> sum_d a_d^2
    a = torch.tensor([1.0, 2.0, 0.5, 0.0, 3.0], dtype=F64)
    clip = base + torch.stack([-a, 0 * a, a])[:, None, None, :]
    assert M.sample_diversity(clip) == pytest.approx(float((a ** 2).sum()))  # 14.25
    # averaged over clips
    assert M.sample_diversity([clip, base.expand(3, -1, -1, -1)]) == pytest.approx(14.25 / 2)
    # the real feature dim is used (D = 2 here, not 63)
    two = torch.zeros(2, 3, 1, 2, dtype=F64)
    two[1] = 2.0
    assert M.sample_diversity(two) == pytest.approx(2 * 2.0)  # var of (0, 2) = 2 per dim
    with pytest.raises(DataError, match="at least 2 samples"):
        M.sample_diversity(base)


def test_sample_diversity_seq_matches_reference_reshape():
    x = torch.randn(4, 65, 2, 63, generator=gen(13), dtype=F64)
    t = 60  # 65 // 30 * 30
    literal = torch.var(x[:, :t].reshape(4, -1, 63 * 30), dim=0).mean(dim=0).sum()
    assert M.sample_diversity_seq(x) == pytest.approx(float(literal), rel=1e-10)
    assert M.sample_diversity_seq(x) == pytest.approx(30 * M.sample_diversity(x[:, :t]), rel=1e-10)
    short = x[:, :10]
    assert M.sample_diversity_seq([x, short], mode="reference") == pytest.approx(float(literal) / 2, rel=1e-10)
    assert M.sample_diversity_seq([x, short], mode="fixed") == pytest.approx(float(literal), rel=1e-10)


def test_sample_diversity_metric_halves():
    clips = torch.randn(4, 3, 10, 2, 6, generator=gen(14), dtype=F64)
    m = M.SampleDiversity()
    m.update(clips[:1])
    m.update(clips[1])
    m.update(clips[2:])
    assert float(m.compute()) == pytest.approx(M.sample_diversity(list(clips)), rel=1e-12)


# ------------------------------------------------------------------------------------------------- MPJPE / MPJVE
def test_mpjpe_constant_offset_in_both_units():
    gt = torch.randn(20, 2, 21, 3, generator=gen(15), dtype=F64)
    pred = (gt + torch.tensor([0.0, 0.1, 0.0], dtype=F64)).expand(3, -1, -1, -1, -1)
    fixed = M.mpjpe(pred, gt)
    assert set(fixed) == {"mpjpe_mm", "mpjpe_best_list_mm"}
    assert fixed["mpjpe_mm"] == pytest.approx(100.0)
    assert fixed["mpjpe_best_list_mm"] == pytest.approx([100.0] * 3)
    ref = M.mpjpe(pred, gt, mode="reference")
    assert ref["mpjpe_m"] == pytest.approx(0.1)
    assert M.mpjpe(pred, gt, mode="reference", unit="mm")["mpjpe_mm"] == pytest.approx(100.0)
    # constant offset -> zero velocity error
    assert M.mpjve(pred, gt)["mpjve_mm_per_s"] == pytest.approx(0.0, abs=1e-9)


def test_mpjve_known_velocity_and_truncation():
    gt = torch.zeros(10, 1, 2, 3, dtype=F64)  # static
    pred = torch.zeros(1, 12, 1, 2, 3, dtype=F64)
    pred[..., 0] = (torch.arange(12, dtype=F64) / 30.0)[None, :, None, None]  # 1 m/s along x
    pred[:, 10:] += 50.0  # frames past the GT length are ignored (truncation to 10)
    out = M.mpjve(pred, gt, mode="reference")
    assert out["mpjve_m_per_s"] == pytest.approx(1.0)
    assert M.mpjve(pred, gt, fps=60)["mpjve_mm_per_s"] == pytest.approx(2000.0)
    assert M.mpjpe(pred, gt, mode="reference")["mpjpe_m"] == pytest.approx(float(torch.arange(10).sum() / 30 / 10))


def _clip_with_errors(errors_per_frame: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """pred [S, T, 1, 1, 3] whose error to a zero gt is e[s][t] along y."""
    e = torch.tensor(errors_per_frame, dtype=F64).T  # [S, T]
    pred = torch.zeros(e.shape[0], e.shape[1], 1, 1, 3, dtype=F64)
    pred[..., 1] = e[:, :, None, None]
    return pred, torch.zeros(e.shape[1], 1, 1, 3, dtype=F64)


def test_best_of_k_hand_example_and_pooling():
    p1, g1 = _clip_with_errors([[3.0, 1.0, 2.0]])  # one frame, samples errors 3, 1, 2
    p2, g2 = _clip_with_errors([[2.0, 4.0, 0.5], [2.0, 4.0, 0.5]])  # two frames
    out = M.mpjpe([p1, p2], [g1, g2], mode="reference")
    # cummin: clip1 [3, 1, 1], clip2 [2, 2, 0.5] -> averaged over clips
    assert out["mpjpe_best_list_m"] == pytest.approx([2.5, 1.5, 0.75])
    # the mean pools all errors, so the longer clip weighs more: (3+1+2 + 2*(2+4+0.5)) / 9
    assert out["mpjpe_m"] == pytest.approx(19.0 / 9.0)


def test_best_of_k_is_non_increasing_and_validates():
    gt = torch.randn(3, 15, 2, 21, 3, generator=gen(16), dtype=F64)
    pred = gt[:, None] + 0.2 * torch.randn(3, 6, 15, 2, 21, 3, generator=gen(17), dtype=F64)
    curve = M.mpjpe(list(pred), list(gt))["mpjpe_best_list_mm"]
    assert len(curve) == 6
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(curve))
    assert curve[-1] < curve[0]
    with pytest.raises(DataError, match="same sample count"):
        M.mpjpe([pred[0], pred[1, :4]], [gt[0], gt[1]])
    with pytest.raises(DataError, match="do not match gt"):
        M.mpjpe(pred[0], gt[0, :, :, :20])
    with pytest.raises(DataError, match="one gt per clip"):
        M.mpjpe([pred[0], pred[1]], [gt[0]])
    with pytest.raises(ConfigError, match="unknown metric mode"):
        M.mpjpe(pred[0], gt[0], mode="paper")


def test_mean_joint_error_metrics_halves_and_merge():
    gt = torch.randn(4, 12, 2, 5, 3, generator=gen(18), dtype=F64)
    pred = gt[:, None] + 0.1 * torch.randn(4, 3, 12, 2, 5, 3, generator=gen(19), dtype=F64)
    for cls, fn, kw in ((M.MPJPE, M.mpjpe, {}), (M.MPJVE, M.mpjve, {"fps": 30})):
        expected = fn(list(pred), list(gt), **kw)
        m = cls(3, **kw)
        m.update(pred[:2], gt[:2])
        m.update(pred[2], gt[2])
        m.update(pred[3], gt[3])
        a, b = cls(3, **kw), cls(3, **kw)
        a.update(pred[:1], gt[:1])
        b.update(pred[1:], gt[1:])
        a.merge_state(b)
        for metric in (m, a):
            got = metric.compute()
            assert set(got) == set(expected)
            for key, value in expected.items():
                torch.testing.assert_close(got[key], torch.as_tensor(value, dtype=F64))
    with pytest.raises(DataError, match="num_samples=3"):
        M.MPJPE(3).update(pred[0, :2], gt[0])


# ---------------------------------------------------------------------------------------------- correlation
def test_person_correlation_identical_negated_independent():
    x = torch.randn(3, 200, 1, 6, generator=gen(20), dtype=F64)
    assert M.person_correlation(torch.cat([x, x], dim=2)) == pytest.approx(1.0)
    assert M.person_correlation(torch.cat([x, -x + 3.0], dim=2)) == pytest.approx(-1.0)
    noise = torch.randn(20000, 2, 6, generator=gen(21), dtype=F64)
    assert abs(M.person_correlation(noise)) < 0.03
    # three persons: pairs (0,1)=1, (0,2)=-1, (1,2)=-1
    assert M.person_correlation(torch.cat([x, x, -x], dim=2)) == pytest.approx(-1.0 / 3.0)
    assert M.person_correlation(x) is None  # P = 1


def test_person_correlation_matches_torchmetrics_pearson():
    a = torch.randn(500, 4, generator=gen(22), dtype=F64)
    b = 0.6 * a + 0.8 * torch.randn(500, 4, generator=gen(23), dtype=F64)
    pearson = torchmetrics.PearsonCorrCoef(num_outputs=4)
    pearson.update(a, b)
    expected = float(pearson.compute().mean())
    feats = torch.stack([a, b], dim=1)  # [N, 2, 4]
    for mode in ("fixed", "reference"):
        assert M.person_correlation([feats[:100], feats[100:]], mode=mode) == pytest.approx(expected, abs=1e-10)


def test_person_correlation_constant_dims():
    x = torch.randn(300, 1, 4, generator=gen(24), dtype=F64)
    feats = torch.cat([x, x], dim=1)
    feats[:, :, 2] = 0.7  # one constant dim (both persons)
    assert M.person_correlation(feats) == pytest.approx(1.0)  # fixed: dim skipped
    assert math.isnan(M.person_correlation(feats, mode="reference"))  # NaN propagates as in torchmetrics
    const_person = feats.clone()
    const_person[:, 1] = 1.5
    assert M.person_correlation(const_person, mode="reference") == 0.0
    assert M.person_correlation(const_person, mode="fixed") is None


def test_person_correlation_metric_halves():
    feats = torch.randn(2, 50, 3, 4, generator=gen(25), dtype=F64)
    feats[:, :, 1] += 0.5 * feats[:, :, 0]
    m = M.PersonCorrelation(3, 4)
    m.update(feats[0])
    m.update(feats[1])
    assert float(m.compute()) == pytest.approx(M.person_correlation(feats), abs=1e-12)
    with pytest.raises(DataError, match=r"\[\.\.\., 3, 4\]"):
        m.update(torch.randn(5, 2, 4))
    with pytest.raises(DataError, match="num_persons >= 2"):
        M.PersonCorrelation(1, 4)


# ----------------------------------------------------------------------------------------------- foot sliding
def _feet(y: float, speed: float, s: int = 2, t: int = 31, p: int = 2, fps: int = 30) -> torch.Tensor:
    """Joints [S, T, P, 21, 3]: every joint high up, feet (9, 10) at height y moving along x at ``speed``."""
    j = torch.zeros(s, t, p, 21, 3, dtype=F64)
    j[..., 1] = 1.0
    j[..., [9, 10], 1] = y
    j[..., [9, 10], 0] = (torch.arange(t, dtype=F64) * speed / fps)[None, :, None, None]
    return j


def test_planted_foot_does_not_slide():
    for mode in ("fixed", "reference"):
        out = M.foot_sliding(_feet(0.01, 0.0), mode=mode)
        assert out["foot_sliding_ratio"] == 0.0 and out["sliding_frames"] == 0
    assert M.foot_sliding(_feet(0.01, 0.0))["avg_foot_sliding_vel_m_per_s"] == 0.0
    assert math.isnan(M.foot_sliding(_feet(-0.05, 0.0), mode="reference")["avg_foot_sliding_vel_m_per_s"])


def test_skating_foot_fixed_vs_reference_quirk():
    skate = _feet(0.01, 0.5)
    fixed = M.foot_sliding(skate)
    assert fixed["foot_sliding_ratio"] == pytest.approx(1.0)
    assert fixed["avg_foot_sliding_vel_m_per_s"] == pytest.approx(0.5)
    assert fixed["total_frames"] == 2 * 30 * 2  # S (T-1) P transitions
    # the reference threshold (-0.01 m) misses feet resting at +0.01 m
    assert M.foot_sliding(skate, mode="reference")["foot_sliding_ratio"] == 0.0
    # below -0.01 m the reference sees it, but divides T-1 transitions by T frames
    ref = M.foot_sliding(_feet(-0.02, 0.5), mode="reference")
    assert ref["foot_sliding_ratio"] == pytest.approx(30 / 31)
    assert ref["avg_foot_sliding_vel_m_per_s"] == pytest.approx(0.5)
    assert ref["total_frames"] == 2 * 31 * 2


def test_foot_sliding_details():
    j = _feet(0.2, 0.5)  # lifted feet moving fast: not in contact
    assert M.foot_sliding(j)["foot_sliding_ratio"] == 0.0
    # only the left foot slides, below the speed threshold for the right one: rows count once
    j = _feet(0.0, 0.0, s=1, t=11, p=1)
    j[..., 9, 0] = torch.arange(11, dtype=F64)[None, :, None] * (1.0 / 30)  # 1 m/s
    j[..., 10, 0] = torch.arange(11, dtype=F64)[None, :, None] * (0.04 / 30)  # 0.04 m/s < 0.05
    out = M.foot_sliding(j)
    assert out["foot_sliding_ratio"] == pytest.approx(1.0) and out["sliding_frames"] == 10
    assert out["avg_foot_sliding_vel_m_per_s"] == pytest.approx(1.0)
    # contact must hold at t and t+1: lift the foot every other frame -> no transition in contact
    j[:, 1::2, :, 9, 1] = 0.3
    assert M.foot_sliding(j)["sliding_frames"] == 0
    # custom floor and foot indices on a 22-joint array (pelvis first)
    j22 = torch.cat([torch.zeros_like(_feet(0.0, 0.0)[..., :1, :]), _feet(1.01, 0.5)], dim=-2)
    assert M.foot_sliding(j22, foot_indices=(10, 11), floor=1.0)["foot_sliding_ratio"] == pytest.approx(1.0)
    with pytest.raises(DataError, match="out of range"):
        M.foot_sliding(j, foot_indices=(9, 30))


def test_foot_sliding_metric_halves():
    clips = [_feet(0.01, 0.5, t=20), _feet(0.01, 0.0, t=15), _feet(-0.02, 0.3, t=40)]
    for mode in ("fixed", "reference"):
        expected = M.foot_sliding(clips, mode=mode)
        m = M.FootSliding(mode=mode)
        for c in clips:
            m.update(c)
        got = m.compute()
        for key, value in expected.items():
            assert float(got[key]) == pytest.approx(value)


# ------------------------------------------------------------------------------------------------ penetration
def _pt(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=F64)


def test_segment_distance_cases():
    d = M.segment_distance
    o, ex = _pt(0, 0, 0), _pt(1, 0, 0)
    # crossing in a plane, and crossing 0.3 apart (skew)
    assert float(d(o, ex, _pt(0.5, -1, 0), _pt(0.5, 1, 0))) == pytest.approx(0.0, abs=1e-12)
    assert float(d(o, ex, _pt(0.5, -1, 0.3), _pt(0.5, 1, 0.3))) == pytest.approx(0.3)
    # parallel: overlapping, collinear disjoint, offset disjoint, antiparallel
    assert float(d(o, ex, _pt(0.5, 0.2, 0), _pt(1.5, 0.2, 0))) == pytest.approx(0.2)
    assert float(d(o, ex, _pt(2, 0, 0), _pt(3, 0, 0))) == pytest.approx(1.0)
    assert float(d(o, ex, _pt(2, 1, 0), _pt(3, 1, 0))) == pytest.approx(math.sqrt(2))
    assert float(d(o, ex, _pt(3, 1, 0), _pt(2, 1, 0))) == pytest.approx(math.sqrt(2))
    # degenerate: point vs segment (both orders, inside and beyond the end), point vs point
    p = _pt(0.5, 1, 0)
    assert float(d(p, p, o, ex)) == pytest.approx(1.0)
    assert float(d(o, ex, p, p)) == pytest.approx(1.0)
    assert float(d(_pt(2, 0, 1), _pt(2, 0, 1), o, ex)) == pytest.approx(math.sqrt(2))
    assert float(d(p, p, _pt(0.5, 1, 2), _pt(0.5, 1, 2))) == pytest.approx(2.0)


def test_segment_distance_matches_brute_force():
    g = gen(26)
    p1, q1, p2, q2 = (torch.rand(64, 3, generator=g, dtype=F64) for _ in range(4))
    q2[:8] = p2[:8] + 0.5 * (q1[:8] - p1[:8])  # some parallel pairs
    got = M.segment_distance(p1, q1, p2, q2)
    s = torch.linspace(0, 1, 401, dtype=F64)
    a = p1[:, None] + s[None, :, None] * (q1 - p1)[:, None]  # [64, 401, 3]
    b = p2[:, None] + s[None, :, None] * (q2 - p2)[:, None]
    brute = torch.cdist(a, b).amin(dim=(1, 2))
    assert bool((got <= brute + 1e-12).all())
    torch.testing.assert_close(got, brute, atol=3e-3, rtol=0)
    assert got.dtype == F64 and M.segment_distance(p1.float(), q1.float(), p2.float(), q2.float()).dtype == torch.float32


def _two_torsos(dist: float, x0: float = 0.0) -> torch.Tensor:
    """[2, 22, 3]: each person = a vertical torso_lower capsule (pelvis y 0.9 -> joint 3 y 1.1); all other
    joints sit on joint 3, so every other capsule is a point at the top of the torso. Persons are ``dist``
    apart along x, so every capsule pair is exactly ``dist`` apart."""
    j = torch.zeros(2, 22, 3, dtype=F64)
    j[:, :, 1] = 1.1
    j[:, 0, 1] = 0.9
    j[0, :, 0] = x0
    j[1, :, 0] = x0 + dist
    return j


def test_penetration_known_depth_and_separation():
    # d = 0.185: only torso_lower x torso_lower (0.12 + 0.12) reaches 0.05 m: depth 0.055
    out = M.penetration(_two_torsos(0.185)[None])
    assert out["avg_total_penetration"] == pytest.approx(0.055)
    assert out["avg_max_depth"] == pytest.approx(0.055)
    assert out["overall_max_depth"] == pytest.approx(0.055)
    assert (out["penetrating_frames"], out["total_frames"], out["penetration_ratio"]) == (1, 1, 1.0)
    far = M.penetration(_two_torsos(2.0)[None])
    assert far["overall_max_depth"] == 0.0 and far["penetrating_frames"] == 0 and far["avg_total_penetration"] == 0
    # 0.20 apart the overlap (0.04 m) is below the 5 cm tolerance
    assert M.penetration(_two_torsos(0.20)[None])["penetrating_frames"] == 0


def test_penetration_aggregates_over_frames():
    # frame 0: d=0.185 -> 0.055; frame 1: d=0.175 -> 0.065 + 2 x 0.055 (torso_lower x torso_middle); frame 2: far
    frames = torch.stack([_two_torsos(0.185), _two_torsos(0.175), _two_torsos(3.0)])
    out = M.penetration(frames)
    assert out["avg_total_penetration"] == pytest.approx((0.055 + 0.175) / 2)
    assert out["avg_max_depth"] == pytest.approx((0.055 + 0.065) / 2)
    assert out["overall_max_depth"] == pytest.approx(0.065)
    assert (out["penetrating_frames"], out["total_frames"]) == (2, 3)
    assert out["penetration_ratio"] == pytest.approx(2 / 3)
    # samples x time leading axes are rows; a list of clips is pooled
    assert M.penetration([frames[:1], frames[1:]]) == out
    assert M.penetration(frames.reshape(1, 3, 2, 22, 3)) == out


def test_penetration_ignores_lower_arm_pairs():
    d = 0.05
    out = M.penetration(_two_torsos(d)[None], min_depth=0.0)
    names = [c.name for c in M.CAPSULES]
    radius = {c.name: c.radius for c in M.CAPSULES}
    ignored = set(M.IGNORED_CAPSULE_PAIRS)
    expected = sum(max(0.0, radius[a] + radius[b] - d) for a in names for b in names if (a, b) not in ignored)
    with_arms = sum(max(0.0, radius[a] + radius[b] - d) for a in names for b in names)
    assert len(M.CAPSULES) == 13 and len(ignored) == 4
    assert out["avg_total_penetration"] == pytest.approx(expected)
    assert with_arms - expected == pytest.approx(4 * 0.03)


def test_penetration_three_persons_and_single_person():
    j = torch.zeros(1, 3, 22, 3, dtype=F64)
    j[0, :2] = _two_torsos(0.185)
    j[0, 2] = _two_torsos(5.0)[1]  # third person far away
    out = M.penetration(j)
    assert out["avg_total_penetration"] == pytest.approx(0.055)  # only pair (0, 1) penetrates
    assert out["penetrating_frames"] == 1
    single = M.penetration(j[:, :1])
    assert single["penetrating_frames"] == 0 and single["total_frames"] == 1
    with pytest.raises(DataError, match="J>=22"):
        M.penetration(j[..., :21, :])


def test_penetration_reference_subsampling(monkeypatch):
    frames = torch.stack([_two_torsos(0.185)] + [_two_torsos(3.0)] * 19)  # 20 rows, only row 0 penetrates
    monkeypatch.setattr(capsules, "SUBSAMPLE_ROWS", 10)
    ref = M.penetration(frames, mode="reference")
    assert (ref["penetrating_frames"], ref["total_frames"]) == (1, 2)  # rows 0 and 10
    fixed = M.penetration(frames, mode="fixed", chunk_size=3)
    assert (fixed["penetrating_frames"], fixed["total_frames"]) == (1, 20)


def test_penetration_metric_halves_and_merge():
    frames = torch.stack([_two_torsos(0.185), _two_torsos(0.175), _two_torsos(3.0), _two_torsos(0.17)])
    expected = M.penetration(frames)
    m = M.Penetration()
    m.update(frames[:1])
    m.update(frames[1:])
    a, b = M.Penetration(), M.Penetration()
    a.update(frames[2:])  # the far frame first: max must still come from the other rank
    b.update(frames[:2])
    a.merge_state(b)
    for metric in (m, a):
        got = metric.compute()
        for key, value in expected.items():
            assert float(got[key]) == pytest.approx(value)


def test_reference_differences_table_covers_modes():
    assert M.MODES == ("reference", "fixed")
    for name in ("mpjpe", "foot_sliding", "person_correlation", "penetration", "sample_diversity_seq"):
        assert any(k.startswith(name) for k in M.REFERENCE_DIFFERENCES)
    with pytest.raises(ConfigError):
        M.foot_sliding(_feet(0.0, 0.0), mode="paper")
