"""Tests for magnet.models.dfot: sizes, embeddings, attention pattern, person/time handling, weights files."""

from __future__ import annotations

import math

import pytest
import torch

from magnet.errors import CheckpointError, ConfigError, DataError
from magnet.models.dfot import (
    DFoT,
    DFoTConfig,
    additive_rotary,
    load_dfot,
    save_dfot,
    sinusoidal_level_embedding,
)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("P,total", [(1, 20_264_228), (2, 20_301_384), (3, 20_338_540), (4, 20_375_696)])
def test_paper_parameter_count(P, total):
    with torch.device("meta"):
        model = DFoT("paper", num_persons=P, latent_dim=512)
    assert count(model) == total
    assert len(model.transformer.layers) == 6
    assert count(model.transformer.layers[0]) == 3_152_384
    assert count(model.head) == 512 * (512 + 36 * P) + 512 + 36 * P
    assert model.person_emb.weight.numel() == 256 * P
    if P == 2:
        assert count(model.input_mlp) == 1_086_976
        assert count(model.head) == 299_592
        assert model.person_emb.weight.numel() == 512


def test_paper_layer_is_post_ln_relu_without_final_norm():
    with torch.device("meta"):
        model = DFoT("paper", 2)
    layer = model.transformer.layers[0]
    assert layer.norm_first is False
    assert layer.activation_relu_or_gelu == 1  # ReLU
    assert layer.self_attn.num_heads == 8 and layer.self_attn.batch_first
    assert layer.dropout.p == 0.05 and layer.norm1.eps == 1e-5
    assert model.transformer.norm is None
    assert [type(m).__name__ for m in model.input_mlp] == ["Linear", "GELU", "Linear", "GELU", "Linear"]
    assert model.input_mlp[0].in_features == 584 + 256 + 256


def test_config_validation_and_presets():
    tiny = DFoTConfig.preset("tiny")
    assert tiny.d_model == 128 and tiny.num_layers == 3 and tiny.num_heads == 4 and tiny.ffn_dim == 256
    assert DFoTConfig.from_dict(tiny.to_dict()) == tiny
    with pytest.raises(ConfigError):
        DFoTConfig.preset("huge")
    with pytest.raises(ConfigError):
        DFoTConfig(d_model=100, num_heads=8)
    with pytest.raises(ConfigError):
        DFoTConfig(person_embedding_mode="sum")
    with pytest.raises(ConfigError):
        DFoTConfig.from_dict({"d_model": 64, "layers": 2})


def test_level_embedding_hand_values():
    emb = sinusoidal_level_embedding(torch.tensor([0, 1, -1, 999]), 256, torch.float64)
    assert emb.shape == (4, 256)
    assert torch.equal(emb[0, :128], torch.zeros(128, dtype=torch.float64))
    assert torch.equal(emb[0, 128:], torch.ones(128, dtype=torch.float64))
    f = torch.exp(-math.log(10000.0) * torch.arange(128, dtype=torch.float64) / 127)
    assert f[-1].item() == pytest.approx(1e-4)
    assert torch.allclose(emb[1], torch.cat([f.sin(), f.cos()]))
    assert torch.allclose(emb[2], torch.cat([-f.sin(), f.cos()]))  # level -1 is defined
    assert emb[3, 0].item() == pytest.approx(math.sin(999.0))
    assert emb[3, 128].item() == pytest.approx(math.cos(999.0))


def test_additive_rotary_layout():
    h = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    # position 0: rot(h) = [evens, odds]
    assert torch.allclose(additive_rotary(h, torch.tensor(0)), h + torch.tensor([1.0, 3.0, 2.0, 4.0], dtype=h.dtype))
    # position 1, d = 4: frequencies 1 and 10000^-0.5 = 0.01
    c0, s0, c1, s1 = math.cos(1), math.sin(1), math.cos(0.01), math.sin(0.01)
    rot = torch.tensor([1 * c0 - 2 * s0, 3 * c1 - 4 * s1, 1 * s0 + 2 * c0, 3 * s1 + 4 * c1], dtype=h.dtype)
    assert torch.allclose(additive_rotary(h, torch.tensor(1)), h + rot)


