"""Import of the reference's VQ-VAE checkpoints: key list, run layout, round trip, refusals."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import save_file
from torch import nn

from magnet.errors import CheckpointError
from magnet.models import PoseVQVAE, VQVAEConfig, load_vqvae
from magnet.models.reference_import import (
    export_reference_layout,
    find_reference_checkpoint,
    import_reference_vqvae,
    load_reference_model,
    load_reference_vqvae,
    main,
    reference_model_config,
)

TINY = VQVAEConfig.preset("tiny")


def _ref_model_cfg(cfg: VQVAEConfig) -> dict:
    """A reference-style ``model_cfg`` block (names as in the reference training YAML)."""
    return {
        "mean_std_path": "${mean_std_path}", "activation": "gelu", "norm": "LN", "is_add_last_ln": True,
        "depth": cfg.depth, "d_latent": cfg.d_latent, "d_hidden": cfg.d_hidden, "code_nb": cfg.codebook_size,
        "is_rand_init_code": False, "is_set_r": cfg.r_max is not None, "r_min": cfg.r_min, "r_max": cfg.r_max,
        "down_t": cfg.down_t, "stride_t": 2, "dilation_growth_rate": cfg.dilation_growth, "ema_mu": cfg.ema_mu,
        "alive_thresh": cfg.alive_thresh, "loss_func": "smooth_l1",
        "loss_weight": {"geo_body_joint_rotations": 1.0, "commit_loss": 0.3},
    }


def _trained(cfg: VQVAEConfig, seed: int) -> PoseVQVAE:
    torch.manual_seed(seed)
    model = PoseVQVAE(cfg)
    model.train()
    model(torch.randn(4, 32, 135), torch.randn(4, 32, 19), torch.randn(4, 32 // cfg.factor, cfg.dec_cond_dim))
    return model.eval()


def _write_run(root, model: PoseVQVAE, steps=(5000,), cfg_block=None, prefix="", extra=None):
    """Write a reference-layout run directory: config.yaml + checkpoints_<N>/model.safetensors."""
    root.mkdir(parents=True, exist_ok=True)
    cfg = {"experiment_name": "dd100", "mean_std_path": "data/x.npz", "batch_size": 256,
           "model_cfg": cfg_block if cfg_block is not None else _ref_model_cfg(model.config)}
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    state = {prefix + k: v.contiguous() for k, v in export_reference_layout(model).items()}
    state.update(extra or {})
    for step in steps:
        d = root / f"checkpoints_{step}"
        d.mkdir()
        save_file(state, str(d / "model.safetensors"))
    return root


# ---------------------------------------------------------- an independent model built from spec 2.1 / 7.3


class _RefBlock(nn.Module):
    def __init__(self, c, dil):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.conv1 = nn.Conv1d(c, c, 3, 1, dil, dil)
        self.conv2 = nn.Conv1d(c, c, 1)

    def forward(self, x):
        h = self.conv1(F.gelu(self.norm1(x.transpose(1, 2)).transpose(1, 2)))
        return x + self.conv2(F.gelu(self.norm2(h.transpose(1, 2)).transpose(1, 2)))


class _RefRes(nn.Module):
    def __init__(self, c, depth, growth):
        super().__init__()
        self.model = nn.Sequential(*[_RefBlock(c, growth**d) for d in range(depth)][::-1])

    def forward(self, x):
        return self.model(x)


class _RefVQVAE(nn.Module):
    """Sequential-indexed encoder/decoder as the spec describes them (not our module)."""

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        c, depth, g = cfg.d_hidden, cfg.depth, cfg.dilation_growth
        enc = [nn.Conv1d(154, c, 3, 1, 1), nn.ReLU()]
        enc += [nn.Sequential(nn.Conv1d(c, c, 4, 2, 1), _RefRes(c, depth, g)) for _ in range(cfg.down_t)]
        enc += [nn.Conv1d(c, cfg.d_latent, 3, 1, 1)]
        self.encoder = nn.Module()
        self.encoder.model = nn.Sequential(*enc)
        self.encoder.last_ln = nn.LayerNorm(cfg.d_latent)
        dec = [nn.Conv1d(cfg.d_latent + cfg.dec_cond_dim, c, 3, 1, 1), nn.ReLU()]
        dec += [nn.Sequential(_RefRes(c, depth, g), nn.Upsample(scale_factor=2, mode="nearest"),
                              nn.Conv1d(c, c, 3, 1, 1)) for _ in range(cfg.down_t)]
        dec += [nn.Conv1d(c, c, 3, 1, 1), nn.ReLU(), nn.Conv1d(c, 135, 3, 1, 1)]
        self.decoder = nn.Module()
        self.decoder.model = nn.Sequential(*dec)
        self.quantizer = nn.Module()
        for name, shape in (("codebook", (cfg.codebook_size, cfg.d_latent)),
                            ("code_sum", (cfg.codebook_size, cfg.d_latent)), ("code_count", (cfg.codebook_size,))):
            self.quantizer.register_buffer(name, torch.zeros(shape))

    def encode(self, x):
        return self.encoder.last_ln(self.encoder.model(x.transpose(1, 2)).transpose(1, 2))

    def decode(self, z):
        return self.decoder.model(z.transpose(1, 2)).transpose(1, 2)


class _RefNetwork(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.vqvae = _RefVQVAE(cfg)
        self.z_mask = nn.Parameter(torch.zeros(1, 1, cfg.d_latent))


# --------------------------------------------------------------------------------------------------- tests


def test_paper_reference_key_list_and_shapes():
    ref = export_reference_layout(PoseVQVAE("paper"))
    expected = {"z_mask": (1, 1, 512), "vqvae.quantizer.codebook": (1024, 512),
                "vqvae.quantizer.code_sum": (1024, 512), "vqvae.quantizer.code_count": (1024,)}

    def conv(name, shape):
        expected[name + ".weight"], expected[name + ".bias"] = shape, shape[:1]

    def res(name):
        for j in range(3):
            for ln in ("norm1", "norm2"):
                expected[f"{name}.model.{j}.{ln}.weight"] = expected[f"{name}.model.{j}.{ln}.bias"] = (512,)
            conv(f"{name}.model.{j}.conv1", (512, 512, 3))
            conv(f"{name}.model.{j}.conv2", (512, 512, 1))

    conv("vqvae.encoder.model.0", (512, 154, 3))
    for i in (2, 3):
        conv(f"vqvae.encoder.model.{i}.0", (512, 512, 4))
        res(f"vqvae.encoder.model.{i}.1")
        res(f"vqvae.decoder.model.{i}.0")
        conv(f"vqvae.decoder.model.{i}.2", (512, 512, 3))
    conv("vqvae.encoder.model.4", (512, 512, 3))
    expected["vqvae.encoder.last_ln.weight"] = expected["vqvae.encoder.last_ln.bias"] = (512,)
    conv("vqvae.decoder.model.0", (512, 558, 3))
    conv("vqvae.decoder.model.4", (512, 512, 3))
    conv("vqvae.decoder.model.6", (135, 512, 3))
    assert {k: tuple(v.shape) for k, v in ref.items()} == expected
    assert len(ref) == 120


@pytest.mark.parametrize("cfg", [TINY, VQVAEConfig(d_hidden=32, d_latent=16, depth=3, down_t=1, codebook_size=8)])
def test_export_matches_an_independent_reference_structure(cfg):
    """Our weights, loaded (strictly) into a model built from the spec's Sequential layout, give our outputs."""
    model = _trained(cfg, seed=1)
    ref = _RefNetwork(cfg)
    ref.load_state_dict(export_reference_layout(model), strict=True)
    x = torch.randn(2, 8 * cfg.factor, 154)
    z = model.encoder(x)
    torch.testing.assert_close(ref.vqvae.encode(x), z)
    zc = torch.cat([z, torch.randn(2, 8, cfg.dec_cond_dim)], -1)
    torch.testing.assert_close(ref.vqvae.decode(zc), model.decoder(zc))


