"""Pose VQ-VAE: architecture sizes, shapes, masking, the EMA quantizer and the packed-batch helpers."""

from __future__ import annotations

import math

import pytest
import torch

from magnet.errors import CheckpointError, ConfigError
from magnet.models import PoseVQVAE, QuantizeEMAReset, VQVAEConfig, load_vqvae, save_vqvae
from magnet.models.losses import value_mean_std, vqvae_losses
from magnet.models.vqvae import (
    code_usage_stats,
    fold_persons,
    project_l2_band,
    replace_value,
    unfold_persons,
    vqvae_inputs,
)
from magnet.representation import PackedLayout


def _inputs(n: int, t: int, cfg: VQVAEConfig, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, t, 135, generator=g, dtype=dtype)
    e = torch.randn(n, t, 19, generator=g, dtype=dtype)
    d = torch.randn(n, t // cfg.factor, cfg.dec_cond_dim, generator=g, dtype=dtype)
    return x, e, d


@pytest.fixture(scope="module")
def tiny() -> PoseVQVAE:
    torch.manual_seed(0)
    model = PoseVQVAE("tiny")
    model.train()
    model(*_inputs(8, 64, model.config, seed=11))  # initialises the codebook
    return model


# ------------------------------------------------------------------------------------------ architecture


def test_paper_parameter_count_matches_reference_without_z_mask():
    model = PoseVQVAE("paper")
    count = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)
    assert count(model.encoder) == 9_433_088
    assert count(model.decoder) == 9_735_815
    assert count(model) == 19_169_415 - 512
    assert count(model.quantizer) == 0
    # codebook + code_sum + code_count + the `initialised` flag
    assert sum(b.numel() for b in model.buffers()) == 1024 * 512 * 2 + 1024 + 1
    assert model.encoder.conv_in.in_channels == 154 and model.decoder.conv_in.in_channels == 558
    assert model.decoder.conv_out.out_channels == 135
    # dilations applied largest first, kernel 3 with matching padding, LayerNorm over channels
    for stage in (*model.encoder.down, *model.decoder.up):
        assert [b.conv1.dilation[0] for b in stage.res.blocks] == [9, 3, 1]
        assert [b.conv1.padding[0] for b in stage.res.blocks] == [9, 3, 1]
        assert stage.res.blocks[0].norm1.normalized_shape == (512,)
    assert model.encoder.down[0].conv.stride == (2,) and model.encoder.down[0].conv.kernel_size == (4,)


def test_presets_and_config_errors():
    assert VQVAEConfig.preset("paper") == VQVAEConfig()
    tiny = VQVAEConfig.preset("tiny", codebook_size=512)
    assert (tiny.d_hidden, tiny.d_latent, tiny.depth, tiny.codebook_size) == (128, 64, 2, 512)
    assert VQVAEConfig().factor == 4 and VQVAEConfig().dec_cond_dim == 46
    assert VQVAEConfig(down_t=3).dec_cond_dim == 10 + 9 * 8
    assert VQVAEConfig.from_dict(tiny.to_dict()) == tiny
    with pytest.raises(ConfigError, match="unknown VQ-VAE preset"):
        VQVAEConfig.preset("huge")
    with pytest.raises(ConfigError, match="unknown keys"):
        VQVAEConfig.from_dict({"width": 3})
    with pytest.raises(ConfigError, match="ema_mu"):
        VQVAEConfig(ema_mu=1.0)


def test_forward_encode_decode_shapes(tiny):
    cfg = tiny.config
    x, e, d = _inputs(3, 64, cfg)
    tiny.train()
    out = tiny(x, e, d, torch.ones(3, 64, dtype=torch.bool))
    assert out["recon"].shape == (3, 64, 135)
    assert out["z"].shape == out["z_q"].shape == (3, 16, 64)
    assert out["latent_mask"].shape == out["idx"].shape == (3, 16)
    assert out["commit_loss"].shape == ()
    assert set(out["stats"]) == {"perplexity", "usage", "top10_share", "dead_codes"}
    tiny.eval()
    z_q, latent_mask = tiny.encode(x, e)
    assert z_q.shape == (3, 16, 64) and latent_mask.all()
    assert tiny.decode(z_q, d).shape == (3, 64, 135)
    assert tiny.decode_wo_quantize(z_q, d).shape == (3, 64, 135)


def test_shape_errors(tiny):
    cfg = tiny.config
    x, e, d = _inputs(2, 64, cfg)
    with pytest.raises(ConfigError, match="multiple of the VQ-VAE time factor 4"):
        tiny(x[:, :62], e[:, :62], d)
    with pytest.raises(ValueError, match="enc_cond"):
        tiny(x, e[..., :18], d)
    with pytest.raises(ValueError, match="dec_cond"):
        tiny(x, e, d[:, :15])
    with pytest.raises(ValueError, match="mask"):
        tiny(x, e, d, torch.ones(2, 60))


