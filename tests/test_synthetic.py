"""Tests for magnet.data.synthetic: procedural gait and interaction scenarios, and the cached dataset build."""

from __future__ import annotations

import itertools
import json
import os

import h5py
import numpy as np
import pytest
import torch

from magnet.body import load_body_model
from magnet.data import synthetic as S
from magnet.data.synthetic import SCENARIOS, clip_plan, ensure_synthetic_dataset, generate_sequence
from magnet.data.synthetic import dataset as SD
from magnet.errors import ConfigError, DataError
from magnet.geometry import axis_angle_to_matrix, geodesic_angle

_MIRROR_AA = np.array([1.0, -1.0, -1.0])  # left/right mirror of an axis-angle (x, y, z) -> (x, -y, -z)


@pytest.fixture(scope="module")
def body():
    return load_body_model(None, warn=False)


_CACHE: dict = {}


def gen(scenario, seed, num_frames=None, num_persons=None):
    key = (scenario, seed, num_frames, num_persons)
    if key not in _CACHE:
        _CACHE[key] = generate_sequence(scenario, seed, num_frames, num_persons)
    return _CACHE[key]


def fk(seq, body):
    """World joints ``[P, T, 22, 3]`` and pelvis rotations ``[P, T, 3, 3]`` of a RawSequence (float64)."""
    P, T = seq.num_persons, seq.num_frames
    local = axis_angle_to_matrix(torch.from_numpy(seq.body_pose).double())
    root_R = axis_angle_to_matrix(torch.from_numpy(seq.global_orient).double())
    betas = torch.from_numpy(seq.betas).double()
    root_pos = torch.from_numpy(seq.transl).double() + body.rest_joints(betas)[:, None, 0]
    pos, _ = body.forward_kinematics(local, root_R, root_pos, betas[:, None].expand(P, T, 10))
    return pos.numpy(), root_R.numpy()


def horizontal_speed(x):
    """Speed ``[..., T-1]`` (m/s at 30 fps) of horizontal positions ``x[..., T, 3]``."""
    return np.linalg.norm(np.diff(x[..., [0, 2]], axis=-2), axis=-1) * 30.0


def pelvis_distance(pos, a=0, b=1):
    return np.linalg.norm(pos[a, :, 0, [0, 2]] - pos[b, :, 0, [0, 2]], axis=0)


# ---------------------------------------------------------------------------------------------- basics