def test_round_trip_through_reference_run_layout(tmp_path):
    model = _trained(TINY, seed=2)
    other = _trained(TINY, seed=3)
    run = _write_run(tmp_path / "run" / "v0", other, steps=(5000,))
    _write_run(tmp_path / "tmp_other", model, steps=(10000,))
    (tmp_path / "tmp_other" / "checkpoints_10000").rename(run / "checkpoints_10000")

    state, cfg = load_reference_vqvae(run)  # largest step: 10000 = `model`
    assert cfg["model_cfg"]["code_nb"] == TINY.codebook_size and cfg["batch_size"] == 256
    assert reference_model_config(cfg) == TINY
    fresh = PoseVQVAE(reference_model_config(cfg))
    fresh.load_state_dict(state, strict=True)
    fresh.eval()
    assert fresh.quantizer.is_initialised
    x, e, d = torch.randn(3, 32, 135), torch.randn(3, 32, 19), torch.randn(3, 8, 46)
    mask = torch.ones(3, 32)
    mask[1, 20:] = 0
    torch.testing.assert_close(fresh.reconstruct(x, e, d, mask), model.reconstruct(x, e, d, mask), rtol=0, atol=0)
    torch.testing.assert_close(fresh(x, e, d, mask)["recon"], model(x, e, d, mask)["recon"], rtol=0, atol=0)
    # a fine-tune from the imported weights continues the codebook (no re-initialisation from the batch)
    trained_copy = copy.deepcopy(model).train()
    torch.manual_seed(0)
    trained_copy(x, e, d, mask)
    fresh.train()
    torch.manual_seed(0)
    fresh(x, e, d, mask)
    torch.testing.assert_close(fresh.quantizer.codebook, trained_copy.quantizer.codebook, rtol=0, atol=0)

    # step selection: explicit numbers, "5K", checkpoint dir, file
    for how in ({"step": 5000}, {"step": "5K"}, {"step": "5000"}):
        s, _ = load_reference_vqvae(run, **how)
        assert torch.equal(s["quantizer.codebook"], other.quantizer.codebook)
    s, _ = load_reference_vqvae(run / "checkpoints_5000")
    assert torch.equal(s["encoder.conv_in.weight"], other.encoder.conv_in.weight)
    weights, cfg_path = find_reference_checkpoint(run / "checkpoints_5000" / "model.safetensors")
    assert cfg_path == run / "config.yaml" and weights.name == "model.safetensors"
    with pytest.raises(CheckpointError, match="available steps: \\[5000, 10000\\]"):
        load_reference_vqvae(run, step=7)