def test_latent_mask_is_frame_4k_and_invalid_latents_are_zero(tiny):
    cfg = tiny.config
    x, e, d = _inputs(2, 64, cfg)
    mask = torch.ones(2, 64, dtype=torch.bool)
    mask[0, 8] = False  # frame 4*2 -> latent 2 invalid
    mask[0, 13] = False  # not a multiple of 4 -> latent 3 stays valid
    mask[1, 40:] = False  # latents 10..15 invalid
    tiny.eval()
    z_q, lm = tiny.encode(x, e, mask)
    expected = torch.ones(2, 16, dtype=torch.bool)
    expected[0, 2] = False
    expected[1, 10:] = False
    assert torch.equal(lm, expected)
    assert torch.all(z_q[~lm] == 0)
    assert torch.all(z_q[lm].abs().sum(-1) > 0)
    # valid latents are codebook rows
    cb = tiny.quantizer.codebook
    assert torch.all((z_q[lm][:, None, :] - cb[None]).abs().sum(-1).min(-1).values < 1e-6)
    out = tiny(x, e, d, mask)
    assert torch.equal(out["latent_mask"], expected)
    assert torch.all(out["z_q"][~expected] == 0)
    # decode with a latent mask zeroes the 4 frames of an invalid latent
    rec = tiny.decode(z_q, d, lm)
    assert torch.all(rec[1, 40:] == 0) and torch.all(rec[1, :40].abs().sum(-1) > 0)


def test_decode_requantizes_but_decode_wo_quantize_does_not(tiny):
    cfg = tiny.config
    x, e, d = _inputs(2, 32, cfg)
    tiny.eval()
    z_q, _ = tiny.encode(x, e)
    noisy = z_q + 1e-3 * torch.randn_like(z_q)
    assert torch.equal(tiny.decode(noisy, d), tiny.decode(z_q, d))
    assert not torch.allclose(tiny.decode_wo_quantize(noisy, d), tiny.decode_wo_quantize(z_q, d))
    noisy.requires_grad_(True)
    tiny.decode_wo_quantize(noisy, d).sum().backward()
    assert noisy.grad is not None and noisy.grad.abs().sum() > 0
    assert torch.allclose(tiny.reconstruct(x, e, d), tiny.decode(z_q, d))


def test_eval_forward_does_not_touch_codebook(tiny):
    cfg = tiny.config
    x, e, d = _inputs(2, 32, cfg, seed=5)
    tiny.train()
    tiny(x, e, d)
    before = {k: v.clone() for k, v in tiny.quantizer.state_dict().items()}
    tiny.eval()
    tiny(x, e, d)
    for k, v in tiny.quantizer.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_float64_model_runs():
    torch.manual_seed(1)
    model = PoseVQVAE(VQVAEConfig(d_hidden=32, d_latent=16, depth=1, codebook_size=8)).double()
    x, e, d = _inputs(2, 16, model.config, dtype=torch.float64)
    out = model(x, e, d)
    assert out["recon"].dtype == torch.float64 and out["z_q"].dtype == torch.float64
    assert model.quantizer.codebook.dtype == torch.float64 and model.quantizer.initialised.dtype == torch.bool


