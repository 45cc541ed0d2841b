"""Tests for magnet.models.dfot_import: reference key layout, round trip, strict refusal of bad checkpoints."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import save_file

from magnet.errors import CheckpointError
from magnet.models.dfot import DFoT, DFoTConfig, load_dfot
from magnet.models.dfot_import import (
    convert_reference_dfot_state,
    dfot_reference_key,
    export_reference_dfot_layout,
    import_reference_dfot,
    infer_reference_dfot,
    load_reference_dfot,
    main,
    reference_diffusion_kwargs,
)
from magnet.models.vqvae import PoseVQVAE, VQVAEConfig, load_vqvae

TINY_VQ = VQVAEConfig.preset("tiny")
TINY_CFG = DFoTConfig.preset("tiny", num_layers=2)


def make_models(P=2, seed=0):
    torch.manual_seed(seed)
    vq = PoseVQVAE(TINY_VQ).eval()
    with torch.no_grad():  # a non-trivial codebook so the round trip compares real numbers
        vq.quantizer.codebook.normal_()
        vq.quantizer.initialised.fill_(True)  # the import marks the codebook as trained
    dfot = DFoT(TINY_CFG, num_persons=P, latent_dim=TINY_VQ.d_latent).eval()
    return dfot, vq


def write_run(tmp_path, state, P=2, step=5000, mode="concat"):
    run = tmp_path / "run" / "v0"
    ckpt = run / f"checkpoints_{step}"
    ckpt.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(ckpt / "model.safetensors"))
    vq_cfg = {"d_hidden": TINY_VQ.d_hidden, "d_latent": TINY_VQ.d_latent, "depth": TINY_VQ.depth,
              "down_t": TINY_VQ.down_t, "dilation_growth_rate": TINY_VQ.dilation_growth,
              "code_nb": TINY_VQ.codebook_size, "r_max": TINY_VQ.r_max}
    cfg = {"model_cfg": {"person_num": P, "layers": 2, "d_latent": 128, "num_heads": 4, "dropout_p": 0.05,
                         "person_embedding_mode": mode, "diffusion_objective": "pred_x0", "max_t": 1000,
                         "diffusion_noise_rand_type": "uniform", "vqvae_cfg": vq_cfg}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    return run


def test_reference_key_names():
    assert dfot_reference_key("input_mlp.4.bias") == "diffuser.model.init_mlp.4.bias"
    assert dfot_reference_key("person_emb.weight") == "diffuser.model.p_embed.person_emb.weight"
    assert (dfot_reference_key("transformer.layers.3.self_attn.in_proj_weight")
            == "diffuser.model.transformer.layers.3.self_attn.in_proj_weight")
    assert dfot_reference_key("head.weight") == "diffuser.model.out.weight"
    with pytest.raises(KeyError):
        dfot_reference_key("nonsense")


def test_paper_export_matches_reference_key_list():
    with torch.device("meta"):
        model = DFoT("paper", 2, 512)
    keys = set(export_reference_dfot_layout(model))
    layer = {"self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight",
             "self_attn.out_proj.bias", "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias",
             "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"}
    expect = {f"diffuser.model.init_mlp.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")}
    expect |= {"diffuser.model.p_embed.person_emb.weight", "diffuser.model.out.weight", "diffuser.model.out.bias"}
    expect |= {f"diffuser.model.transformer.layers.{i}.{k}" for i in range(6) for k in layer}
    assert keys == expect
    state = export_reference_dfot_layout(model)
    cfg, P, latent = infer_reference_dfot(state)
    assert (P, latent) == (2, 512)
    assert cfg == DFoTConfig.preset("paper")


@pytest.mark.parametrize("P", [1, 3])
def test_round_trip_through_reference_layout(tmp_path, P):
    dfot, vq = make_models(P)
    ref = export_reference_dfot_layout(dfot, vq)
    assert "_vqvae.vqvae.encoder.model.0.weight" in ref and "_vqvae.z_mask" in ref
    run = write_run(tmp_path, ref, P)
    dfot2, vq2, cfg = load_reference_dfot(run)
    assert dfot2.config == dfot.config and dfot2.num_persons == P
    for a, b in ((dfot, dfot2), (vq, vq2)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    x = torch.randn(2, 4, P, dfot.width)
    levels = torch.randint(-1, 1000, (2, 4, P))
    assert torch.equal(dfot2(x, levels), dfot(x, levels))
    assert reference_diffusion_kwargs(cfg)["objective"] == "pred_x0"


def test_import_writes_our_weight_files(tmp_path):
    dfot, vq = make_models(2)
    run = write_run(tmp_path, export_reference_dfot_layout(dfot, vq))
    dfot_path, vq_path = import_reference_dfot(run, tmp_path / "out", step="5K")
    d2, v2 = load_dfot(dfot_path).eval(), load_vqvae(vq_path)
    assert all(torch.equal(v, d2.state_dict()[k]) for k, v in dfot.state_dict().items())
    assert torch.equal(v2.quantizer.codebook, vq.quantizer.codebook)
    from safetensors import safe_open

    with safe_open(str(dfot_path), framework="pt") as f:
        meta = f.metadata()
    # the same encoding as DFoTModule.export_weights: JSON booleans
    assert meta["diffusion.min_snr_weight"] == "false" and meta["diffusion.objective"] == "pred_x0"
    assert main([str(run), str(tmp_path / "out2")]) == 0
    assert (tmp_path / "out2" / "dfot.safetensors").is_file()


def test_add_mode_is_inferred_from_shapes():
    torch.manual_seed(0)
    model = DFoT(DFoTConfig.preset("tiny", person_embedding_mode="add"), 2, 16)
    cfg, P, latent = infer_reference_dfot(export_reference_dfot_layout(model))
    assert cfg.person_embedding_mode == "add" and (P, latent) == (2, 16)
    assert cfg.d_model == 128 and cfg.noise_emb_dim == 64 and cfg.num_layers == 3 and cfg.ffn_dim == 256


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_refuses_bad_checkpoints(tmp_path):
    dfot, vq = make_models(2)
    good = export_reference_dfot_layout(dfot, vq)
    cfg, P, latent = infer_reference_dfot(good)

    missing = dict(good)
    del missing["diffuser.model.transformer.layers.1.linear2.bias"]
    with pytest.raises(CheckpointError) as e:
        convert_reference_dfot_state(missing, cfg, P, latent, "ck")
    assert "missing" in _one_line(e) and "linear2.bias" in str(e.value)

    extra = dict(good, **{"diffuser.model.final_norm.weight": torch.zeros(3)})
    with pytest.raises(CheckpointError) as e:
        convert_reference_dfot_state(extra, cfg, P, latent, "ck")
    assert "unexpected" in _one_line(e) and "final_norm" in str(e.value)

    bad = dict(good)
    bad["diffuser.model.init_mlp.2.weight"] = torch.zeros(128, 64)
    with pytest.raises(CheckpointError) as e:
        convert_reference_dfot_state(bad, cfg, P, latent, "ck")
    assert "shape" in _one_line(e) and "init_mlp.2.weight" in str(e.value)

    # the embedded VQ-VAE is checked too: drop it entirely, then break one of its keys
    no_vq = {k: v for k, v in good.items() if not k.startswith("_vqvae.")}
    with pytest.raises(CheckpointError) as e:
        load_reference_dfot(write_run(tmp_path / "a", no_vq))
    assert "_vqvae." in _one_line(e)
    broken = dict(good)
    del broken["_vqvae.vqvae.decoder.model.0.weight"]
    with pytest.raises(CheckpointError) as e:
        load_reference_dfot(write_run(tmp_path / "b", broken))
    assert "decoder.model.0.weight" in _one_line(e)

    # not a DFoT at all (a bare VQ-VAE checkpoint)
    with pytest.raises(CheckpointError) as e:
        infer_reference_dfot({k: v for k, v in good.items() if k.startswith("_vqvae.")}, source="vq.safetensors")
    assert "vq.safetensors" in _one_line(e)

    with pytest.raises(CheckpointError):
        load_reference_dfot(tmp_path / "nowhere")
    assert main([str(tmp_path / "nowhere"), str(tmp_path / "o")]) == 2
