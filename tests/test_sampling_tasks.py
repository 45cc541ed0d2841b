"""The conditioning tasks (spec 4.4, 4.9): call counts of the shipped settings, driven persons given as ground
truth, keyframes reproduced, the turn-taking exchange, the live streaming API, bad requests, and every task through
the sampling run for two and three persons."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from magnet.data.hdf5 import open_dataset
from magnet.errors import ConfigError, DataError
from magnet.evaluation import evaluate_directory
from magnet.evaluation.io import load_output_npz
from magnet.representation import PackedLayout, world_joints
from magnet.sampling import TASKS, Sampler, SamplingConfig
from magnet.sampling.plans import chain_plan, inbetweening_plan, pp2joint_plan, rolling_plan
from magnet.sampling.run import sample_directory

# ------------------------------------------------------------------------------------------ call counts (no model)

SHIPPED = {  # spec 4.9: transformer calls of the reference's shipped DD100 configs (P = 2, 50 DDIM steps)
    "partner_prediction": (lambda c: rolling_plan("partner_prediction", 2, 420, (0,), 200, 32, 50, compat=c), 342),
    "motion_control_live": (lambda c: rolling_plan("motion_control_live", 2, 420, (0,), 200, 32, 50, compat=c), 342),
    "partner_inpainting": (lambda c: rolling_plan("partner_inpainting", 2, 420, (0,), 150, 32, 50,
                                                  schedule="full_sequence", compat=c), 200),
    "inbetweening": (lambda c: inbetweening_plan(2, (0, 63), 64, 32, 50, compat=c), 65),
    "agentic_turn_taking": (lambda c: chain_plan("agentic_turn_taking", 2, 200, 32, 50, subseq_len=4,
                                                 ar_seq_stride=8, compat=c), 903 * 2),
    "agentic_sync": (lambda c: chain_plan("agentic_sync", 2, 200, 32, 50, subseq_len=4, ar_seq_stride=8,
                                          compat=c), 903 * 3),
    "pp2joint": (lambda c: pp2joint_plan(2, 840, (0,), 400, 32, 50, subseq_len=1, ar_seq_stride=8, compat=c), 2883),
}
FIXED_CALLS = {"partner_prediction": 336, "motion_control_live": 336, "partner_inpainting": 200, "inbetweening": 64,
               "agentic_turn_taking": 1806, "agentic_sync": 1806, "pp2joint": 2879}


@pytest.mark.parametrize("task", sorted(SHIPPED))
def test_reference_call_counts_of_the_shipped_settings(task):
    build, calls = SHIPPED[task]
    plan = build("reference")
    assert plan.num_calls == calls
    assert build("fixed").num_calls == FIXED_CALLS[task]          # the README's table


def test_two_chain_steps_and_the_turn_taking_copies():
    ref = chain_plan("agentic_turn_taking", 2, 200, 32, 50, subseq_len=4, ar_seq_stride=8, compat="reference")
    fix = chain_plan("agentic_turn_taking", 2, 200, 32, 50, subseq_len=4, ar_seq_stride=8, compat="fixed")
    assert ref.num_steps == fix.num_steps == 903
    first_a = (ref.chain == 0) & (ref.window_index == 0)
    # the reference's copies land in the context region (its index counts from the generated region)
    p = ref.pointer[first_a]
    assert (p[p >= 0] < 16).all()
    # fixed: the newest clean token of the window, so B continues from A's latest token at every step
    fa = (fix.chain == 0)
    for n in np.nonzero(fa)[0][::97]:
        clean = np.nonzero(fix.levels[n].reshape(-1) == -1)[0]
        assert fix.pointer[n] == clean.max()
        b = n + 1
        assert fix.chain[b] == 1 and fix.pointer[b] == fix.pointer[n] + 1
        assert fix.levels[b].reshape(-1)[fix.pointer[n]] == -1      # B takes A's token as clean context
    sync_ref = chain_plan("agentic_sync", 2, 200, 32, 50, subseq_len=4, ar_seq_stride=8, compat="reference")
    assert (sync_ref.chain == 2).sum() == 903                        # one discarded call per step


# ------------------------------------------------------------------------------------------ with a model


def _clip(root, persons, min_frames=0, split=None):
    path = root / "synthetic" / "synthetic_dataset.hdf5"
    with open_dataset(path) as f:
        for s in ([split] if split else ["train", "val", "test"]):
            for name in f.sequences(s):
                T, P, _ = f.shape(s, name)
                if P == persons and T >= min_frames:
                    return f.read(s, name)
    raise AssertionError(f"no {persons}-person clip of {min_frames}+ frames")


@pytest.fixture(scope="module")
def s2(sampler_checkpoints):
    return Sampler.from_checkpoint(sampler_checkpoints[2])


@pytest.fixture(scope="module")
def s3(sampler_checkpoints):
    return Sampler.from_checkpoint(sampler_checkpoints[3])


@pytest.fixture(scope="module")
def clip2(synthetic_root):
    return _clip(synthetic_root, 2, 128)


FAST = {"sampling_steps": 3, "num_samples": 2, "seed": 0}


@pytest.mark.parametrize("task", ["partner_prediction", "motion_control_live", "partner_inpainting"])
def test_driven_person_is_output_as_its_ground_truth(s2, clip2, task):
    out = s2.generate(task, clip2, sampling_seq_len=128, **FAST)
    T = min(128, len(clip2))
    gt = torch.as_tensor(clip2[:T, 0]).float()
    assert torch.equal(out.motion[0, :T, 0], gt) and torch.equal(out.motion[1, :T, 0], gt)
    assert not torch.equal(out.motion[0, 32:T, 1], torch.as_tensor(clip2[32:T, 1]).float())
    # the generated person is placed from the driven one's ground truth (temporal_partner), not integrated alone
    assert bool(torch.isfinite(out.joints).all())


def test_reference_partner_prediction_ends_on_the_ground_truth_tokens(s2, clip2):
    out = s2.generate("partner_prediction", clip2, sampling_seq_len=128, compat="reference", **FAST)
    t_gt = out.plan.meta["gt_latent"]
    gt_tokens = s2.encode(s2.prepare_clip(clip2)[None, : t_gt * 4])
    # driven person A: exactly the ground truth in token space (clean at the last step of every chunk)
    assert torch.equal(out.tokens[:, :, 0], gt_tokens[:, :, 0].expand(2, -1, -1))


@pytest.mark.parametrize("driven", [[0], [1]])
def test_driven_slot_is_a_parameter(s2, clip2, driven):
    out = s2.generate("motion_control_live", clip2, sampling_seq_len=96, driven=tuple(driven), **FAST)
    d = driven[0]
    assert torch.equal(out.motion[0, :96, d], torch.as_tensor(clip2[:96, d]).float())
    other = 1 - d
    assert not torch.equal(out.motion[0, 40:96, other], torch.as_tensor(clip2[40:96, other]).float())


def test_three_persons_two_driven_and_one_driven(s3, synthetic_root):
    clip = _clip(synthetic_root, 3, 64)
    for driven in ((0, 1), (0,)):
        out = s3.generate("partner_prediction", clip, sampling_seq_len=64, driven=driven, **FAST)
        for d in driven:
            assert torch.equal(out.motion[0, :64, d], torch.as_tensor(clip[:64, d]).float())
        gen = [p for p in range(3) if p not in driven]
        assert out.motion.shape[2] == 3 and not torch.equal(out.motion[0, 40:64, gen[0]],
                                                            torch.as_tensor(clip[40:64, gen[0]]).float())


def test_inbetweening_reproduces_its_keyframes_over_several_windows(s2, synthetic_root):
    clip = _clip(synthetic_root, 2, 132)
    keys = (5, 70, 126)
    out = s2.generate("inbetweening", clip, sampling_seq_len=132, keyframes=keys, **FAST)
    assert out.num_frames == 132 and out.plan.num_windows >= 3
    gt = torch.as_tensor(clip).float()
    gt_joints = world_joints(gt[list(keys)], s2.body_model)
    for i, k in enumerate(keys):
        assert torch.equal(out.motion[0, k], gt[k])                  # a keyframe at frame f constrains frame f
        torch.testing.assert_close(out.joints[1, k], gt_joints[i], atol=1e-5, rtol=0)
    # the reference: one window, keyframe 63 read from frames 63-66
    ref = s2.generate("inbetweening", clip, sampling_seq_len=64, keyframes=(0, 63), compat="reference", **FAST)
    assert ref.plan.num_calls == 3 + 16 - 1 and ref.num_frames == 64       # N + 16 groups - 1 (65 for N = 50)
    with pytest.raises(ConfigError, match="exactly one 64-frame window"):
        s2.generate("inbetweening", clip, sampling_seq_len=132, keyframes=keys, compat="reference", **FAST)


@pytest.mark.parametrize("compat", ["fixed", "reference"])
def test_turn_taking_copies_tokens_between_the_chains(s2, clip2, compat, monkeypatch):
    calls = {}
    real = Sampler._call

    def spy(self, win, n, *args, **kw):
        new, x0 = real(self, win, n, *args, **kw)
        calls[n] = (win.clone(), new.clone())
        return new, x0

    monkeypatch.setattr(Sampler, "_call", spy)
    out = s2.generate("agentic_turn_taking", clip2, sampling_seq_len=96, sampling_subseq_len=4, ar_seq_stride=8,
                      compat=compat, **FAST)
    plan = out.plan
    checked = 0
    for na in np.nonzero(plan.chain == 0)[0]:
        nb = na + 1
        p = int(plan.pointer[na])
        if p < 0 or plan.window_index[nb] != plan.window_index[na]:
            continue
        win_a, new_a = calls[na]
        a_after = torch.where(torch.as_tensor(plan.context[na])[None, :, :, None], win_a, new_a)
        win_b, _ = calls[nb]
        S, tm, P, W = win_b.shape
        # B's input holds A's freshly stepped token p
        assert torch.equal(win_b.reshape(S, tm * P, W)[:, p], a_after.reshape(S, tm * P, W)[:, p])
        nxt = na + 2
        q = int(plan.pointer[nb])
        if nxt < plan.num_calls and plan.window_index[nxt] == plan.window_index[na] and 0 <= q < tm * P:
            win_b2, new_b = calls[nb]
            b_after = torch.where(torch.as_tensor(plan.context[nb])[None, :, :, None], win_b2, new_b)
            win_a_next, _ = calls[nxt]
            # A's next input holds B's token q = p + 1
            assert torch.equal(win_a_next.reshape(S, tm * P, W)[:, q], b_after.reshape(S, tm * P, W)[:, q])
            checked += 1
    assert checked >= 10
    assert out.network_calls == plan.num_calls


def test_sync_reference_pays_a_discarded_call(s2, clip2):
    kw = {"sampling_seq_len": 96, "sampling_subseq_len": 4, "ar_seq_stride": 8, **FAST}
    fixed = s2.generate("agentic_sync", clip2, **kw)
    ref = s2.generate("agentic_sync", clip2, compat="reference", **kw)
    assert ref.network_calls == fixed.network_calls * 3 // 2


def test_pp2joint_continues_from_the_partner_prediction(s2, clip2):
    out = s2.generate("pp2joint", clip2, sampling_seq_len=96, **FAST)
    arrays = out.output_arrays()
    assert arrays["joint_phase_start_timesteps"] == 96
    assert out.num_frames == (96 // 4 - 8 + 24) * 4 + 32 - 32 or out.num_frames >= 96 + 64
    # phase 1's driven person is its ground truth
    assert torch.equal(out.motion[0, :96, 0], torch.as_tensor(clip2[:96, 0]).float())


# ------------------------------------------------------------------------------------------ live API


def test_live_session_equals_the_batch_task(s2, clip2):
    kw = {"sampling_steps": 3}
    T = 128
    plan = s2.plan(s2.config("motion_control_live", sampling_seq_len=T, **kw), len(clip2))
    noise = torch.randn(1, plan.total_latent, 2, s2.token_layout.width, generator=torch.Generator().manual_seed(1))
    batch = s2.generate("motion_control_live", clip2, num_samples=1, noise=noise, sampling_seq_len=T, **kw)
    session = s2.live(clip2[:32], driven=(0,), num_samples=1, noise=noise, **kw)
    chunks = []
    t = 32
    while t < T:
        n = min(32, T - t)
        chunks.append(session.push(clip2[t:t + n]))
        t += n
    assert [c.start for c in chunks] == [32, 64, 96] and all(c.motion.shape[1] == 32 for c in chunks)
    assert torch.equal(session.tokens, batch.tokens)                  # the batch task is this loop
    live = torch.cat([c.motion for c in chunks], dim=1)
    assert torch.equal(live[:, :, 0], torch.as_tensor(clip2[32:T, 0]).float().expand(1, -1, -1))
    lay = PackedLayout(2)
    gap = (live[:, :, 1, lay.world_root][..., 6:] - batch.motion[:, 32:T, 1, lay.world_root][..., 6:]).norm(dim=-1)
    assert float(gap.max()) < 0.1                                     # per-window decoding vs one whole decode
    with pytest.raises(DataError, match="multiples of 4"):
        session.push(clip2[:6])


def test_live_waits_for_a_full_first_window(s2, clip2):
    session = s2.live(clip2[:32], sampling_steps=2)
    assert session.push(clip2[32:48]) is None                         # 48 frames: not yet one window
    chunk = session.push(clip2[48:64])
    assert chunk.start == 32 and chunk.motion.shape[1] == 32


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("task, overrides, error, needle", [
    ("partner_prediction", {"driven": (2,)}, ConfigError, "driven person 2 is out of range"),
    ("motion_control_live", {"driven": (0, 1)}, ConfigError, "leaves no person to generate"),
    ("inbetweening", {"keyframes": (0, 80), "sampling_seq_len": 64}, ConfigError, "outside the sequence"),
    ("inbetweening", {"keyframes": (40, 10)}, ConfigError, "must be sorted"),
    ("partner_prediction", {"context_seq_len": 2}, ConfigError, "multiple of 4"),
])
def test_bad_task_requests_fail_before_model_work(s2, clip2, task, overrides, error, needle):
    before = s2.network_calls
    with pytest.raises(error, match=needle):
        s2.generate(task, clip2, num_samples=1, sampling_steps=2, **overrides)
    assert s2.network_calls == before


def test_partner_tasks_refuse_a_one_person_checkpoint_and_short_clips(sampler_checkpoints, synthetic_root, s2):
    solo = Sampler.from_checkpoint(sampler_checkpoints[1])
    clip1 = _clip(synthetic_root, 1, 64)
    for task in ("partner_prediction", "agentic_turn_taking", "pp2joint"):
        with pytest.raises(ConfigError, match="needs a partner"):
            solo.generate(task, clip1, num_samples=1, sampling_steps=2)
    short = _clip(synthetic_root, 2, 64)[:40]
    with pytest.raises(DataError, match="at least one 64-frame window"):
        s2.generate("partner_prediction", short, num_samples=1, sampling_steps=2)
    with pytest.raises(DataError, match="fewer than the context"):
        s2.generate("joint", short[:24], num_samples=1, sampling_steps=2)


# ------------------------------------------------------------------------------------------ every task, sample run


@pytest.mark.parametrize("task", TASKS)
def test_every_task_runs_and_evaluates(sampler_checkpoints, synthetic_root, tmp_path, task):
    cfg = SamplingConfig.for_task(task, sampling_steps=2, sampling_num=2,
                                  **({"sampling_seq_len": 96} if task != "inbetweening" else {}))
    out = tmp_path / task
    run = sample_directory(sampler_checkpoints[2], out, cfg, datasets=[{"name": "synthetic",
                                                                        "dir": str(synthetic_root / "synthetic")}],
                           split="train", max_clips=1, progress=False)
    assert len(run.written) == 1
    clip = load_output_npz(out / f"{run.written[0]}.npz")
    assert clip.num_samples == 2 and clip.num_persons == 2 and clip.mode == task
    if task in ("partner_prediction", "inbetweening"):  # evaluation is tested at length elsewhere; two cases here
        result = evaluate_directory(out, write=False, baselines=False)
        assert np.isfinite(result["body"]["g"]["solo"]["fd"])
        if task == "partner_prediction":
            assert "driven 0" in result["meta"]["evaluated_persons"]