def test_save_checkpoints_fallback_and_best(tmp_path):
    model = _trained(TINY, seed=4)
    run = _write_run(tmp_path / "run", model, steps=(5000,))
    (run / "checkpoints_5000").rename(run / "save_checkpoints_5000")
    weights, _ = find_reference_checkpoint(run)
    assert weights.parent.name == "save_checkpoints_5000"
    weights, _ = find_reference_checkpoint(run, step="5k")
    assert weights.parent.name == "save_checkpoints_5000"
    with pytest.raises(CheckpointError, match="best_checkpoints"):
        find_reference_checkpoint(run, step="best")
    (run / "save_checkpoints_5000").rename(run / "best_checkpoints")
    weights, _ = find_reference_checkpoint(run, step="best")
    assert weights.parent.name == "best_checkpoints"
    weights, _ = find_reference_checkpoint(run)  # only `best` left
    assert weights.parent.name == "best_checkpoints"


def test_paper_config_maps_to_paper_preset():
    ref_yaml = {"model_cfg": {"activation": "gelu", "norm": "LN", "is_add_last_ln": True, "depth": 3,
                              "d_latent": 512, "d_hidden": 512, "code_nb": 1024, "is_rand_init_code": False,
                              "is_set_r": True, "r_min": None, "r_max": 45, "down_t": 2, "stride_t": 2,
                              "dilation_growth_rate": 3, "ema_mu": 0.99}}
    assert reference_model_config(ref_yaml) == VQVAEConfig.preset("paper")
    assert reference_model_config({}) == VQVAEConfig.preset("paper")
    no_band = dict(ref_yaml["model_cfg"], is_set_r=False)
    assert reference_model_config({"model_cfg": no_band}).r_max is None
    with pytest.raises(CheckpointError, match="norm='GN'"):
        reference_model_config({"model_cfg": dict(ref_yaml["model_cfg"], norm="GN")})