def test_tiny_model_learns():
    """A few AdamW steps on one batch lower the full loss (encoder, quantizer, decoder and losses together)."""
    torch.manual_seed(3)
    model = PoseVQVAE(VQVAEConfig(d_hidden=64, d_latent=32, depth=1, codebook_size=32, r_max=12.0))
    x, e, d = _inputs(4, 32, model.config, seed=3)
    mask = torch.ones(4, 32, dtype=torch.bool)
    mask[3, 20:] = False
    mean, std = torch.zeros(135), torch.ones(135)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    losses = []
    for _ in range(20):
        out = model(x, e, d, mask)
        total, _ = vqvae_losses(out["recon"], x, mask, out["commit_loss"], mean, std)
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(total.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.7 * losses[0]


def test_save_and_load_weights_file(tmp_path, tiny):
    path = save_vqvae(tiny, tmp_path / "vq.safetensors", metadata={"note": "x"})
    loaded = load_vqvae(path)
    assert loaded.config == tiny.config
    for k, v in tiny.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert not list(tmp_path.glob("*.tmp-*"))
    with pytest.raises(CheckpointError, match="not found"):
        load_vqvae(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_vqvae(tmp_path / "junk.safetensors")


# ---------------------------------------------------------------------------------------------- quantizer


def _q(k: int, d: int, **kw) -> QuantizeEMAReset:
    q = QuantizeEMAReset(k, d, **kw)
    q.train()
    return q


def test_init_from_first_k_valid_vectors_in_batch_order():
    q = _q(4, 3)
    z = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    valid = torch.tensor([[False, True, True, False], [True, True, True, True]])
    assert not q.is_initialised
    q(z, valid)
    assert q.is_initialised
    flat = z.reshape(-1, 3)[valid.reshape(-1)]
    # the first EMA step keeps exactly-initialised codes (each gets its own vector back, count stays 1)
    expected_sum = 0.99 * flat[:4] + 0.01 * torch.stack([flat[0], flat[1], flat[2], flat[3] + flat[4] + flat[5]])
    assert torch.allclose(q.code_sum, expected_sum)
    assert torch.allclose(q.code_count, torch.tensor([1.0, 1.0, 1.0, 1.02]))
    assert torch.allclose(q.codebook[:3], flat[:3])
    assert torch.allclose(q.codebook[3], expected_sum[3] / 1.02)


def test_init_tiles_with_small_jitter_when_fewer_than_k():
    torch.manual_seed(0)
    q = QuantizeEMAReset(7, 16)
    x = torch.randn(3, 16) * 5
    q.init_codebook(x)
    sigma = 0.01 / math.sqrt(16)
    diff = q.codebook - x[torch.arange(7) % 3]
    assert diff.abs().max() < 6 * sigma
    assert diff.abs().max() > 0  # jittered, so duplicated codes are distinct
    assert torch.equal(q.code_sum, q.codebook) and torch.equal(q.code_count, torch.ones(7))


def test_ema_update_hand_example():
    q = _q(2, 2, ema_mu=0.5)
    q(torch.tensor([[[0.0, 0.0], [10.0, 0.0]]]))
    assert torch.equal(q.codebook, torch.tensor([[0.0, 0.0], [10.0, 0.0]]))
    # batch: 1 -> code 0; 9, 11 -> code 1
    _, _, idx, stats = q(torch.tensor([[[1.0, 0.0], [9.0, 0.0], [11.0, 0.0]]]))
    assert idx.tolist() == [[0, 1, 1]]
    # code 0: sum 0.5*0 + 0.5*1 = 0.5, count 0.5 + 0.5 = 1 -> 0.5
    # code 1: sum 0.5*10 + 0.5*20 = 15, count 0.5 + 0.5*2 = 1.5 -> 10
    assert torch.allclose(q.code_sum, torch.tensor([[0.5, 0.0], [15.0, 0.0]]))
    assert torch.allclose(q.code_count, torch.tensor([1.0, 1.5]))
    assert torch.allclose(q.codebook, torch.tensor([[0.5, 0.0], [10.0, 0.0]]))
    assert stats["dead_codes"].item() == 0
    assert stats["perplexity"].item() == pytest.approx(math.exp(-(1 / 3 * math.log(1 / 3) + 2 / 3 * math.log(2 / 3))),
                                                      rel=1e-5)


def test_dead_code_reset_is_index_aligned():
    q = _q(2, 2, ema_mu=0.5)
    q(torch.tensor([[[0.0, 0.0], [10.0, 0.0]]]))
    q(torch.tensor([[[1.0, 0.0], [9.0, 0.0], [11.0, 0.0]]]))
    # all three vectors go to code 0; code 1's count 0.5*1.5 = 0.75 < 1 -> reset to the batch's vector #1
    _, _, idx, stats = q(torch.tensor([[[0.4, 0.0], [0.6, 0.0], [0.5, 0.1]]]))
    assert idx.tolist() == [[0, 0, 0]]
    assert torch.allclose(q.code_count, torch.tensor([2.0, 0.75]))
    assert torch.allclose(q.codebook[0], torch.tensor([0.5, 0.025]))  # (0.25 + 0.75, 0.05) / 2
    assert torch.allclose(q.codebook[1], torch.tensor([0.6, 0.0]))
    assert stats["dead_codes"].item() == 1
    assert stats["usage"].item() == 0.5


def test_dead_code_reset_ignores_invalid_vectors():
    q = _q(2, 2, ema_mu=0.5)
    q(torch.tensor([[[0.0, 0.0], [10.0, 0.0]]]))
    q(torch.tensor([[[1.0, 0.0], [9.0, 0.0], [11.0, 0.0]]]))
    z = torch.tensor([[[0.4, 0.0], [99.0, 99.0], [0.6, 0.0], [0.5, 0.1]]])
    valid = torch.tensor([[True, False, True, True]])
    q(z, valid)
    assert torch.allclose(q.codebook[1], torch.tensor([0.6, 0.0]))
    assert torch.allclose(q.code_count, torch.tensor([2.0, 0.75]))


def test_norm_band_projection():
    w = torch.tensor([[30.0, 40.0], [0.3, 0.4], [3.0, 4.0]])
    out = project_l2_band(w, r_min=1.0, r_max=10.0)
    assert torch.allclose(out.norm(dim=-1), torch.tensor([10.0, 1.0, 5.0]))
    assert torch.allclose(out / out.norm(dim=-1, keepdim=True), w / w.norm(dim=-1, keepdim=True))
    q = _q(3, 2, r_max=10.0)
    q(w[None])
    assert torch.allclose(q.codebook.norm(dim=-1), torch.tensor([10.0, 0.5, 5.0]))
    q2 = _q(3, 2, r_min=1.0)
    q2(w[None])
    assert torch.allclose(q2.codebook.norm(dim=-1), torch.tensor([50.0, 1.0, 5.0]))


def test_initialised_flag_survives_state_dict_round_trip():
    torch.manual_seed(0)
    a = _q(4, 3)
    a(torch.randn(1, 6, 3))
    state = a.state_dict()
    assert "initialised" in state and state["initialised"].item() is True
    b = _q(4, 3)
    b.load_state_dict(state)
    assert b.is_initialised
    batch2 = torch.randn(1, 8, 3) * 3
    c = _q(4, 3)  # never loaded: initialises from batch2
    a(batch2)
    b(batch2)
    c(batch2)
    assert torch.allclose(b.codebook, a.codebook)
    assert not torch.allclose(b.codebook, c.codebook)
    # a full model state dict carries it too
    model = PoseVQVAE(VQVAEConfig(d_hidden=16, d_latent=8, depth=1, codebook_size=4))
    assert "quantizer.initialised" in model.state_dict()


def test_usage_stats_on_known_assignment():
    s = code_usage_stats(torch.tensor([2.0, 2.0, 0.0, 0.0]))
    assert s["perplexity"].item() == pytest.approx(2.0, rel=1e-5)
    assert s["usage"].item() == 0.5 and s["top10_share"].item() == pytest.approx(1.0)
    q = QuantizeEMAReset(4, 2)
    q.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    q.code_count.fill_(1.0)
    q.eval()
    z = torch.tensor([[[0.1, 0.0], [0.9, 0.1], [0.0, 0.8], [0.9, 0.9]]])
    _, _, idx, stats = q(z)
    assert idx.tolist() == [[0, 1, 2, 3]]
    assert stats["perplexity"].item() == pytest.approx(4.0, rel=1e-5)
    assert stats["usage"].item() == 1.0 and stats["dead_codes"].item() == 0
    _, _, _, stats = q(z, torch.tensor([[True, True, False, False]]))
    assert stats["perplexity"].item() == pytest.approx(2.0, rel=1e-5) and stats["usage"].item() == 0.5


def test_straight_through_gradient_and_commitment_loss():
    q = QuantizeEMAReset(2, 2)
    q.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    q.eval()
    z = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [9.0, 9.0]]], requires_grad=True)
    valid = torch.tensor([[True, True, False]])
    z_q, commit, idx, _ = q(z, valid)
    assert idx.tolist() == [[0, 0, 1]]
    assert torch.equal(z_q.detach(), torch.tensor([[[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]]))
    # per token mean over dims: 1, 9, (1 masked); weights = valid
    assert commit.item() == pytest.approx(5.0)
    (z_q * torch.tensor([2.0, 3.0])).sum().backward()
    assert torch.equal(z.grad, torch.tensor([[[2.0, 3.0], [2.0, 3.0], [0.0, 0.0]]]))
    z2 = z.detach().clone().requires_grad_(True)
    _, commit2, _, _ = q(z2, valid, weight=torch.tensor([[1.0, 0.0, 0.0]]))
    assert commit2.item() == pytest.approx(1.0)
    commit2.backward()
    assert torch.allclose(z2.grad, torch.tensor([[[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]]))  # d/dz mean((z-0)^2)


def test_quantize_and_dequantize():
    q = QuantizeEMAReset(3, 2)
    q.codebook.copy_(torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]]))
    z = torch.tensor([[4.0, 1.0], [1.0, 4.0], [0.2, -0.1]])
    z_q, idx = q.quantize(z)
    assert idx.tolist() == [1, 2, 0]
    assert torch.equal(z_q, q.codebook[idx]) and torch.equal(q.dequantize(idx), z_q)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, idx_bf = q.quantize(z.to(torch.bfloat16))
    assert idx_bf.tolist() == [1, 2, 0]