def tiny_model(P=2, latent=16, seed=0, **cfg):
    torch.manual_seed(seed)
    model = DFoT(DFoTConfig.preset("tiny", num_layers=2, **cfg), num_persons=P, latent_dim=latent)
    return model.eval()


def test_forward_shapes_dtypes_and_levels():
    model = tiny_model()
    x = torch.randn(3, 5, 2, model.width)
    levels = torch.randint(-1, 1000, (3, 5, 2))
    out = model(x, levels)
    assert out.shape == x.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    out64 = model.double()(x.double(), levels)
    assert out64.dtype == torch.float64
    assert torch.allclose(out64.float(), out, atol=1e-4)
    model.float()
    # the noise level conditions the output, also level -1
    assert not torch.allclose(model(x, torch.full_like(levels, -1)), model(x, torch.full_like(levels, 500)))


def test_forward_rejects_bad_shapes():
    model = tiny_model()
    with pytest.raises(DataError):
        model(torch.randn(1, 4, 3, model.width), torch.zeros(1, 4, 3, dtype=torch.long))
    with pytest.raises(DataError):
        model(torch.randn(1, 4, 2, model.width + 1), torch.zeros(1, 4, 2, dtype=torch.long))
    with pytest.raises(DataError):
        model(torch.randn(1, 4, 2, model.width), torch.zeros(1, 4, dtype=torch.long))


def test_attention_is_full_and_bidirectional():
    model = tiny_model()
    x = torch.randn(1, 6, 2, model.width)
    levels = torch.randint(0, 1000, (1, 6, 2))
    y = x.clone()
    y[0, 5, 1] += 1.0  # the last token of the last person changes
    a, b = model(x, levels), model(y, levels)
    # every earlier token of both persons sees it
    assert ((a - b)[0, :5].abs().amax(-1) > 1e-6).all()


def test_persons_share_time_positions():
    """With equal person embeddings, swapping persons swaps the outputs (same positions for every person at a
    time); shifting time does not commute (positions are the latent-frame index)."""
    model = tiny_model(P=3, latent=8)
    with torch.no_grad():
        model.person_emb.weight.copy_(model.person_emb.weight[:1].expand(3, -1))
    lay = model.token_layout
    x = torch.randn(2, 4, 3, lay.width)
    levels = torch.randint(0, 1000, (2, 4, 3))
    # swapping the token rows alone would break the partner-slot semantics, but the network does not care
    perm = [2, 0, 1]
    out = model(x, levels)
    out_p = model(x[:, :, perm], levels[:, :, perm])
    assert torch.allclose(out_p, out[:, :, perm], atol=1e-5)
    out_t = model(x.roll(1, dims=1), levels.roll(1, dims=1))
    assert not torch.allclose(out_t, out.roll(1, dims=1), atol=1e-3)


def test_person_embedding_breaks_symmetry_and_add_mode():
    model = tiny_model(P=2)
    x = torch.randn(1, 3, 1, model.width).expand(1, 3, 2, model.width).contiguous()
    levels = torch.zeros(1, 3, 2, dtype=torch.long)
    out = model(x, levels)
    assert not torch.allclose(out[:, :, 0], out[:, :, 1])
    add = tiny_model(P=2, person_embedding_mode="add")
    assert add.person_emb.weight.shape == (2, 128)
    assert add.input_mlp[0].in_features == add.width + 64
    assert add(x, levels).shape == x.shape


def test_save_load_round_trip(tmp_path):
    model = tiny_model(P=3, latent=8)
    path = save_dfot(model, tmp_path / "m.safetensors", metadata={"note": "x"})
    loaded = load_dfot(path).eval()
    assert loaded.config == model.config and loaded.num_persons == 3 and loaded.token_layout.latent_dim == 8
    x = torch.randn(1, 2, 3, model.width)
    levels = torch.tensor([[[0, -1, 999], [5, 6, 7]]])
    assert torch.equal(loaded(x, levels), model(x, levels))
    with pytest.raises(CheckpointError, match="not found"):
        load_dfot(tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        load_dfot(tmp_path / "bad.safetensors")
