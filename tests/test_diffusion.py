"""Tests for magnet.models.diffusion: cosine schedule, forward process, conversions, level sampling, DDIM."""

from __future__ import annotations

import math

import pytest
import torch

from magnet.errors import ConfigError, DataError
from magnet.models.diffusion import DiscreteDiffusion, cosine_alpha_bar


@pytest.fixture(scope="module")
def diff():
    return DiscreteDiffusion()


def test_cosine_schedule_values(diff):
    ab = diff.alphas_cumprod
    assert ab.dtype == torch.float64 and ab.shape == (1000,)
    assert ab[0].item() == pytest.approx(0.99996, abs=1e-5)
    assert ab[19].item() == pytest.approx(0.9983, abs=1e-4)
    assert ab[499].item() == pytest.approx(0.494, abs=1e-3)
    assert ab[979].item() == pytest.approx(9.7e-4, rel=1e-2)
    assert ab[998].item() == pytest.approx(2.4e-6, rel=3e-2)
    assert ab[999].item() == 0.0
    assert (ab[1:] < ab[:-1]).all()
    # betas clipped to [1e-9, 1]; alpha_bar is their cumulative product; beta_0 = 1 - alpha_bar_0
    betas, ab2 = cosine_alpha_bar(1000)
    assert betas.min() >= 1e-9 and betas.max() <= 1.0 and betas[-1] == 1.0
    assert torch.equal(ab2, ab) and betas[0] == pytest.approx(1 - ab[0].item())
    def f(t):
        return math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2

    assert ab[0].item() == pytest.approx(f(1) / f(0), rel=1e-12)
    # schedule buffers are not saved
    assert len(diff.state_dict()) == 0


def test_alpha_bar_of_clean_level_and_range(diff):
    assert diff.alpha_bar(torch.tensor([-1, 0, 999])).tolist() == [1.0, diff.alphas_cumprod[0].item(), 0.0]
    with pytest.raises(DataError):
        diff.alpha_bar(torch.tensor([1000]))


def test_q_sample_per_token_and_statistics(diff):
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((4, 2, 2, 20000), 2.0, dtype=torch.float64)
    levels = torch.tensor([[[0, 499], [999, -1]]]).expand(4, 2, 2)
    xk = diff.q_sample(x0, levels, generator=g)
    ab = diff.alphas_cumprod
    # mean and std per token follow sqrt(ab) x0 and sqrt(1 - ab)
    for (t, p), k in {(0, 0): 0, (0, 1): 499, (1, 0): 999}.items():
        v = xk[:, t, p].reshape(-1)
        assert v.mean().item() == pytest.approx(2.0 * math.sqrt(ab[k].item()), abs=0.02)
        assert v.std().item() == pytest.approx(math.sqrt(1 - ab[k].item()), abs=0.02)
    assert torch.equal(xk[:, 1, 1], x0[:, 1, 1])  # level -1 is clean
    with pytest.raises(DataError):
        diff.q_sample(x0, levels[..., :1])


def test_q_sample_with_given_noise_is_exact(diff):
    x0, noise = torch.randn(2, 3, 2, 5), torch.randn(2, 3, 2, 5)
    levels = torch.randint(0, 1000, (2, 3, 2))
    ab = diff.alphas_cumprod[levels].float()[..., None]
    assert torch.allclose(diff.q_sample(x0, levels, noise), ab.sqrt() * x0 + (1 - ab).sqrt() * noise, atol=1e-6)


def test_conversions_are_consistent(diff):
    x0 = torch.randn(3, 4, 2, 7, dtype=torch.float64)
    noise = torch.randn_like(x0)
    levels = torch.randint(0, 999, (3, 4, 2))  # exclude the last level where x0 from noise is ill-posed
    xk = diff.q_sample(x0, levels, noise)
    eps = diff.noise_from_x0(xk, levels, x0)
    assert torch.allclose(eps, noise, atol=1e-8)
    assert torch.allclose(diff.x0_from_noise(xk, levels, eps), x0, atol=1e-6)
    v = diff.v_from_x0_noise(x0, noise, levels)
    assert torch.allclose(diff.x0_from_v(xk, levels, v), x0, atol=1e-10)
    assert torch.allclose(diff.noise_from_v(xk, levels, v), noise, atol=1e-10)
    # at the last level the noise implied by x0 is x_k itself
    last = torch.full_like(levels, 999)
    assert torch.allclose(diff.noise_from_x0(xk, last, x0), xk)


@pytest.mark.parametrize("objective", ["pred_x0", "pred_noise", "pred_v"])
def test_model_predictions_per_objective(objective):
    d = DiscreteDiffusion(objective=objective)
    x0 = torch.randn(2, 3, 2, 5, dtype=torch.float64)
    noise = torch.randn_like(x0)
    levels = torch.randint(0, 990, (2, 3, 2))
    xk = d.q_sample(x0, levels, noise)
    target = d.training_target(x0, noise, levels)
    x0_hat, eps_hat = d.model_predictions(target, xk, levels)
    assert torch.allclose(x0_hat, x0, atol=1e-6) and torch.allclose(eps_hat, noise, atol=1e-6)