def test_uninitialised_all_invalid_batch_does_not_initialise():
    q = _q(2, 2)
    q(torch.ones(1, 3, 2), torch.zeros(1, 3, dtype=torch.bool))
    assert not q.is_initialised
    q(torch.ones(1, 3, 2))
    assert q.is_initialised


# ------------------------------------------------------------------------------------- packed-batch helpers


def test_vqvae_inputs_slices_and_person_folding():
    layout = PackedLayout(2)
    b, t, p, dim = 2, 8, 2, layout.dim
    x = torch.randn(b, t, p, dim)
    x[..., layout.mask] = 1.0
    x[1, 6:, 0, layout.mask] = 0.0
    value, enc, dec, mask = vqvae_inputs(x, layout)
    assert value.shape == (4, 8, 135) and enc.shape == (4, 8, 19) and dec.shape == (4, 2, 46)
    assert mask.dtype == torch.bool and mask.shape == (4, 8)
    n = 1 * p + 0  # item 1, person 0
    assert torch.equal(value[n], torch.cat([x[1, :, 0, 10:136], x[1, :, 0, 325:334]], -1))
    assert torch.equal(enc[3], torch.cat([x[1, :, 1, 0:10], x[1, :, 1, 316:325]], -1))
    assert torch.equal(dec[2, 1, :10], x[1, 4, 0, 0:10])
    assert torch.equal(dec[2, 1, 10:], x[1, 4:8, 0, 316:325].reshape(36))
    assert mask[2, :6].all() and not mask[2, 6:].any() and mask[3].all()
    assert torch.equal(unfold_persons(fold_persons(x), p), x)
    assert torch.equal(replace_value(x, value, layout), x)
    changed = replace_value(x, torch.zeros_like(value), layout)
    assert torch.all(changed[..., 10:136] == 0) and torch.all(changed[..., 325:334] == 0)
    assert torch.equal(changed[..., :10], x[..., :10]) and torch.equal(changed[..., 136:325], x[..., 136:325])
    with pytest.raises(ConfigError, match="multiple of the VQ-VAE time factor 4"):
        vqvae_inputs(x[:, :6], layout)
    with pytest.raises(ValueError, match="persons"):
        vqvae_inputs(x, PackedLayout(3))