def test_determinism_and_seed_dependence():
    a = generate_sequence("lead_follow", 7, 120)
    b = generate_sequence("lead_follow", 7, 120)
    for key in ("betas", "global_orient", "body_pose", "hand_pose", "transl"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert a.meta == b.meta
    c = generate_sequence("lead_follow", 8, 120)
    assert not np.array_equal(a.transl[0], c.transl[0]) and not np.array_equal(a.betas[0], c.betas[0])
    # another scenario with the same seed is another clip
    d = generate_sequence("mirror", 7, 120)
    assert not np.allclose(d.body_pose[0, :, :], a.body_pose[0, :, :])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_shapes_values_and_person_counts(scenario):
    allowed = {
        "mirror": {2},
        "lead_follow": {1, 2},
        "turn_taking": {2},
        "approach_greet": {2},
        "circle_dance": {3, 4},
    }[scenario]
    for seed in range(3):
        seq = gen(scenario, seed)
        P, T = seq.num_persons, seq.num_frames
        assert P in allowed
        assert S.DEFAULT_FRAMES[0] <= T <= S.DEFAULT_FRAMES[1]
        assert seq.betas.shape == (P, 10) and seq.global_orient.shape == (P, T, 3)
        assert seq.body_pose.shape == (P, T, 21, 3) and seq.hand_pose.shape == (P, T, 30, 3)
        assert seq.transl.shape == (P, T, 3)
        for arr in (seq.betas, seq.global_orient, seq.body_pose, seq.hand_pose, seq.transl):
            assert arr.dtype == np.float32 and np.isfinite(arr).all()
        assert seq.fps == 30.0 and seq.up_axis == "y" and seq.meta["scenario"] == scenario
        assert np.abs(seq.betas[:, 0]).max() <= 2.0
        assert seq.meta["ik_max_error_m"] < 1e-9
        assert np.linalg.norm(seq.body_pose, axis=-1).max() < np.pi
        seq.validate()
    # the frame count is honoured
    assert gen(scenario, 0, 64).num_frames == 64


def test_default_person_counts_cover_solo_and_groups():
    lf = {generate_sequence("lead_follow", s, 40).num_persons for s in range(16)}
    cd = {generate_sequence("circle_dance", s, 40).num_persons for s in range(12)}
    assert lf == {1, 2} and cd == {3, 4}


def test_bad_arguments_raise_config_errors():
    with pytest.raises(ConfigError, match="unknown synthetic scenario 'tango'"):
        generate_sequence("tango", 0)
    with pytest.raises(ConfigError, match="supports \\[2\\] persons"):
        generate_sequence("mirror", 0, 60, num_persons=3)
    with pytest.raises(ConfigError, match="num_frames"):
        generate_sequence("mirror", 0, 10)
    with pytest.raises(ConfigError, match="num_clips"):
        clip_plan(0)
    with pytest.raises(ConfigError, match="frames"):
        clip_plan(5, 0, (90, 60))


def test_numpy_axis_angle_matches_geometry():
    rng = np.random.default_rng(0)
    aa = rng.normal(size=(2000, 3))
    aa *= rng.uniform(0.0, np.pi, (2000, 1)) / np.linalg.norm(aa, axis=-1, keepdims=True)
    aa[0] = 0.0
    aa[1] = [np.pi, 0.0, 0.0]
    aa[2] = [0.0, 0.0, 1e-9]
    R = axis_angle_to_matrix(torch.from_numpy(aa)).numpy()
    out = S.to_axis_angle(R)
    back = axis_angle_to_matrix(torch.from_numpy(out)).numpy()
    np.testing.assert_allclose(back, R, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), np.linalg.norm(aa, axis=-1), atol=1e-9)
    np.testing.assert_array_equal(out[0], 0.0)


# ---------------------------------------------------------------------------------------------- gait


@pytest.mark.parametrize(
    "scenario,seed", [("lead_follow", 0), ("lead_follow", 2), ("approach_greet", 1), ("circle_dance", 1)]
)
def test_stance_foot_is_planted_while_walking(body, scenario, seed):
    seq = gen(scenario, seed)
    pos, _ = fk(seq, body)
    feet = pos[:, :, [10, 11]]  # [P, T, 2, 3]
    heights = feet[..., 1]
    lowest = heights.argmin(-1)  # [P, T]
    foot_speed = horizontal_speed(np.moveaxis(feet, 2, 1))  # [P, 2, T-1]
    lowest_speed = np.take_along_axis(foot_speed, lowest[:, None, 1:], 1)[:, 0]  # [P, T-1]
    pelvis_speed = horizontal_speed(pos[:, :, 0])
    walking = pelvis_speed > 0.5
    assert walking.mean() > 0.15
    assert pelvis_speed[walking].mean() > 0.6
    assert lowest_speed[walking].mean() < 0.01  # ground truth: no foot skating (float32 noise only)
    assert np.percentile(lowest_speed[walking], 99) < 0.03
    # the lowest foot joint stays at the planted height, the swing foot lifts off
    low = heights.min(-1)
    assert abs(low.mean() - S.TOE_HEIGHT) < 1e-3 and low.min() > S.TOE_HEIGHT - 0.02
    assert low.max() < S.TOE_HEIGHT + 0.005
    assert heights.max() > S.TOE_HEIGHT + 0.04
    # the pelvis stays at a plausible walking height: legs bend, never collapse
    assert pos[:, :, 0, 1].min() > 0.6 and pos[:, :, 0, 1].max() < 1.15
    # knees flex during the gait but not beyond 90 degrees
    knee = np.linalg.norm(seq.body_pose[:, :, [3, 4]], axis=-1)
    assert knee[:, 1:][walking].max() > 0.4 and knee.max() < np.pi / 2