def test_uniform_and_training_levels():
    d = DiscreteDiffusion()
    g = torch.Generator().manual_seed(1)
    k = d.sample_levels((50000,), g)
    assert k.dtype == torch.long and k.min() == 0 and k.max() == 999
    assert k.float().mean().item() == pytest.approx(499.5, abs=5)
    valid = torch.ones(4, 6, 2, dtype=torch.bool)
    valid[0, :, 1] = False
    valid[2, 4:] = False
    lv = d.training_levels(valid, generator=g)
    assert (lv[~valid] == 999).all()
    assert len(torch.unique(lv[valid])) > 10  # independent per token
    one = d.training_levels(torch.ones(3, 6, 2, dtype=torch.bool), mode="uniform", generator=g)
    assert all(len(torch.unique(one[b])) == 1 for b in range(3))
    with pytest.raises(ConfigError):
        d.training_levels(valid, mode="fixed")


@pytest.mark.parametrize("mu", [0.0, -4.0])
def test_logsnr_sampling_peaks_where_logsnr_is_mu(mu):
    d = DiscreteDiffusion(noise_sampling="logsnr", logsnr_mu=mu, logsnr_sigma=1.0)
    k = d.sample_levels((200000,), torch.Generator().manual_seed(0))
    hist = torch.bincount(k, minlength=1000).reshape(20, 50).sum(1)
    peak_bin = int(hist.argmax())
    k_mu = int((d.logsnr - mu).abs().argmin())
    assert abs(peak_bin * 50 + 25 - k_mu) <= 50
    lam = d.logsnr[k]
    assert (lam - mu).abs().lt(2.5).float().mean() > 0.9  # almost all within 2.5 sigma
    assert k.max() < 999  # lambda = -inf has zero weight


def test_min_snr_weight():
    d = DiscreteDiffusion(min_snr_weight=True)
    levels = torch.tensor([0, 499, 900, 999])
    snr = d.snr(levels)
    expect = torch.minimum(snr, torch.tensor(5.0, dtype=torch.float64)) / (snr + 1)
    assert torch.allclose(d.loss_weight(levels, torch.float64), expect)
    assert d.loss_weight(torch.tensor([999])).item() == 0.0
    assert torch.equal(DiscreteDiffusion().loss_weight(levels), torch.ones(4))


def test_ddim_with_true_x0_lands_on_next_level(diff):
    x0 = torch.randn(2, 4, 2, 6, dtype=torch.float64)
    noise = torch.randn_like(x0)
    k = torch.randint(0, 1000, (2, 4, 2))
    k_next = (k - torch.randint(1, 60, k.shape)).clamp_min(-1)
    k_next[0, 0, 0] = k[0, 0, 0]  # one unchanged token
    xk = diff.q_sample(x0, k, noise)
    out = diff.ddim_step(xk, k, k_next, x0, eta=0.0)
    expect = diff.q_sample(x0, k_next, noise)
    moved = k != k_next
    assert torch.allclose(out[moved], expect[moved], atol=1e-8)
    assert torch.equal(out[0, 0, 0], xk[0, 0, 0])
    assert torch.allclose(out[k_next == -1], x0[k_next == -1])


def test_ddim_unchanged_tokens_and_eta(diff):
    x0 = torch.randn(1, 3, 2, 4)
    xk = torch.randn_like(x0)
    k = torch.tensor([[[999, 500], [-1, -1], [20, 20]]])
    k_next = torch.tensor([[[999, 480], [-1, -1], [0, -1]]])
    z = torch.randn_like(x0)
    out = diff.ddim_step(xk, k, k_next, x0, eta=1.0, noise=z)
    assert torch.equal(out[0, 0, 0], xk[0, 0, 0]) and torch.equal(out[0, 1], xk[0, 1])
    # k' = -1 gives exactly x0 even with eta = 1 (sigma = 0)
    assert torch.allclose(out[0, 2, 1], x0[0, 2, 1])
    # the stochastic part: sigma by the formula, c^2 + sigma^2 = 1 - ab'
    ab, abn = diff.alphas_cumprod[500].item(), diff.alphas_cumprod[480].item()
    sigma = math.sqrt((1 - ab / abn) * (1 - abn) / (1 - ab))
    c = math.sqrt(1 - abn - sigma**2)
    eps = (xk[0, 0, 1] - math.sqrt(ab) * x0[0, 0, 1]) / math.sqrt(1 - ab)
    expect = math.sqrt(abn) * x0[0, 0, 1] + c * eps + sigma * z[0, 0, 1]
    assert torch.allclose(out[0, 0, 1], expect, atol=1e-5)
    det = diff.ddim_step(xk, k, k_next, x0, eta=0.0)
    assert not torch.allclose(det[0, 0, 1], out[0, 0, 1])


def test_constructor_validation():
    with pytest.raises(ConfigError):
        DiscreteDiffusion(objective="pred_eps")
    with pytest.raises(ConfigError):
        DiscreteDiffusion(schedule="linear")
    with pytest.raises(ConfigError):
        DiscreteDiffusion(noise_sampling="beta")