def test_dfot_checkpoint_prefix(tmp_path):
    model = _trained(TINY, seed=5)
    extra = {"diffuser.model.out.weight": torch.zeros(3, 3)}
    run = _write_run(tmp_path / "dfot", model, prefix="_vqvae.", extra=extra,
                     cfg_block={"d_latent": 512, "layers": 6, "vqvae_cfg": _ref_model_cfg(TINY)})
    loaded = load_reference_model(run, prefix="_vqvae.")
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    with pytest.raises(CheckpointError, match="pass prefix '_vqvae.'"):
        load_reference_vqvae(run)
    with pytest.raises(CheckpointError, match="no key starts with the prefix 'nope.'"):
        load_reference_vqvae(run, prefix="nope.")


def _refusal(tmp_path, edit) -> str:
    model = _trained(TINY, seed=6)
    state = export_reference_layout(model)
    edit(state)
    run = tmp_path / "bad"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"model_cfg": _ref_model_cfg(TINY)}))
    (run / "checkpoints_1").mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(run / "checkpoints_1" / "model.safetensors"))
    with pytest.raises(CheckpointError) as info:
        load_reference_vqvae(run)
    msg = str(info.value)
    assert "\n" not in msg and "checkpoints_1/model.safetensors" in msg
    return msg


def test_refuses_missing_unexpected_and_mismatched_keys(tmp_path):
    msg = _refusal(tmp_path / "a", lambda s: s.pop("vqvae.decoder.model.2.0.model.1.conv1.weight"))
    assert "missing reference key 'vqvae.decoder.model.2.0.model.1.conv1.weight'" in msg
    msg = _refusal(tmp_path / "b", lambda s: s.update({"vqvae.encoder.extra": torch.zeros(2)}))
    assert "unexpected key 'vqvae.encoder.extra'" in msg
    msg = _refusal(tmp_path / "c", lambda s: s.update({"vqvae.quantizer.codebook": torch.zeros(512, 64)}))
    assert "'vqvae.quantizer.codebook' has shape (512, 64), expected (256, 64)" in msg


def test_missing_z_mask_is_accepted(tmp_path):
    model = _trained(TINY, seed=7)
    run = _write_run(tmp_path / "r", model)
    st = export_reference_layout(model)
    st.pop("z_mask")
    save_file({k: v.contiguous() for k, v in st.items()}, str(run / "checkpoints_5000" / "model.safetensors"))
    state, _ = load_reference_vqvae(run)
    assert torch.equal(state["quantizer.code_count"], model.quantizer.code_count)


def test_bad_paths(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        find_reference_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoints_<N>/model.safetensors"):
        find_reference_checkpoint(tmp_path / "empty")
    run = _write_run(tmp_path / "nocfg", _trained(TINY, seed=8))
    (run / "config.yaml").unlink()
    with pytest.raises(CheckpointError, match="config.yaml not found"):
        find_reference_checkpoint(run)
    (run / "checkpoints_5000" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_reference_vqvae(run / "checkpoints_5000" / "model.safetensors")


def test_import_writes_our_weights_file_and_cli(tmp_path, capsys):
    model = _trained(TINY, seed=9)
    run = _write_run(tmp_path / "run", model)
    out = import_reference_vqvae(run, tmp_path / "out" / "vq.safetensors")
    loaded = load_vqvae(out)
    assert loaded.config == TINY and loaded.quantizer.is_initialised
    x, e, d = torch.randn(2, 16, 135), torch.randn(2, 16, 19), torch.randn(2, 4, 46)
    torch.testing.assert_close(loaded.eval().reconstruct(x, e, d), model.reconstruct(x, e, d), rtol=0, atol=0)
    assert main([str(run), str(tmp_path / "cli.safetensors"), "--step", "5000"]) == 0
    assert (tmp_path / "cli.safetensors").is_file()
    assert main([str(tmp_path / "nowhere"), str(tmp_path / "x.safetensors")]) == 2
    assert "error: reference checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()