def test_value_stats_slices():
    mean = torch.arange(361, dtype=torch.float64)
    m135, s135 = value_mean_std(mean, mean + 1)
    assert m135.tolist() == list(range(10, 136)) + list(range(325, 334))
    assert torch.equal(s135, m135 + 1)


def test_commitment_weight_is_average_pooled_frame_mask():
    torch.manual_seed(0)
    model = PoseVQVAE(VQVAEConfig(d_hidden=16, d_latent=8, depth=1, codebook_size=4))
    model.quantizer.codebook.copy_(torch.randn(4, 8))
    model.eval()
    x, e, d = _inputs(1, 8, model.config)
    mask = torch.tensor([[1, 0, 0, 0, 0, 1, 1, 1]], dtype=torch.float32)  # latent 0 valid (w 1/4), latent 1 not
    out = model(x, e, d, mask)
    assert out["latent_mask"].tolist() == [[True, False]]
    z_q, _ = model.quantizer.quantize(out["z"])
    per_token = (out["z"] - z_q).pow(2).mean(-1)[0]
    expected = (0.25 * per_token[0] + 0.75 * per_token[1]) / 1.0
    assert out["commit_loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        batches = _ddp_batches()
        q = _q(4, 2, ema_mu=0.9, alive_thresh=1.0)
        for step_batches in batches:
            q(step_batches[rank][None])
        torch.save(q.state_dict(), f"{out_dir}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def _ddp_batches():
    g = torch.Generator().manual_seed(7)
    # two steps; rank 0 always has >= K = 4 vectors so its candidates equal the concatenated batch's first K
    return [(torch.randn(6, 2, generator=g) * 3, torch.randn(3, 2, generator=g) * 3) for _ in range(2)]


def test_distributed_update_equals_single_process_on_the_joint_batch(tmp_path):
    """Two gloo ranks with different batches end with identical codebooks = one process on both batches."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    single = _q(4, 2, ema_mu=0.9, alive_thresh=1.0)
    for b0, b1 in _ddp_batches():
        single(torch.cat([b0, b1])[None])
    for k, v in single.state_dict().items():
        assert torch.equal(r0[k], r1[k]), k
        torch.testing.assert_close(r0[k], v, msg=k)
