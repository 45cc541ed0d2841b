"""Raw layouts (magnet.data.raw) and preprocessing (magnet.data.preprocess): numbers, files, CLI errors."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from magnet import geometry as geo
from magnet.body import BodyModel, load_body_model
from magnet.data.hdf5 import read_sequence
from magnet.data.preprocess import (
    RejectedSequence,
    build_dataset,
    compute_contacts,
    dbscan_1d,
    estimate_floor,
    main,
    preprocess_sequence,
    resample_linear,
    resample_positions,
    resample_rotations,
)
from magnet.data.raw import RawDirectory, RawSequence, discover_raw, load_raw
from magnet.data.splits import read_split_csv, read_split_yaml
from magnet.errors import DataError
from magnet.representation import PackedLayout, person_dim, unpack

ROOT = Path(__file__).resolve().parents[1]
STAND_HEIGHT = 0.905 + 0.01  # default skeleton: foot joints 0.905 m below the pelvis, resting at +0.01


@pytest.fixture(scope="module")
def body():
    return load_body_model(warn=False)


def make_raw(name="seq", P=2, T=40, fps=30.0, up="y", seed=0, hands=True, still=False) -> RawSequence:
    """A small random (or standing-still) sequence; body poses are never all-zero."""
    rng = np.random.default_rng(seed)
    scale = 0.0 if still else 0.05
    body = 0.1 + scale * rng.normal(size=(P, T, 21, 3))
    glob = np.zeros((P, T, 3)) + scale * rng.normal(size=(P, T, 3))
    if up == "z":
        glob[..., 0] += math.pi / 2  # standing upright in a z-up world
    transl = np.cumsum(0.01 * rng.normal(size=(P, T, 3)), axis=1) * (0 if still else 1)
    transl[:, :, 0] += np.arange(P)[:, None] * 1.5
    betas = 0.3 * rng.normal(size=(P, 10))
    if still:  # straight legs (only joints 12..21 bent) and the mean shape: feet 0.905 m below the pelvis
        body[:, :, :11] = 0.0
        betas[:] = 0.0
    return RawSequence(
        name=name, fps=fps, betas=betas, global_orient=glob, body_pose=body,
        hand_pose=0.1 * rng.normal(size=(P, T, 30, 3)) if hands else None, transl=transl, up_axis=up,
        meta={"path": f"/raw/{name}.npz"},
    )


# --------------------------------------------------------------------------------------------- raw layouts


def write_layout(path: Path, fmt: str, P=2, T=40, seed=0, **extra) -> dict:
    """Write one file in raw layout ``fmt`` (persons first); returns the SMPL-X parts written."""
    rng = np.random.default_rng(seed)
    glob = 0.1 * rng.normal(size=(P, T, 3))
    body = 0.1 + 0.05 * rng.normal(size=(P, T, 63))
    lh, rh = 0.1 * rng.normal(size=(P, T, 45)), 0.1 * rng.normal(size=(P, T, 45))
    transl = np.cumsum(0.01 * rng.normal(size=(P, T, 3)), axis=1)
    betas = 0.3 * rng.normal(size=(P, 10))
    if fmt == "dd100":
        poses = np.concatenate([glob, body, 0.5 * np.ones((P, T, 9)), lh, rh], axis=-1)
        data = {"poses": poses, "trans": transl, "betas": betas}
    elif fmt in ("duobox", "embody3d"):
        data = {"body_pose": body, "global_orient": glob, "transl": transl, "betas": betas}
        if fmt == "embody3d":
            data.update(left_hand_pose=lh, right_hand_pose=rh)
    elif fmt == "interx":
        data = {"pose_body": body, "root_orient": glob, "trans": transl, "betas": betas,
                "pose_lhand": lh, "pose_rhand": rh}
    elif fmt == "amass":
        assert P == 1
        poses = np.concatenate([glob, body, lh, rh], axis=-1)[0]  # [T, 156] SMPL-H
        data = {"poses": poses, "trans": transl[0], "betas": np.concatenate([betas[0], np.ones(6)]),
                "mocap_framerate": np.array(60.0)}
    data.update(extra)
    np.savez(path, **data)
    return {"glob": glob, "body": body, "lh": lh, "rh": rh, "transl": transl, "betas": betas}


@pytest.mark.parametrize("fmt", ["dd100", "duobox", "embody3d", "interx", "amass"])
def test_load_raw_layouts(tmp_path, fmt):
    P = 1 if fmt == "amass" else 2
    parts = write_layout(tmp_path / "clip.npz", fmt, P=P)
    raw = load_raw(tmp_path / "clip.npz", fmt)
    assert raw.name == "clip" and raw.num_persons == P and raw.num_frames == 40
    assert raw.fps == {"interx": 120.0, "amass": 60.0}.get(fmt, 30.0)
    assert raw.up_axis == ("z" if fmt in ("dd100", "amass") else "y")
    np.testing.assert_allclose(raw.global_orient, parts["glob"])
    np.testing.assert_allclose(raw.body_pose, parts["body"].reshape(P, 40, 21, 3))  # dd100: body sliced once
    np.testing.assert_allclose(raw.transl, parts["transl"])
    np.testing.assert_allclose(raw.betas, parts["betas"])
    if fmt == "duobox":
        assert raw.hand_pose is None
    else:
        np.testing.assert_allclose(raw.hand_pose[:, :, :15].reshape(P, 40, 45), parts["lh"])
        np.testing.assert_allclose(raw.hand_pose[:, :, 15:].reshape(P, 40, 45), parts["rh"])


def test_time_first_layout_and_explicit_person_axis(tmp_path):
    parts = write_layout(tmp_path / "a.npz", "duobox", P=2, T=40)
    d = dict(np.load(tmp_path / "a.npz"))
    np.savez(tmp_path / "tp.npz", **{k: (np.swapaxes(v, 0, 1) if v.ndim == 3 else v) for k, v in d.items()})
    raw = load_raw(tmp_path / "tp.npz", "duobox")
    np.testing.assert_allclose(raw.transl, parts["transl"])
    # 3 frames of 2 persons: ambiguous without a key, explicit with person_axis
    short = {k: (np.swapaxes(v[:, :3], 0, 1) if v.ndim == 3 else v) for k, v in d.items()}
    np.savez(tmp_path / "short.npz", **short)
    with pytest.raises(DataError, match="person_axis"):
        load_raw(tmp_path / "short.npz", "duobox")
    np.savez(tmp_path / "short.npz", person_axis=1, **short)
    assert load_raw(tmp_path / "short.npz", "duobox").global_orient.shape == (2, 3, 3)


def test_missing_key_and_bad_values_name_file_and_key(tmp_path):
    write_layout(tmp_path / "x.npz", "duobox", P=2)
    d = dict(np.load(tmp_path / "x.npz"))
    del d["body_pose"]
    np.savez(tmp_path / "nobody.npz", **d)
    with pytest.raises(DataError, match=r"nobody\.npz: missing key 'body_pose' \(duobox layout expects"):
        load_raw(tmp_path / "nobody.npz", "duobox")
    write_layout(tmp_path / "hands.npz", "duobox", P=2)
    with pytest.raises(DataError, match="missing key 'left_hand_pose'"):
        load_raw(tmp_path / "hands.npz", "embody3d")
    bad = dict(np.load(tmp_path / "x.npz"))
    bad["transl"][1, 5, 2] = np.nan
    np.savez(tmp_path / "nan.npz", **bad)
    with pytest.raises(DataError, match=r"nan\.npz: key 'transl' holds NaN"):
        load_raw(tmp_path / "nan.npz", "duobox")
    five = {k: (np.concatenate([v] * 3)[:5] if v.ndim >= 2 else v) for k, v in np.load(tmp_path / "x.npz").items()}
    np.savez(tmp_path / "five.npz", person_axis=0, **five)
    with pytest.raises(DataError, match="5 persons"):
        load_raw(tmp_path / "five.npz", "duobox")
    write_layout(tmp_path / "am.npz", "amass", P=1)
    d = dict(np.load(tmp_path / "am.npz"))
    del d["mocap_framerate"]
    np.savez(tmp_path / "am.npz", **d)
    with pytest.raises(DataError, match="missing key 'mocap_framerate'"):
        load_raw(tmp_path / "am.npz", "amass")
    with pytest.raises(DataError, match="unknown raw format"):
        load_raw(tmp_path / "x.npz", "bvh")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"broken\.npz: not a valid \.npz file"):
        load_raw(tmp_path / "broken.npz", "duobox")
    (tmp_path / "chumpy.pkl").write_bytes(b"cnot_a_module_xyz\nThing\n.")  # a pickle of an unavailable class
    with pytest.raises(DataError, match=r"chumpy\.pkl: cannot read the raw file \(No module named"):
        load_raw(tmp_path / "chumpy.pkl", "duobox")


def test_validate_shapes():
    raw = make_raw(P=2, T=10)
    raw.transl = raw.transl[:, :9]
    with pytest.raises(DataError, match=r"/raw/seq\.npz: key 'transl' has shape \[2, 9, 3\]"):
        raw.validate()
    raw = make_raw(P=1, T=10)
    raw.fps = 0
    with pytest.raises(DataError, match="fps"):
        raw.validate()


def test_per_person_files_are_combined(tmp_path):
    scene = tmp_path / "raw" / "G001T000"
    scene.mkdir(parents=True)
    a = write_layout(scene / "P1.npz", "interx", P=1, T=50, seed=1)
    b = write_layout(scene / "P2.npz", "interx", P=1, T=48, seed=2)
    pk = tmp_path / "raw" / "duet_follower.pkl"
    with open(pk, "wb") as f:
        pickle.dump({"pose_body": np.full((30, 63), 0.2), "root_orient": np.zeros((30, 3)),
                     "trans": np.zeros((30, 3)), "betas": np.zeros(16)}, f)
    write_layout(tmp_path / "raw" / "duet_leader.npz", "interx", P=1, T=30, seed=3)
    write_layout(tmp_path / "raw" / "Solo_005_001.npz", "interx", P=1, T=30, seed=4)
    sources = discover_raw(tmp_path / "raw")
    assert [(s.name, [p.name for p in s.files]) for s in sources] == [
        ("G001T000", ["P1.npz", "P2.npz"]),
        ("Solo_005_001", ["Solo_005_001.npz"]),
        ("duet", ["duet_leader.npz", "duet_follower.pkl"]),
    ]
    with pytest.warns(UserWarning, match="cut to the shortest"):
        raw = load_raw(scene, "interx")
    assert raw.name == "G001T000" and raw.body_pose.shape == (2, 48, 21, 3)
    np.testing.assert_allclose(raw.transl[1], b["transl"][0])
    np.testing.assert_allclose(raw.transl[0], a["transl"][0, :48])
    with pytest.warns(UserWarning, match="cut to the shortest"):
        seqs = list(RawDirectory(tmp_path / "raw", "interx"))
    assert [s.num_persons for s in seqs] == [2, 1, 2]
    np.testing.assert_allclose(seqs[2].body_pose[1], 0.2)  # follower (pickle) is person 1
    (tmp_path / "raw" / "sub").mkdir()
    write_layout(tmp_path / "raw" / "sub" / "Solo_005_001.npz", "interx", P=1)
    with pytest.raises(DataError, match="two sequences are named 'Solo_005_001'"):
        discover_raw(tmp_path / "raw")


# --------------------------------------------------------------------------------------------- building blocks


def test_dbscan_hand_examples():
    x = np.array([0.2, 0.0, 0.209, 0.004, 0.1, 0.206, 0.008, 0.203])
    np.testing.assert_array_equal(dbscan_1d(x, 0.005, 3), [1, 0, 1, 0, -1, 1, 0, 1])
    assert (dbscan_1d([0.0, 1.0, 2.0], 0.005, 3) == -1).all()
    assert dbscan_1d([], 0.005, 3).shape == (0,)
    # a border point within eps of cores of two clusters joins the nearer core's cluster
    a = [0.0, 0.004, 0.008, 0.0099]
    b = [0.027, 0.031, 0.035, 0.036]
    labels = dbscan_1d(np.array(a + [0.0185] + b), 0.01, 4)
    np.testing.assert_array_equal(labels, [0, 0, 0, 0, 1, 1, 1, 1, 1])


def _textbook_dbscan(x, eps, min_samples):
    """O(N^2) DBSCAN by cluster expansion in index order (reference for the tests)."""
    n = len(x)
    nbrs = [np.flatnonzero(np.abs(x - x[i]) <= eps) for i in range(n)]
    core = np.array([len(v) >= min_samples for v in nbrs])
    labels = np.full(n, -1)
    c = 0
    for i in range(n):
        if not core[i] or labels[i] >= 0:
            continue
        stack = [i]
        labels[i] = c
        while stack:
            j = stack.pop()
            if core[j]:
                for k in nbrs[j]:
                    if labels[k] < 0:
                        labels[k] = c
                        stack.append(k)
        c += 1
    return labels, core


def test_dbscan_matches_textbook_on_random_data():
    rng = np.random.default_rng(3)
    x = np.round(np.concatenate([rng.normal(0, 0.004, 60), rng.normal(0.1, 0.01, 40), rng.uniform(-1, 1, 30)]), 5)
    ours = dbscan_1d(x, 0.005, 3)
    ref, core = _textbook_dbscan(x, 0.005, 3)
    np.testing.assert_array_equal(ours < 0, ref < 0)  # same noise
    for i in np.flatnonzero(core):  # same partition of the core points
        np.testing.assert_array_equal(ours[core] == ours[i], ref[core] == ref[i])
    assert ours.max() >= 1


def test_estimate_floor_with_outliers():
    heights = np.array([0.019, 0.02, 0.02, 0.02, 0.02, 0.02, 0.021, -0.3, 0.5, 0.5, 0.5, 0.5, 0.9])
    assert estimate_floor(heights) == pytest.approx(0.02 - 0.01)  # the -0.3 spike is noise
    assert estimate_floor([0.1, 0.2, 0.3]) == pytest.approx(0.09)  # no cluster: minimum height


def test_resample_rotation_and_translation():
    axis = np.array([1.0, 2.0, 2.0]) / 3.0
    for fps, T, step in [(120.0, 120, 4.0), (45.0, 90, 1.5)]:
        pos = resample_positions(T, fps)
        assert pos.shape == (int(T * 30 / fps),) and pos[1] == step
        angles = 0.02 * np.arange(T)
        aa = torch.as_tensor(angles[:, None] * axis, dtype=torch.float64)[:, None]  # [T, 1, 3]
        R = resample_rotations(aa, pos)[:, 0]
        out = geo.matrix_to_axis_angle(R).numpy()
        np.testing.assert_allclose(out, (0.02 * pos)[:, None] * axis, atol=1e-9)  # angles interpolate linearly
        x = torch.as_tensor(np.stack([np.arange(T) ** 2, np.arange(T), np.zeros(T)], -1), dtype=torch.float64)
        y = resample_linear(x, pos).numpy()
        i0 = np.floor(pos).astype(int)
        expected_sq = i0**2 + (pos - i0) * ((i0 + 1) ** 2 - i0**2)
        np.testing.assert_allclose(y[:, 0], expected_sq)
        np.testing.assert_allclose(y[:, 1], pos)
    assert resample_positions(30, 30.0).tolist() == list(range(30))
    assert resample_positions(25, 25.0)[-1] == 24  # upsampling clamps at the last frame


def test_contacts_planted_vs_moving():
    T = 6
    p = np.zeros((T, 4, 3))
    p[:, 0, 1] = 0.01  # planted
    p[:, 1, 1] = 0.01
    p[:, 1, 0] = 0.01 * np.arange(T)  # low but sliding 1 cm per frame
    p[:, 2, 1] = 0.1  # still but high
    p[:, 3, 1] = 0.01
    p[:3, 3, 2] = [0.0, 0.02, 0.04]  # moves, then stops at frame 3
    p[3:, 3, 2] = 0.041
    c = compute_contacts(p)
    np.testing.assert_array_equal(c[:, 0], 1)
    np.testing.assert_array_equal(c[:, 1], 0)
    np.testing.assert_array_equal(c[:, 2], 0)
    np.testing.assert_array_equal(c[:, 3], [0, 0, 0, 1, 1, 1])  # frame 3 moved 1 mm; frame 0 copies frame 1


# --------------------------------------------------------------------------------------------- one sequence


def test_preprocess_standing_still(body):
    x = preprocess_sequence(make_raw(P=2, T=30, still=True), body)
    assert x.shape == (30, 2, person_dim(2)) and x.dtype == np.float32
    f = unpack(torch.as_tensor(x, dtype=torch.float64))
    _, t = f["world_root"]
    np.testing.assert_allclose(t[..., 1].numpy(), STAND_HEIGHT, atol=1e-6)  # floor at y=0
    np.testing.assert_allclose(t[0, :, 0].mean().item(), 0.0, atol=1e-6)  # recentred x/z
    np.testing.assert_allclose(t[0, 1, 0] - t[0, 0, 0], 1.5, atol=1e-6)
    contacts = f["contacts"].numpy()  # joints 1..21 -> column j-1
    assert (contacts[:, :, 9] == 1).all() and (contacts[:, :, 10] == 1).all()  # feet planted
    assert (contacts[:, :, 14] == 0).all()  # head (joint 15) is high
    assert (x[..., PackedLayout(2).mask] == 1).all()


def test_z_up_standing_pose_ends_up_y_up(body):
    raw = make_raw(P=1, T=30, up="z", still=True)
    x = preprocess_sequence(raw, body)
    R, t = unpack(torch.as_tensor(x, dtype=torch.float64))["world_root"]
    np.testing.assert_allclose(R.numpy(), np.broadcast_to(np.eye(3), R.shape), atol=1e-6)
    np.testing.assert_allclose(t[..., 1].numpy(), STAND_HEIGHT, atol=1e-6)


def test_world_pelvis_uses_rest_pelvis_before_up_axis_change():
    base = load_body_model(warn=False)
    template = base.joint_template + torch.tensor([0.003, -0.35, 0.012], dtype=torch.float64)  # J0 != 0
    dirs = base.joint_shapedirs.clone()
    dirs[:, :, 0] += torch.tensor([0.0, 0.05, 0.1], dtype=torch.float64)  # betas[0] moves every joint (J0 too)
    model = BodyModel(template, dirs)
    raw = make_raw(P=2, T=30, up="z", still=True)
    raw.betas[:] = 0.0
    raw.betas[1, 0] = 2.0
    j0 = model.rest_joints(torch.as_tensor(raw.betas))[:, 0].numpy()
    raw.transl[1] = raw.transl[0] + (j0[0] - j0[1]) + np.array([1.0, 0.0, 0.0])  # pelvis B = pelvis A + 1 m x
    x = preprocess_sequence(raw, model)
    _, t = unpack(torch.as_tensor(x, dtype=torch.float64))["world_root"]
    np.testing.assert_allclose((t[:, 1] - t[:, 0]).numpy(), np.broadcast_to([1.0, 0.0, 0.0], (30, 3)), atol=1e-6)


def test_resampled_sequence_end_to_end(body):
    raw = make_raw(P=2, T=90, fps=45.0, hands=False)
    angles = 0.01 * np.arange(90)
    raw.body_pose[:, :, 4] = angles[None, :, None] * np.array([0.0, 0.0, 1.0])  # knee-like joint 5 about z
    x = preprocess_sequence(raw, body)
    assert x.shape == (60, 2, person_dim(2))
    f = unpack(torch.as_tensor(x, dtype=torch.float64))
    aa = geo.matrix_to_axis_angle(f["body_rot"][:, :, 4]).numpy()
    np.testing.assert_allclose(aa[..., 2], np.broadcast_to(0.015 * np.arange(60)[:, None], (60, 2)), atol=1e-5)
    np.testing.assert_allclose(f["hand_rot"].numpy(), np.broadcast_to(np.eye(3), f["hand_rot"].shape), atol=1e-6)


def test_tpose_frames_are_rejected(body):
    raw = make_raw(P=2, T=20)
    raw.body_pose[1, 7] = 0.0
    with pytest.raises(RejectedSequence, match="frame 7 of person 1") as e:
        preprocess_sequence(raw, body)
    assert isinstance(e.value, DataError) and "T-pose" in e.value.reason
    with pytest.raises(RejectedSequence, match="too short"):
        preprocess_sequence(make_raw(P=1, T=5, fps=120.0), body)


# --------------------------------------------------------------------------------------------- datasets and CLI


def test_build_dataset_streams_splits_and_stats(tmp_path, body):
    seqs = [make_raw(f"s{i}", P=1 + i % 2, T=30 + 10 * i, seed=i) for i in range(4)]
    bad = make_raw("tpose", P=1, T=20)
    bad.body_pose[0, 3] = 0.0
    splits = {"train": ["s0", "s1"], "val": ["s2"], "test": ["ghost"]}
    with pytest.warns(UserWarning, match="1 sequence\\(s\\) listed in the splits are not in the input: ghost"):
        summary = build_dataset(iter(seqs + [bad]), tmp_path, "Demo", splits, body, progress=False)
    assert summary["sequences"] == {"train": 3, "val": 1, "test": 0}  # s3 is in no split -> train
    assert summary["frames"]["train"] == 30 + 40 + 60 and summary["total_frames"] == 180
    assert summary["rejected"][0]["name"] == "tpose" and summary["missing"] == ["ghost"]
    h5 = tmp_path / "demo_dataset.hdf5"
    assert read_sequence(h5, "train", "s1").shape == (40, 2, person_dim(2))
    assert read_sequence(h5, "val", "s2").shape == (50, 1, person_dim(1))
    with h5py.File(h5) as f:
        assert f["train/s1"].attrs["source_fps"] == 30.0
    expected = {"train": ["s0", "s1", "s3"], "val": ["s2"], "test": []}
    assert read_split_yaml(tmp_path / "demo_dataset_files.txt") == expected
    assert read_split_csv(tmp_path / "demo_data_split") == expected
    stats = np.load(tmp_path / "demo_mean_std.npz")
    assert stats["mean"].shape == (361,) and stats["std"].shape == (361,) and stats["mean"].dtype == np.float64
    train = [read_sequence(h5, "train", n) for n in expected["train"]]
    own = np.concatenate([a[::10].reshape(-1, a.shape[-1])[:, :352] for a in train]).astype(np.float64)
    np.testing.assert_allclose(stats["mean"][:352], own.mean(0), atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "demo_data_split", "demo_dataset.hdf5", "demo_dataset_files.txt", "demo_mean_std.npz"]


def test_auto_split_is_deterministic(tmp_path, body):
    seqs = [make_raw(f"clip{i}", P=1, T=12, seed=i) for i in range(12)]
    a = build_dataset(seqs, tmp_path / "a", "d", None, body, val_fraction=0.3, test_fraction=0.3, seed=1,
                      progress=False)
    b = build_dataset(seqs[::-1], tmp_path / "b", "d", None, body, val_fraction=0.3, test_fraction=0.3, seed=1,
                      progress=False)
    ya, yb = read_split_yaml(tmp_path / "a" / "d_dataset_files.txt"), read_split_yaml(tmp_path / "b" / "d_dataset_files.txt")
    assert {k: sorted(v) for k, v in ya.items()} == {k: sorted(v) for k, v in yb.items()}
    assert a["sequences"] == b["sequences"] and sum(a["sequences"].values()) == 12
    assert all(a["sequences"][s] > 0 for s in ("train", "val", "test"))


def _write_inputs(raw_dir: Path, fmt: str, n=3):
    raw_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        if fmt == "interx":
            (raw_dir / f"G00{i}").mkdir()
            for k in (1, 2):
                write_layout(raw_dir / f"G00{i}" / f"P{k}.npz", fmt, P=1, T=48, seed=10 * i + k)
        else:
            write_layout(raw_dir / f"Clip_{i:03d}.npz", fmt, P=1 if fmt == "amass" else 2, T=40, seed=i)


@pytest.mark.parametrize("fmt", ["dd100", "duobox", "embody3d", "interx", "amass"])
def test_cli_builds_each_layout(tmp_path, fmt, capsys, monkeypatch):
    monkeypatch.delenv("MAGNET_SMPLX_MODEL", raising=False)
    _write_inputs(tmp_path / "raw", fmt)
    names = sorted(s.name for s in discover_raw(tmp_path / "raw"))
    split_dir = tmp_path / "csv"
    split_dir.mkdir()
    (split_dir / "train_data.csv").write_text("scene_name\n" + "\n".join(names[:2]) + "\n")
    (split_dir / "test_data.csv").write_text(f"scene_name\n{names[2]}\n")
    rc = main(["--format", fmt, "--input", str(tmp_path / "raw"), "--output", str(tmp_path / "data"),
               "--name", fmt, "--splits", str(split_dir), "--no-progress"])
    assert rc == 0
    out = capsys.readouterr()
    assert "train 2" in out.out and "test 1" in out.out
    T30, P = {"interx": (12, 2), "amass": (20, 1)}.get(fmt, (40, 2))  # 120 -> 30 fps, 60 -> 30 fps
    x = read_sequence(tmp_path / "data" / f"{fmt}_dataset.hdf5", "test", names[2])
    assert x.shape == (T30, P, person_dim(P))
    assert read_split_yaml(tmp_path / "data" / f"{fmt}_dataset_files.txt")["train"] == names[:2]
    assert read_split_csv(tmp_path / "data" / f"{fmt}_data_split")["test"] == [names[2]]
    assert np.load(tmp_path / "data" / f"{fmt}_mean_std.npz")["std"].shape == (361,)


def test_cli_errors_are_one_line_and_leave_no_output(tmp_path, capsys):
    out_dir = tmp_path / "data"
    rc = main(["--format", "duobox", "--input", str(tmp_path / "nowhere"), "--output", str(out_dir),
               "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and "nowhere" in err[0]

    raw_dir = tmp_path / "raw"
    _write_inputs(raw_dir, "duobox", n=3)
    d = dict(np.load(raw_dir / "Clip_002.npz"))
    del d["body_pose"]
    np.savez(raw_dir / "Clip_002.npz", **d)  # the last file fails after two sequences were written
    rc = main(["--format", "duobox", "--input", str(raw_dir), "--output", str(out_dir), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("error: ") and "Clip_002.npz: missing key 'body_pose'" in err[-1]
    assert not any(line.startswith("error") for line in err[:-1])
    assert not out_dir.exists()  # no HDF5/YAML/npz/CSV, no temp files, not even the folder it would have made

    only_tpose = tmp_path / "raw_tpose"
    _write_inputs(only_tpose, "duobox", n=1)
    d = dict(np.load(only_tpose / "Clip_000.npz"))
    d["body_pose"][0, 3] = 0.0
    np.savez(only_tpose / "Clip_000.npz", **d)
    rc = main(["--format", "duobox", "--input", str(only_tpose), "--output", str(out_dir / "deeper"),
               "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("error: no usable sequences")
    assert "'Clip_000'" in err[-1] and "T-pose" in err[-1]  # names the rejected sequence and why
    assert not out_dir.exists()


def test_failure_midway_keeps_previous_outputs(tmp_path, body):
    seqs = [make_raw(f"s{i}", P=1, T=20, seed=i) for i in range(2)]
    build_dataset(seqs, tmp_path, "d", None, body, progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    broken = make_raw("broken", P=1, T=20)
    broken.transl[0, 4] = np.inf

    def stream():
        yield make_raw("new", P=1, T=20)
        yield broken

    with pytest.raises(DataError, match="broken.npz: key 'transl' holds NaN or infinite"):
        build_dataset(stream(), tmp_path, "d", None, body, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    assert read_split_yaml(tmp_path / "d_dataset_files.txt")["train"] == ["s0", "s1"]


def test_build_runs_torch_single_threaded_and_restores_the_setting(tmp_path, body):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen = []

    def stream():
        for i in range(2):
            seen.append(torch.get_num_threads())
            yield make_raw(f"s{i}", P=1, T=20, seed=i)

    try:
        build_dataset(stream(), tmp_path, "d", None, body, progress=False)
        assert seen == [1, 1] and torch.get_num_threads() == 2
        with pytest.raises(DataError):
            build_dataset(iter([]), tmp_path / "none", "d", None, body, progress=False)
        assert torch.get_num_threads() == 2 and not (tmp_path / "none").exists()
    finally:
        torch.set_num_threads(before)


def test_module_entry_point_runs(tmp_path):
    _write_inputs(tmp_path / "raw", "dd100", n=1)
    proc = subprocess.run(
        [sys.executable, "-m", "magnet.data.preprocess", "--format", "dd100", "--input", str(tmp_path / "raw"),
         "--output", str(tmp_path / "out"), "--splits", str(tmp_path / "missing_csv")],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: split directory not found")
    assert not (tmp_path / "out").exists()


def test_amass_smplx_width_takes_hands_after_jaw_and_eyes(tmp_path):
    T = 12
    poses = np.zeros((T, 165))
    poses[:, 3:66] = 0.3
    poses[:, 66:75] = 9.0  # jaw and eyes: ignored
    poses[:, 75:120] = 0.1
    poses[:, 120:165] = -0.1
    np.savez(tmp_path / "m.npz", poses=poses, trans=np.zeros((T, 3)), betas=np.zeros(16), mocap_frame_rate=120)
    raw = load_raw(tmp_path / "m.npz", "amass", up_axis="y")
    assert raw.fps == 120.0 and raw.up_axis == "y" and raw.betas.shape == (1, 10)
    np.testing.assert_allclose(raw.body_pose, 0.3)
    np.testing.assert_allclose(raw.hand_pose[0, :, :15], 0.1)
    np.testing.assert_allclose(raw.hand_pose[0, :, 15:], -0.1)
    np.savez(tmp_path / "w.npz", poses=poses[:, :100], trans=np.zeros((T, 3)), betas=np.zeros(16), fps=30)
    with pytest.raises(DataError, match="key 'poses' has last dimension 100, expected 156 or 165"):
        load_raw(tmp_path / "w.npz", "amass")