@pytest.mark.parametrize("scenario", ["lead_follow", "approach_greet", "circle_dance"])
def test_ground_truth_foot_sliding_metric_is_zero(body, scenario):
    """The evaluation's own foot-sliding test (fixed mode: contact below floor + 5 cm, sliding above 0.05 m/s)
    finds no sliding on the generated walking: a foot near the floor never moves horizontally."""
    from magnet.metrics import foot_sliding

    for seed in range(3):
        seq = gen(scenario, seed)
        pos, _ = fk(seq, body)  # [P, T, 22, 3], feet at TOE_HEIGHT when planted (floor at 0)
        joints = torch.from_numpy(pos).permute(1, 0, 2, 3)[None]  # [S=1, T, P, 22, 3]
        res = foot_sliding(joints, foot_indices=(10, 11), mode="fixed")
        assert res["foot_sliding_ratio"] == 0.0, (scenario, seed, res)
        # the swing foot does leave the contact band, so the test is not vacuous
        heights = pos[:, :, [10, 11], 1]
        assert (heights > 0.05).mean() > 0.05


def test_ik_uses_each_persons_bone_lengths(body):
    seq = gen("lead_follow", 0)
    assert seq.num_persons == 2 and abs(seq.betas[0, 0] - seq.betas[1, 0]) > 0.3
    pos, _ = fk(seq, body)
    swapped = seq.__class__(**{**seq.__dict__, "betas": seq.betas[::-1].copy()})
    wrong, _ = fk(swapped, body)
    walking = horizontal_speed(pos[:, :, 0]) > 0.5

    def skate(p):
        feet = p[:, :, [10, 11]]
        low = feet[..., 1].argmin(-1)
        sp = np.take_along_axis(horizontal_speed(np.moveaxis(feet, 2, 1)), low[:, None, 1:], 1)[:, 0]
        return sp[walking].mean()

    assert skate(pos) < 0.002 and skate(wrong) > 0.02


def test_standing_idle_keeps_both_feet_still(body):
    seq = gen("turn_taking", 1)
    pos, _ = fk(seq, body)
    feet = pos[:, :, [10, 11]]
    assert horizontal_speed(np.moveaxis(feet, 2, 1)).max() < 0.01
    np.testing.assert_allclose(feet[..., 1], S.TOE_HEIGHT, atol=2e-4)
    # idle is not frozen: the pelvis sways and breathes a little
    sway = pos[:, :, 0, [0, 2]].std(1)
    assert (sway > 0.002).all() and (sway < 0.05).all()


# ---------------------------------------------------------------------------------------------- scenarios


def test_lead_follow_keeps_about_one_and_a_half_metres_on_the_leaders_path(body):
    checked = 0
    for seed in range(8):
        seq = gen("lead_follow", seed)
        if seq.num_persons != 2:
            continue
        checked += 1
        pos, _ = fk(seq, body)
        d = pelvis_distance(pos)
        assert abs(d.mean() - 1.5) < 0.4 and d.min() > 0.6
        lag = round(seq.meta["follow_lag_s"] * 30)
        assert 15 <= lag <= 30
        # the follower walks where the leader walked: each follower position lies on the leader's track
        lead = pos[0, :, 0, [0, 2]].T
        foll = pos[1, :, 0, [0, 2]].T
        # (once past the leader's starting point; before that it walks up behind it)
        moved = np.linalg.norm(foll - foll[0], axis=-1) > seq.meta["follow_offset_m"] + 0.3
        gap = np.linalg.norm(foll[moved][:, None] - lead[None], axis=-1).min(1)
        assert gap.max() < 0.1
    assert checked >= 3


