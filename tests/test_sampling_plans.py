"""Noise-level plans (spec 4.1, 4.2): worked examples, per-task call counts and the reference's recorded levels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from magnet.errors import ConfigError
from magnet.sampling.plans import (
    Plan,
    ar_window_matrix,
    index_to_level,
    joint_plan,
    prune_rows,
    rolling_layout,
    rolling_plan,
    schedule_matrix,
)

TRACES = Path(__file__).resolve().parent / "data" / "reference_traces"


def _trace(name):
    path = TRACES / f"{name}.npz"
    if not path.is_file():
        pytest.skip(f"reference trace {path} not available")
    return np.load(path)


# ------------------------------------------------------------------------------------------ building blocks


def test_index_to_level_50_steps_is_20i_minus_1():
    lv = index_to_level(50)
    assert lv.shape == (51,)
    assert np.array_equal(lv, 20 * np.arange(51) - 1)
    assert lv[0] == -1 and lv[-1] == 999


def test_index_to_level_any_steps_is_monotone_from_clean_to_noise():
    for n in range(1, 1001):
        lv = index_to_level(n)
        assert lv.shape == (n + 1,)
        assert lv[0] == -1 and lv[-1] == 999
        assert np.all(np.diff(lv) > 0), n
    # float32 linspace as the reference computes it: with 26 steps index 13 is level 498 (float64 would give 499)
    assert index_to_level(26)[13] != int(np.trunc(np.linspace(-1, 999, 27)[13]))


@pytest.mark.parametrize("n", [0, -3, 1001])
def test_bad_sampling_steps_rejected(n):
    with pytest.raises(ConfigError, match="sampling_steps"):
        index_to_level(n)


def test_full_sequence_moves_every_token_together():
    M = schedule_matrix("full_sequence", 8, 2, 5)
    assert M.shape == (6, 8)
    assert np.array_equal(M[:, 0], [5, 4, 3, 2, 1, 0])
    assert (M == M[:, :1]).all()


def test_pyramid_groups_trail_by_one_step():
    M = schedule_matrix("causal_uncertainty", 6, 2, 4)
    # 3 groups: rows N + floor(L / g) = 7
    assert M.shape == (7, 6)
    assert np.array_equal(M[:, 0], [4, 3, 2, 1, 0, 0, 0])
    assert np.array_equal(M[:, 2], [4, 4, 3, 2, 1, 0, 0])
    assert np.array_equal(M[:, 4], [4, 4, 4, 3, 2, 1, 0])
    assert np.array_equal(M[:, 0], M[:, 1])  # a group shares its level


def test_incomplete_last_group_reaches_clean_only_when_fixed():
    # 7 tokens in groups of 3: the last group has one token; floor(7/3) = 2 rows short of it reaching 0
    ref = schedule_matrix("causal_uncertainty", 7, 3, 4, compat="reference")
    fixed = schedule_matrix("causal_uncertainty", 7, 3, 4, compat="fixed")
    assert ref.shape == (6, 7) and fixed.shape == (7, 7)
    assert ref[-1, -1] == 1                   # the reference's last group never gets clean
    assert (fixed[-1] == 0).all()
    assert np.array_equal(fixed[:-1], ref)


def test_autoregressive_groups_trail_by_d_steps():
    N, a = 10, 0.75
    d = N - int(N * (1 - a))                  # 8
    M = schedule_matrix("autoregressive", 3, 1, N, offset_proportion=a)
    assert M.shape == (N + 2 * d + 1, 3)
    start = [int(np.argmax(M[:, t] < N)) for t in range(3)]
    assert np.diff(start).tolist() == [d, d]
    assert (M[-1] == 0).all()


def test_prune_keeps_the_last_of_identical_leading_rows():
    M = np.array([[5, 5], [5, 5], [5, 5], [4, 5], [3, 4]])
    assert np.array_equal(prune_rows(M), M[2:])
    assert np.array_equal(prune_rows(M[3:]), M[3:])


def test_ar_window_matrix_row_zero_edge_case():
    M = np.array([[3, 2], [2, 1], [1, 0], [0, 0]])  # the newest token is already below noise in row 0
    assert np.array_equal(ar_window_matrix(M, 1, 3, "reference"), [[0, 0]])   # the reference keeps the last row
    assert np.array_equal(ar_window_matrix(M, 1, 3, "fixed"), [[0, 2], [0, 1], [0, 0], [0, 0]])


# ------------------------------------------------------------------------------------ spec 4.2 worked examples


def test_dd100_joint_worked_example():
    p = joint_plan(2, 200, 32, 50, "causal_uncertainty", subseq_len=16, ar_seq_stride=16, compat="reference")
    calls = p.window_calls()
    assert len(calls[0]) == 50                                  # 51 rows, 50 steps
    assert len(calls) == 10 and all(len(c) == 50 for c in calls[1:])   # AR matrix: 51 rows
    assert p.num_calls == 500 and p.total_latent == 52 and p.total_frames == 208
    ar = p.levels[calls[1]]
    assert (ar[:, :12] == -1).all()                             # everything but the newest 4 latent frames clean
    assert (ar[0, 12:] == 999).all() and (p.next_levels[calls[1][-1]] == -1).all()


def test_partner_prediction_worked_example_57_steps_per_chunk():
    p = rolling_plan("partner_prediction", 2, 420, (0,), 200, 32, 50, compat="reference")
    assert p.num_windows == 6 and p.num_calls == 342
    assert all(len(c) == 57 for c in p.window_calls())
    first = p.levels[:, 8:, :][: 57]
    # the first generated latent frame starts decreasing at the first step, each later one one step behind
    starts = [int(np.argmax(p.next_levels[:57, t, 1] < 999)) for t in range(8, 16)]
    assert starts == list(range(8))
    assert (first[:, :, 0] == first[:, :, 1]).all()             # both persons share the schedule


def test_trio_worked_example_51_and_50_steps():
    p = joint_plan(3, 300, 32, 50, "causal_uncertainty", subseq_len=4, ar_seq_stride=16, compat="reference")
    calls = p.window_calls()
    assert len(calls[0]) == 51 and all(len(c) == 50 for c in calls[1:])
    # meta_trio: 300 frames -> ceil((75 - 16) / 4) = 15 AR windows: 51 + 15 x 50 = 801 steps (spec 4.9)
    assert p.num_calls == 801


@pytest.mark.parametrize("task, seq, schedule, expected", [
    ("partner_prediction", 200, "causal_uncertainty", 342),
    ("motion_control_live", 200, "causal_uncertainty", 342),
    ("partner_inpainting", 150, "full_sequence", 200),
])
def test_rolling_task_call_counts_of_the_shipped_configs(task, seq, schedule, expected):
    p = rolling_plan(task, 2, 420, (0,), seq, 32, 50, schedule=schedule, compat="reference")
    assert p.num_calls == expected


def test_joint_subseq4_call_count():
    p = joint_plan(2, 200, 32, 50, subseq_len=4, ar_seq_stride=8, compat="reference")
    assert p.num_calls == 51 + 50 * 17


# ------------------------------------------------------------------------------------------ reference traces

FIELDS = [("levels", "levels"), ("next_levels", "next_levels"), ("context", "ctx_mask"),
          ("window_start", "win_start_latent"), ("row", "row"), ("window_index", "iter"), ("context_len", "Tcc")]


@pytest.mark.parametrize("name, kw", [
    ("dd100", {"subseq_len": 16, "ar_seq_stride": 16}),
    ("dd100_joint_subseq4", {"subseq_len": 4, "ar_seq_stride": 8}),
])
def test_joint_plan_equals_the_reference_trace_call_by_call(name, kw):
    t = _trace(name)
    p = joint_plan(2, 200, 32, 50, "causal_uncertainty", compat="reference", **kw)
    assert p.num_calls == int(t["n_transformer_calls"]) == int(t["n_guidance_steps"])
    for ours, theirs in FIELDS:
        assert np.array_equal(getattr(p, ours), t[theirs]), ours
    assert np.array_equal(p.context_len * 2, t["ctx_token_len"])
    assert int(t["guidance_total"][0]) == p.num_steps
    assert np.array_equal(t["guidance_counter"], np.arange(p.num_calls))
    assert not t["has_inject_mask"].any() and not p.inject.any()


def test_partner_prediction_plan_equals_the_reference_trace():
    t = _trace("dd100_partner_prediction")
    p = rolling_plan("partner_prediction", 2, 420, (0,), 200, 32, 50, compat="reference")
    for ours, theirs in FIELDS + [("inject", "inject_mask")]:
        assert np.array_equal(getattr(p, ours), t[theirs]), ours
    assert int(t["guidance_total"][0]) == p.num_steps == 342


@pytest.mark.parametrize("name, kw", [
    ("dd100", {"subseq_len": 16, "ar_seq_stride": 16}),
    ("dd100_joint_subseq4", {"subseq_len": 4, "ar_seq_stride": 8}),
])
def test_fixed_joint_plan_feeds_the_same_levels(name, kw):
    """The fixed mode changes the context bookkeeping, not the levels of these configurations."""
    t = _trace(name)
    p = joint_plan(2, 200, 32, 50, "causal_uncertainty", compat="fixed", **kw)
    assert np.array_equal(p.levels, t["levels"]) and np.array_equal(p.next_levels, t["next_levels"])
    assert np.array_equal(p.context, p.levels == -1)
    # AR windows: the context length is the window minus the stride in latent frames (the reference: in tokens)
    stride = kw["ar_seq_stride"] // 4
    assert (p.context_len[p.window_index > 0] == 16 - stride).all()


# ------------------------------------------------------------------------------------------ invariants


@pytest.mark.parametrize("schedule", ["full_sequence", "causal_uncertainty", "autoregressive"])
@pytest.mark.parametrize("P", [1, 2, 3, 4])
@pytest.mark.parametrize("compat", ["fixed", "reference"])
def test_joint_plan_invariants(schedule, P, compat):
    p = joint_plan(P, 120, 32, 10, schedule, subseq_len=3, ar_seq_stride=8, compat=compat)
    assert p.levels.shape == (p.num_calls, 16, P)
    assert (p.next_levels <= p.levels).all()                    # levels never go up
    assert (p.levels[:, :8][p.window_index == 0] == -1).all()   # the ground-truth context is clean
    assert (p.next_levels >= -1).all() and (p.levels <= 999).all()
    for calls in p.window_calls():
        assert np.array_equal(p.levels[calls[1:]], p.next_levels[calls[:-1]])   # consecutive rows chain
        if compat == "fixed":
            assert (p.next_levels[calls[-1]] == -1).all()        # every window ends clean
    assert p.total_latent >= 120 // 4


def test_plan_roundtrips_through_npz(tmp_path):
    p = rolling_plan("partner_prediction", 2, 300, (0,), 200, 32, 20)
    path = p.save(tmp_path / "plan.npz")
    q = Plan.load(path)
    assert q.num_calls == p.num_calls and q.task == p.task and q.total_latent == p.total_latent
    for k in ("levels", "next_levels", "context", "inject", "driven", "window_start"):
        assert np.array_equal(getattr(q, k), getattr(p, k))
    with np.load(path) as d:
        assert d["levels"].dtype == np.int16 and int(d["num_calls"]) == p.num_calls


def test_fixed_rolling_last_chunk_ends_at_the_clip_end():
    t_gt, chunks = rolling_layout(200, 200, 8, 16, compat="fixed")
    assert t_gt == 50
    assert chunks[-1] == (34, 14)                                # ends at latent 50, context up to the previous end
    t_gt, chunks = rolling_layout(200, 200, 8, 16, compat="reference")
    assert chunks[-1] == (40, 8)                                 # runs 6 latent frames past the clip (truncated)
