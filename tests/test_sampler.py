"""The DFoT sampler (spec 4.1, 4.3, 4.6-4.8, 7.1): joint generation, determinism, both compat modes, post-processing,
root reconstruction, checkpoint loading and the output format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from magnet.data.hdf5 import open_dataset
from magnet.errors import CheckpointError, ConfigError, DataError
from magnet.evaluation import evaluate_directory
from magnet.evaluation.io import load_output_npz, write_inference_config, write_output_npz
from magnet.geometry import rot6d_to_matrix, tf9_compose, tf9_inverse
from magnet.models.tokens import TokenLayout
from magnet.representation import PackedLayout
from magnet.sampling import Sampler, SamplingConfig
from magnet.sampling.postprocess import (
    TransformStats,
    postprocess_transforms,
    reconstruct_roots_fixed,
    reconstruct_roots_reference,
    temporal_smoothing,
)

FAST = {"sampling_steps": 4, "sampling_seq_len": 96}


def _clip(root, persons, split=None):
    path = root / "synthetic" / "synthetic_dataset.hdf5"
    with open_dataset(path) as f:
        for s in ([split] if split else ["test", "val", "train"]):
            for name in f.sequences(s):
                if f.shape(s, name)[1] == persons:
                    return name, f.read(s, name)
    raise AssertionError(f"no {persons}-person clip")


@pytest.fixture(scope="module")
def sampler2(sampler_checkpoints):
    return Sampler.from_checkpoint(sampler_checkpoints[2] / "dfot.safetensors")


@pytest.fixture(scope="module")
def clip2(synthetic_root):
    return _clip(synthetic_root, 2)[1]


# ------------------------------------------------------------------------------------------ generation


@pytest.mark.parametrize("P", [1, 2, 3])
@pytest.mark.parametrize("schedule", ["full_sequence", "causal_uncertainty", "autoregressive"])
def test_joint_generation_for_1_to_3_persons(sampler_checkpoints, synthetic_root, P, schedule):
    sampler = Sampler.from_checkpoint(sampler_checkpoints[P])
    assert sampler.num_persons == P
    _, clip = _clip(synthetic_root, P)
    out = sampler.generate("joint", clip, num_samples=2, seed=3, sampling_schedule=schedule, **FAST)
    T = out.plan.total_frames
    assert T >= 96 and T % 4 == 0
    assert out.motion.shape == (2, T, P, PackedLayout(P).dim)
    assert out.joints.shape == (2, T, P, 22, 3) and bool(torch.isfinite(out.joints).all())
    assert out.network_calls == out.plan.num_calls
    # the context frames keep the ground-truth root
    lay = PackedLayout(P)
    gt_root = torch.as_tensor(clip[:32, :P, lay.world_root])
    torch.testing.assert_close(out.world_root[:, :32], gt_root.expand(2, -1, -1, -1), atol=1e-4, rtol=0)


def test_same_seed_same_samples_bit_for_bit(sampler2, clip2):
    a = sampler2.generate("joint", clip2, num_samples=2, seed=7, **FAST)
    b = sampler2.generate("joint", clip2, num_samples=2, seed=7, **FAST)
    c = sampler2.generate("joint", clip2, num_samples=2, seed=8, **FAST)
    assert torch.equal(a.motion, b.motion) and torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.tokens, c.tokens)


def test_given_noise_reproduces_and_overrides_the_seed(sampler2, clip2):
    plan = sampler2.plan(SamplingConfig.for_task("joint", **FAST))
    noise = torch.randn(2, plan.total_latent, 2, sampler2.token_layout.width, generator=torch.Generator().manual_seed(0))
    a = sampler2.generate("joint", clip2, num_samples=2, seed=1, noise=noise, **FAST)
    b = sampler2.generate("joint", clip2, num_samples=2, seed=2, noise=noise.clone(), **FAST)
    assert torch.equal(a.tokens, b.tokens)                    # eta = 0: the initial noise decides everything
    with pytest.raises(DataError, match="noise has shape"):
        sampler2.generate("joint", clip2, num_samples=2, noise=noise[:, :-1], **FAST)


def test_eta_draws_from_the_seed(sampler2, clip2):
    plan = sampler2.plan(SamplingConfig.for_task("joint", **FAST))
    noise = torch.randn(1, plan.total_latent, 2, sampler2.token_layout.width)
    a = sampler2.generate("joint", clip2, num_samples=1, seed=1, noise=noise, ddim_eta=1.0, **FAST)
    b = sampler2.generate("joint", clip2, num_samples=1, seed=2, noise=noise, ddim_eta=1.0, **FAST)
    c = sampler2.generate("joint", clip2, num_samples=1, seed=1, noise=noise, ddim_eta=1.0, **FAST)
    assert not torch.equal(a.tokens, b.tokens) and torch.equal(a.tokens, c.tokens)


def test_fixed_mode_keeps_the_context_tokens_exactly(sampler2, clip2):
    out = sampler2.generate("joint", clip2, num_samples=2, seed=0, **FAST)
    gt_tokens = sampler2.encode(sampler2.prepare_clip(torch.as_tensor(clip2))[None, :32])
    assert torch.equal(out.tokens[:, :8], gt_tokens.expand(2, -1, -1, -1))
    ref = sampler2.generate("joint", clip2, num_samples=2, seed=0, compat="reference", **FAST)
    assert not torch.equal(ref.tokens[:, :8], gt_tokens.expand(2, -1, -1, -1))   # the reference smooths them


def test_compat_modes_differ_and_both_run(sampler2, clip2):
    kw = {"num_samples": 1, "seed": 0, "sampling_steps": 3, "sampling_seq_len": 128, "sampling_subseq_len": 4,
              "ar_seq_stride": 8}
    a = sampler2.generate("joint", clip2, **kw)
    b = sampler2.generate("joint", clip2, compat="reference", **kw)
    assert a.plan.num_calls == b.plan.num_calls
    assert not torch.equal(a.motion, b.motion)


def test_ddpm_fixed_equals_ddim_with_eta_one(sampler2, clip2):
    plan = sampler2.plan(SamplingConfig.for_task("joint", **FAST))
    noise = torch.randn(1, plan.total_latent, 2, sampler2.token_layout.width)
    a = sampler2.generate("joint", clip2, num_samples=1, seed=4, noise=noise, denoising_process="ddpm", **FAST)
    b = sampler2.generate("joint", clip2, num_samples=1, seed=4, noise=noise, ddim_eta=1.0, **FAST)
    assert torch.equal(a.tokens, b.tokens)
    r = sampler2.generate("joint", clip2, num_samples=1, seed=4, noise=noise, denoising_process="ddpm",
                          compat="reference", **FAST)
    assert bool(torch.isfinite(r.tokens).all())


def test_last_layer_for_the_kept_tokens_only_equals_the_full_network(sampler2, clip2):
    from magnet.models.dfot import DFoT

    torch.manual_seed(0)
    net = DFoT("tiny", 2, 16).eval()
    x, lv = torch.randn(3, 16, 2, net.width), torch.randint(-1, 999, (3, 16, 2))
    rows = torch.tensor([3, 17, 30])
    with torch.no_grad():
        full, part = net(x, lv).reshape(3, 32, -1), net(x, lv, rows).reshape(3, 32, -1)
    torch.testing.assert_close(part[:, rows], full[:, rows], atol=1e-5, rtol=0)
    assert part[:, [0, 1, 2]].abs().max() == 0
    # the whole sampler: pruned (default) and straightforward runs agree to float tolerance
    kw = {"num_samples": 2, "seed": 0, "use_smoothing_guidance": False, "use_foot_skating_guidance": False, **FAST}
    a = sampler2.generate("joint", clip2, **kw)
    sampler2.prune_rows = False
    try:
        b = sampler2.generate("joint", clip2, **kw)
    finally:
        sampler2.prune_rows = True
    torch.testing.assert_close(a.tokens, b.tokens, atol=1e-4, rtol=0)


def test_generate_windows_one_sample_per_window(sampler2, synthetic_root):
    from datamodules import MotionDataModule

    dm = MotionDataModule(datasets=[{"name": "synthetic", "dir": str(synthetic_root / "synthetic")}],
                          sequence_len=64, person_num=2, batch_size=3, num_workers=0, seed=0)
    dm.setup("validate")
    x = next(iter(dm.val_dataloader()))["x"]
    out = sampler2.generate_windows(x, seed=0, sampling_steps=3)
    assert out.motion.shape[:3] == (3, 64, 2) and out.gt.shape[0] == 3 and out.plan.num_windows == 1
    # each sample keeps its own window's context
    tokens = sampler2.encode(x[:, :32])
    assert torch.equal(out.tokens[:, :8], tokens)


# ------------------------------------------------------------------------------------------ post-processing


def test_temporal_smoothing_is_the_laplacian_step():
    x = torch.tensor([0.0, 1.0, 0.0, 3.0, 5.0]).reshape(1, 5, 1, 1)
    y = temporal_smoothing(x, 0.5)
    # x_t - s (x_t - (x_{t-1} + x_{t+1}) / 2), old values on the right, ends untouched
    assert y.flatten().tolist() == [0.0, 0.5, 1.0, 2.75, 5.0]
    keep = torch.tensor([[False], [True], [False], [False], [False]])
    assert temporal_smoothing(x, 0.5, keep).flatten().tolist() == [0.0, 1.0, 1.0, 2.75, 5.0]


def _random_transform_tokens(P, tm=6, S=2, latent=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    lay = TokenLayout(P, latent)
    return torch.randn(S, tm, P, lay.width, generator=g), lay


def _stats(P=2):
    mean = np.zeros(361)
    std = np.ones(361)
    return TransformStats(mean, std)


@pytest.mark.parametrize("compat", ["fixed", "reference"])
def test_postprocess_zeroes_ty_and_orthonormalises(compat):
    x, lay = _random_transform_tokens(2)
    y = postprocess_transforms(x, lay, _stats(), context_len=2, temporal=False, compat=compat)
    from magnet.models.tokens import token_blocks_to_transforms

    d, sp = token_blocks_to_transforms(y[..., lay.delta], y[..., lay.partners])
    for tf in (d, sp):
        assert tf[..., 7].abs().max() == 0
        R = rot6d_to_matrix(tf[..., :6])
        torch.testing.assert_close(tf[..., :6], torch.cat([R[..., :, 0], R[..., :, 1]], -1), atol=1e-5, rtol=0)
    assert torch.equal(y[..., lay.pose_latent], x[..., lay.pose_latent])


def test_postprocess_temporal_fixed_makes_partners_consistent_with_the_deltas():
    from magnet.models.tokens import token_blocks_to_transforms

    x, lay = _random_transform_tokens(3, tm=5)
    y = postprocess_transforms(x, lay, _stats(), context_len=2, temporal=True, compat="fixed")
    d, sp = token_blocks_to_transforms(y[..., lay.delta], y[..., lay.partners])
    # SP_ij(t) = Delta_i(t)^-1 SP_ij(t-1) Delta_j(t) for every frame after the context (frames 8..19; the
    # chain is anchored on person 0's partner transforms at frame 7, so the other persons' slots hold from frame 9)
    for t in range(8, 20):
        for i, j, slot in ((0, 1, 0), (0, 2, 1), (1, 2, 1), (2, 0, 0)):
            if t == 8 and i != 0:
                continue
            slot_prev = sp[:, t - 1, i, slot]
            want = tf9_compose(tf9_compose(tf9_inverse(d[:, t, i]), slot_prev), d[:, t, j])
            torch.testing.assert_close(sp[:, t, i, slot], want, atol=1e-4, rtol=0)
    # frames of the context keep their (orthonormalised) values
    y_plain = postprocess_transforms(x, lay, _stats(), context_len=2, temporal=False, compat="fixed")
    torch.testing.assert_close(y[:, :2], y_plain[:, :2])


def test_postprocess_temporal_reference_rewrites_sub_frame_zero_only():
    from magnet.models.tokens import token_blocks_to_transforms

    x, lay = _random_transform_tokens(2, tm=5)
    y = postprocess_transforms(x, lay, _stats(), context_len=2, temporal=True, compat="reference")
    y_plain = postprocess_transforms(x, lay, _stats(), context_len=2, temporal=False, compat="reference")
    _, sp = token_blocks_to_transforms(y[..., lay.delta], y[..., lay.partners])
    _, sp0 = token_blocks_to_transforms(y_plain[..., lay.delta], y_plain[..., lay.partners])
    changed = (sp - sp0).abs().amax(dim=(0, 2, 3, 4)) > 1e-6
    assert changed.tolist() == [f >= 8 and f % 4 == 0 for f in range(20)]
    # token 2 (frame 8) keeps the anchor: person 0's partner = its value at token 1, sub-frame 0
    torch.testing.assert_close(sp[:, 8, 0, 0], sp0[:, 4, 0, 0], atol=1e-5, rtol=0)


def _planar(S, T, P, seed):
    g = torch.Generator().manual_seed(seed)
    yaw = torch.randn(S, T, P, generator=g) * 0.1
    R = torch.zeros(S, T, P, 3, 3)
    R[..., 0, 0] = yaw.cos()
    R[..., 0, 2] = yaw.sin()
    R[..., 1, 1] = 1
    R[..., 2, 0] = -yaw.sin()
    R[..., 2, 2] = yaw.cos()
    t = torch.randn(S, T, P, 3, generator=g) * 0.1
    t[..., 1] = 0
    return torch.cat([R[..., :, 0], R[..., :, 1], t], dim=-1)


def test_reconstruct_roots_temporal_partner_places_partners_without_drift():
    S, T, P, t0 = 2, 12, 3, 4
    delta, canon_root = _planar(S, T, P, 0), _planar(S, T, P, 1)
    partners = _planar(S, T, P, 2)[..., None, :].expand(S, T, P, P - 1, 9).contiguous()
    gt_canon, gt_root = _planar(1, T, P, 3), _planar(1, T, P, 4)
    known = torch.zeros(T, P, dtype=torch.bool)
    known[:t0] = True
    C, root = reconstruct_roots_fixed(delta, canon_root, partners, gt_canon, gt_root, known, "temporal_partner")
    for t in range(t0, T):
        for j in (1, 2):
            want = tf9_compose(C[:, t, 0], partners[:, t, 0, j - 1])
            torch.testing.assert_close(C[:, t, j], want, atol=1e-5, rtol=0)
        torch.testing.assert_close(C[:, t, 0], tf9_compose(C[:, t - 1, 0], delta[:, t, 0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(root[:, :t0], gt_root[:, :t0].expand(S, -1, -1, -1))
    torch.testing.assert_close(root[:, t0:], tf9_compose(C[:, t0:], canon_root[:, t0:]))
    # temporal: every person integrates its own deltas from the last context frame
    C2, _ = reconstruct_roots_fixed(delta, canon_root, partners, gt_canon, gt_root, known, "temporal")
    torch.testing.assert_close(C2[:, t0, 2], tf9_compose(gt_canon[:, t0 - 1, 2].expand(S, 9), delta[:, t0, 2]))
    # an anchor other than person 0 (a driven person): the others are placed from it
    known2 = known.clone()
    known2[:, 1] = True
    C4, _ = reconstruct_roots_fixed(delta, canon_root, partners, gt_canon, gt_root, known2, "temporal_partner", 1)
    torch.testing.assert_close(C4[:, :, 1], gt_canon[:, :, 1].expand(S, -1, -1))
    torch.testing.assert_close(C4[:, t0 + 2, 2], tf9_compose(C4[:, t0 + 2, 1], partners[:, t0 + 2, 1, 1]))
    # the reference starts at the ground-truth frame t0 itself and ignores its delta, whatever the mode
    C3, _ = reconstruct_roots_reference(delta, canon_root, gt_canon, gt_root, t0)
    torch.testing.assert_close(C3[:, t0], gt_canon[:, t0].expand(S, -1, -1))
    torch.testing.assert_close(C3[:, t0 + 1, 1], tf9_compose(gt_canon[:, t0, 1].expand(S, 9), delta[:, t0 + 1, 1]))


def test_keyframe_roots_pass_every_keyframe_exactly():
    S, T, P = 2, 30, 2
    delta, canon_root = _planar(S, T, P, 0), _planar(S, T, P, 1)
    partners = _planar(S, T, P, 2)[..., None, :].contiguous()
    gt_canon, gt_root = _planar(1, T, P, 3), _planar(1, T, P, 4)
    known = torch.zeros(T, P, dtype=torch.bool)
    known[[5, 17, 29]] = True
    C, root = reconstruct_roots_fixed(delta, canon_root, partners, gt_canon, gt_root, known, "temporal",
                                      keyframes=True)
    for k in (5, 17, 29):
        torch.testing.assert_close(C[:, k], gt_canon[:, k].expand(S, -1, -1), atol=1e-5, rtol=0)
        torch.testing.assert_close(root[:, k], gt_root[:, k].expand(S, -1, -1), atol=1e-5, rtol=0)
    # before the first keyframe: integrated backwards, so the deltas hold exactly
    torch.testing.assert_close(C[:, 5], tf9_compose(C[:, 4], delta[:, 5]), atol=1e-5, rtol=0)
    # between keyframes the path stays continuous: no step larger than the deltas' own plus the spread error
    steps = (C[:, 6:17, :, 6:9] - C[:, 5:16, :, 6:9]).norm(dim=-1)
    assert float(steps.max()) < 1.0


# ------------------------------------------------------------------------------------------ checkpoints


def test_from_checkpoint_accepts_file_run_dir_and_ckpt(sampler_checkpoints, clip2):
    d = sampler_checkpoints[2]
    outs = []
    for path in (d / "dfot.safetensors", d, d / "last.ckpt"):
        s = Sampler.from_checkpoint(path)
        outs.append(s.generate("joint", clip2, num_samples=1, seed=0, **FAST).tokens)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_reference_run_directory_is_imported_on_the_fly(sampler_checkpoints, clip2, tmp_path):
    import yaml
    from safetensors.torch import save_file

    from magnet.models.dfot_import import export_reference_dfot_layout

    s = Sampler.from_checkpoint(sampler_checkpoints[2])
    run = tmp_path / "v0"
    (run / "checkpoints_100").mkdir(parents=True)
    state = {k: v.contiguous() for k, v in export_reference_dfot_layout(s.dfot, s.vqvae).items()}
    save_file(state, str(run / "checkpoints_100" / "model.safetensors"))
    stats_path = tmp_path / "stats.npz"
    s.stats.save(stats_path)
    vq = s.vqvae.config
    cfg = {"model_cfg": {"num_heads": s.dfot.config.num_heads, "dropout_p": s.dfot.config.dropout,
                         "vqvae_cfg": {"d_hidden": vq.d_hidden, "d_latent": vq.d_latent, "depth": vq.depth,
                                       "down_t": vq.down_t, "dilation_growth_rate": vq.dilation_growth,
                                       "code_nb": vq.codebook_size, "r_max": vq.r_max}},
           "mean_std_path": str(stats_path)}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    imported = Sampler.from_checkpoint(run)
    a = s.generate("joint", clip2, num_samples=1, seed=0, **FAST).tokens
    b = imported.generate("joint", clip2, num_samples=1, seed=0, **FAST).tokens
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind, needle", [
    ("missing", "not found"),
    ("vqvae_file", "holds VQ-VAE weights"),
    ("vqvae_dir", "holds a VQ-VAE but no DFoT"),
    ("corrupt", "corrupt"),
    ("vqvae_ckpt", "not 'dfot'"),
    ("empty_dir", "holds no DFoT"),
])
def test_bad_checkpoints_are_one_line_errors(sampler_checkpoints, tmp_path, kind, needle):
    d = sampler_checkpoints[2]
    if kind == "missing":
        path = tmp_path / "nope"
    elif kind == "vqvae_file":
        path = d / "vqvae.safetensors"
    elif kind == "vqvae_dir":
        path = d.parent / "stage1"
    elif kind == "corrupt":
        path = tmp_path / "dfot.safetensors"
        path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!")
    elif kind == "vqvae_ckpt":
        path = tmp_path / "x.ckpt"
        torch.save({"magnet": {"stage": "vqvae"}}, path)
    else:
        path = tmp_path
    with pytest.raises(CheckpointError) as err:
        Sampler.from_checkpoint(path)
    assert needle in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------ requests


@pytest.mark.parametrize("overrides, error, needle", [
    ({"context_seq_len": 30}, ConfigError, "multiple of 4"),
    ({"context_seq_len": 8}, ConfigError, "below the minimum of 16"),
    ({"sampling_steps": 0}, ConfigError, "sampling_steps"),
    ({"sampling_schedule": "zigzag"}, ConfigError, "unknown schedule"),
    ({"context_seq_len": 64}, ConfigError, "fills the whole"),
])
def test_bad_options_are_refused_before_model_work(sampler2, clip2, overrides, error, needle):
    calls = sampler2.network_calls
    with pytest.raises(error, match=needle):
        sampler2.generate("joint", clip2, num_samples=1, **overrides)
    assert sampler2.network_calls == calls


@pytest.mark.parametrize("field, value, needle", [
    ("sampling_num", "abc", "sampling_num must be an integer, got 'abc'"),
    ("sampling_num", 2.5, "sampling_num must be an integer, got 2.5"),
    ("ddim_eta", "x", "ddim_eta must be a number"),
    ("use_temporal_smoothing", "yes", "use_temporal_smoothing must be true or false"),
    ("driven", "0", "driven must be a list of integers"),
    ("keyframes", [0, "end"], "keyframes entry must be an integer"),
    ("cfg_scale_dict", {"clean": "one"}, "cfg_scale_dict.clean must be a number"),
    ("cfg_scale_dict", {}, "cfg_scale_dict must be a non-empty mapping"),
    ("precision", 16, "precision must be a name"),
])
def test_option_types_are_checked_with_one_line(field, value, needle):
    with pytest.raises(ConfigError) as err:
        SamplingConfig(**{field: value})
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_option_values_are_coerced_to_their_types():
    cfg = SamplingConfig(sampling_num=4.0, ddim_eta=0, driven=[1], keyframes=(0, 63.0), cfg_scale_dict={"clean": 1})
    assert cfg.sampling_num == 4 and type(cfg.sampling_num) is int and type(cfg.ddim_eta) is float
    assert cfg.driven == (1,) and cfg.keyframes == (0, 63) and type(cfg.cfg_scale_dict["clean"]) is float


def test_unknown_task_and_short_or_small_clips(sampler2, sampler_checkpoints, synthetic_root, clip2):
    with pytest.raises(ConfigError, match="unknown task"):
        sampler2.generate("dance_battle", clip2)
    with pytest.raises(DataError, match="fewer than the context"):
        sampler2.generate("joint", clip2[:20], num_samples=1)
    _, solo = _clip(synthetic_root, 1)
    with pytest.raises(DataError, match="checkpoint generates 2"):
        sampler2.generate("joint", solo, num_samples=1)


# ------------------------------------------------------------------------------------------ output format


def test_output_arrays_follow_the_reference_format_and_evaluate(sampler2, clip2, tmp_path):
    out = sampler2.generate("joint", clip2, num_samples=3, seed=0, **FAST)
    arrays = out.output_arrays()
    T = out.num_frames
    assert arrays["T_world_root"].shape == (4, T, 2, 7)
    assert arrays["body_joint_rotations"].shape == (4, T, 2, 21, 4)
    assert arrays["betas"].shape == (4, T, 2, 10)
    assert arrays["context_timesteps"] == 32 and arrays["timesteps"] == T and arrays["mode"] == "joint"
    assert arrays["gt_timesteps"] == min(len(clip2), T)
    # row 0 is the ground truth: its roots are the clip's
    lay = PackedLayout(2)
    from magnet.geometry import tf9_to_tf7

    n = min(len(clip2), T)
    np.testing.assert_allclose(arrays["T_world_root"][0, :n],
                               tf9_to_tf7(torch.as_tensor(clip2[:n, :, lay.world_root])).numpy(), atol=1e-5)
    write_output_npz(tmp_path / "clip.npz", **arrays)
    write_inference_config(tmp_path, {"sampling_task": "joint", "smpl_path": None})
    clip = load_output_npz(tmp_path / "clip.npz")
    assert clip.num_samples == 3
    result = evaluate_directory(tmp_path, write=False)
    assert np.isfinite(result["body"]["g"]["solo"]["fd"])