def test_mirror_partner_is_the_mirror_image(body):
    for seed in range(3):
        seq = gen("mirror", seed)
        lag = seq.meta["mirror_lag_frames"]
        A, B = seq.body_pose[0].astype(np.float64), seq.body_pose[1].astype(np.float64)
        T = A.shape[0]
        for left, right in ((13, 14), (16, 17), (18, 19), (20, 21)):
            np.testing.assert_allclose(B[lag:, left - 1], A[: T - lag, right - 1] * _MIRROR_AA, atol=1e-5)
            np.testing.assert_allclose(B[lag:, right - 1], A[: T - lag, left - 1] * _MIRROR_AA, atol=1e-5)
        for central in (3, 6, 9, 12, 15):
            np.testing.assert_allclose(
                B[lag:, central - 1], A[: T - lag, central - 1] * _MIRROR_AA, atol=1e-5
            )
        # the arms really move, so the check above is not about static poses
        assert np.ptp(A[:, 15], axis=0).max() > 0.3
        pos, root_R = fk(seq, body)
        fwd = root_R[:, :, [0, 2], 2]  # pelvis z axis (forward), horizontal part [P, T, 2]
        ab = pos[1, :, 0, [0, 2]].T - pos[0, :, 0, [0, 2]].T
        ab /= np.linalg.norm(ab, axis=-1, keepdims=True)
        assert (np.einsum("tc,tc->t", fwd[0], ab) > 0.9).all()
        assert (np.einsum("tc,tc->t", fwd[1], -ab) > 0.9).all()
        assert 0.9 < pelvis_distance(pos).mean() < 2.1


def test_approach_greet_closes_in_then_stays_about_one_metre(body):
    for seed in range(3):
        seq = gen("approach_greet", seed, 240)
        pos, _ = fk(seq, body)
        d = pelvis_distance(pos)
        arrive = seq.meta["arrival_frame"]
        assert 4.0 <= d[0] <= 6.0 and arrive < 240 - 20
        assert (np.diff(d[:arrive]) < 1e-3).all()  # never moves apart on the way
        after = d[arrive:]
        assert abs(after.mean() - seq.meta["final_distance_m"]) < 0.05 and 0.8 < after.mean() < 1.3
        assert after.std() < 0.03
        # the waver's wrist goes above its head after arriving
        for w in seq.meta["wavers"]:
            wrist = pos[w, arrive:, [20, 21], 1].max()
            assert wrist > pos[w, arrive:, 15, 1].min()
    short = gen("approach_greet", 3, 90)  # short clips start closer but still meet
    d = pelvis_distance(fk(short, body)[0])
    assert d[0] > 1.8 and d[-1] < 1.3


@pytest.mark.parametrize("persons", [2, 3, 4])
def test_circle_dance_keeps_equal_radius_and_even_spacing(body, persons):
    for seed in range(2):
        seq = gen("circle_dance", seed, 150, persons)
        pos, _ = fk(seq, body)
        xz = pos[:, :, 0, [0, 2]]  # [P, T, 2]
        centre = xz.mean(0)
        np.testing.assert_allclose(
            centre, np.broadcast_to(seq.meta["circle_centre_xz"], centre.shape), atol=0.03
        )
        r = np.linalg.norm(xz - centre, axis=-1)
        assert (r.max(0) - r.min(0)).max() < 0.05
        assert abs(r.mean() - seq.meta["circle_radius_m"]) < 0.12
        ang = np.sort(np.arctan2(xz[..., 1] - centre[:, 1], xz[..., 0] - centre[:, 0]), axis=0)
        gaps = np.diff(np.concatenate([ang, ang[:1] + 2 * np.pi]), axis=0)
        np.testing.assert_allclose(gaps, 2 * np.pi / persons, atol=0.1)
        # they move round the circle together
        travelled = np.abs(
            np.diff(np.unwrap(np.arctan2(xz[0, :, 1] - centre[:, 1], xz[0, :, 0] - centre[:, 0])))
        )
        assert travelled.sum() > 0.5


def test_turn_taking_alternates_the_gesturing_person():
    for seed in range(3):
        seq = gen("turn_taking", seed)
        turns = seq.meta["turns"]
        assert len(turns) >= 2
        speakers = [s for _, _, s in turns]
        assert all(a != b for a, b in itertools.pairwise(speakers))
        for (a0, a1, _), (b0, _, _) in itertools.pairwise(turns):
            assert a1 == b0 and 59 <= a1 - a0 <= 121 + 30
        R = axis_angle_to_matrix(torch.from_numpy(seq.body_pose[:, :, 15:21]).double())  # joints 16..21
        speed = geodesic_angle(R[:, 1:], R[:, :-1]).mean(-1).numpy() * 30.0  # [P, T-1] rad/s
        wins = [speed[s, a : b - 1].mean() > 2.0 * speed[1 - s, a : b - 1].mean() for a, b, s in turns]
        assert np.mean(wins) >= 0.9


# ---------------------------------------------------------------------------------------------- dataset


def test_clip_plan_is_deterministic_with_scenarios_in_every_split():
    plan = clip_plan(120, 3)
    assert plan == clip_plan(120, 3) and plan != clip_plan(120, 4)
    splits = [c["split"] for c in plan]
    assert (splits.count("train"), splits.count("val"), splits.count("test")) == (100, 10, 10)
    for split in ("train", "val", "test"):
        assert {c["scenario"] for c in plan if c["split"] == split} == set(SCENARIOS)
    assert len({c["name"] for c in plan}) == 120
    assert all(150 <= c["num_frames"] <= 300 for c in plan)
    small = clip_plan(10, 0, (90, 90))
    assert {c["split"] for c in small} == {"train", "val", "test"}
    assert {c["scenario"] for c in small if c["split"] == "train"} == set(SCENARIOS)


def _leftovers(data_dir):
    return [p.name for p in data_dir.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_ensure_synthetic_dataset_builds_caches_and_rebuilds(tmp_path, body):
    out = ensure_synthetic_dataset(tmp_path, num_clips=15, seed=0, frames=(60, 90), body_model=body)
    assert out == tmp_path / "synthetic"
    hdf5 = out / "synthetic_dataset.hdf5"
    for name in ("synthetic_dataset_files.txt", "synthetic_mean_std.npz", "manifest.json"):
        assert (out / name).is_file()
    for split in ("train", "val", "test"):
        assert (out / "synthetic_data_split" / f"{split}_data.csv").is_file()
    with h5py.File(hdf5, "r") as f:
        assert set(f) == {"train", "val", "test"}
        for split in f:
            assert {f[split][k].attrs["scenario"] for k in f[split]} == set(SCENARIOS)
            for k in f[split]:
                x = f[split][k]
                assert 60 <= x.shape[0] <= 90 and x.shape[2] == 374 + 9 * (x.shape[1] - 1)
        assert sum(len(f[s]) for s in f) == 15
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["generator_version"] == S.GENERATOR_VERSION and manifest["num_clips"] == 15
    assert [c["scenario"] for c in manifest["clips"]] == [SCENARIOS[i % 5] for i in range(15)]
    stats = np.load(out / "synthetic_mean_std.npz")
    assert stats["mean"].shape == (361,) and np.isfinite(stats["std"]).all()

    mtime = hdf5.stat().st_mtime_ns
    assert ensure_synthetic_dataset(tmp_path, num_clips=15, seed=0, frames=(60, 90), body_model=body) == out
    assert hdf5.stat().st_mtime_ns == mtime  # cache hit: nothing rewritten
    ensure_synthetic_dataset(tmp_path, num_clips=15, seed=0, frames=(60, 90), force=True, body_model=body)
    assert hdf5.stat().st_mtime_ns != mtime
    mtime = hdf5.stat().st_mtime_ns
    ensure_synthetic_dataset(tmp_path, num_clips=10, seed=0, frames=(60, 90), body_model=body)  # other args
    assert hdf5.stat().st_mtime_ns != mtime
    assert json.loads((out / "manifest.json").read_text())["num_clips"] == 10
    with h5py.File(hdf5, "r") as f:
        assert sum(len(f[s]) for s in f) == 10
    assert _leftovers(tmp_path) == []


def test_failed_build_keeps_the_previous_dataset(tmp_path, body, monkeypatch):
    out = ensure_synthetic_dataset(tmp_path, num_clips=5, seed=1, frames=(40, 40), body_model=body)
    before = (out / "manifest.json").read_text()
    real = SD.generate_sequence
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            raise DataError("simulated failure in the middle of the build")
        return real(*args, **kwargs)

    monkeypatch.setattr(SD, "generate_sequence", broken)
    with pytest.raises(DataError, match="simulated failure"):
        ensure_synthetic_dataset(tmp_path, num_clips=5, seed=2, frames=(40, 40), body_model=body)
    assert (out / "manifest.json").read_text() == before
    with h5py.File(out / "synthetic_dataset.hdf5", "r") as f:
        assert sum(len(f[s]) for s in f) == 5
    assert _leftovers(tmp_path) == []
    monkeypatch.setattr(SD, "generate_sequence", real)
    # a half-written directory (no manifest) is not taken for a cache hit
    (out / "manifest.json").unlink()
    mtime = (out / "synthetic_dataset.hdf5").stat().st_mtime_ns
    ensure_synthetic_dataset(tmp_path, num_clips=5, seed=1, frames=(40, 40), body_model=body)
    assert (out / "synthetic_dataset.hdf5").stat().st_mtime_ns != mtime


def test_truncated_hdf5_is_rebuilt_and_named_with_the_generator_command(tmp_path, body):
    """A truncated synthetic HDF5 is not a cache hit: the next call rebuilds it (with a warning), and reading the
    damaged file directly names the generator command that rebuilds it, not magnet-preprocess."""
    from magnet.data.hdf5 import DatasetFile

    out = ensure_synthetic_dataset(tmp_path, num_clips=5, seed=1, frames=(40, 40), body_model=body)
    hdf5 = out / "synthetic_dataset.hdf5"
    good = hdf5.read_bytes()
    hdf5.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError) as err:
        DatasetFile(hdf5)
    msg = str(err.value)
    assert "magnet-preprocess" not in msg and "\n" not in msg
    assert msg.endswith(f"rebuild it with python -m magnet.data.synthetic --out {tmp_path} --clips 5 --seed 1 "
                        "--min-frames 40 --max-frames 40 --force")
    with pytest.warns(UserWarning, match="damaged"):
        assert ensure_synthetic_dataset(tmp_path, num_clips=5, seed=1, frames=(40, 40), body_model=body) == out
    with DatasetFile(hdf5) as f:
        assert sum(len(f.sequences(s)) for s in f.splits) == 5
        for split in f.splits:
            for name in f.sequences(split):
                assert f.read(split, name).shape[0] == 40
    assert _leftovers(tmp_path) == []
    # a file that reads but holds fewer sequences than the manifest records is rebuilt too
    with h5py.File(hdf5, "a") as f:
        del f["train"][next(iter(f["train"]))]
    with pytest.warns(UserWarning, match="holds 4 sequences"):
        ensure_synthetic_dataset(tmp_path, num_clips=5, seed=1, frames=(40, 40), body_model=body)
    with DatasetFile(hdf5) as f:
        assert sum(len(f.sequences(s)) for s in f.splits) == 5


def test_cli_prints_a_summary_and_reports_errors(tmp_path, capsys):
    args = [
        "--out",
        str(tmp_path),
        "--clips",
        "10",
        "--seed",
        "0",
        "--min-frames",
        "45",
        "--max-frames",
        "60",
        "--no-progress",
    ]
    assert S.main(args) == 0
    text = capsys.readouterr().out
    assert "built" in text and "clips: 10" in text and "circle_dance" in text and "train" in text
    assert S.main(args) == 0
    assert "cached" in capsys.readouterr().out
    assert S.main(["--out", str(tmp_path), "--clips", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: num_clips") and err.count("\n") == 1
    assert os.listdir(tmp_path / "synthetic")
