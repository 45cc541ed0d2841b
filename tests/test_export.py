"""Export to SMPL-X parameter npz and BVH (magnet.export): round trips to the same joints, CLI errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from motion_outputs import make_outputs, write_foreign_npz
from smplx_fixture import make_synthetic_smplx_npz

from magnet.body import default_body_model, load_body_model
from magnet.body.kinematic_tree import JOINT_INDEX, JOINT_NAMES, PARENTS
from magnet.data.preprocess import Z_UP_TO_Y_UP
from magnet.data.raw import load_raw
from magnet.errors import ConfigError, DataError
from magnet.evaluation.io import load_output_npz, write_output_npz
from magnet.export import export_outputs, main, read_bvh, read_smplx_npz, smplx_params
from magnet.export.bvh import _axis_matrix, euler_zyx_from_matrix
from magnet.export.smplx_npz import Y_UP_TO_Z_UP
from magnet.geometry import axis_angle_to_matrix
from magnet.motion_files import clip_joints, output_files

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-5  # metres; float32 file values through float64 FK


@pytest.fixture(scope="module")
def outputs(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("export_outputs")
    make_outputs(synthetic_root, out, frames=40, samples=2, context=10)
    return out


@pytest.fixture(scope="module")
def smplx_model(tmp_path_factory):
    return load_body_model(make_synthetic_smplx_npz(tmp_path_factory.mktemp("smplx")))


def _two_person(outputs: Path) -> Path:
    return next(p for p in output_files(outputs) if load_output_npz(p).num_persons == 2)


def _reference_joints(npz: Path, body_model) -> np.ndarray:
    """[R, T, P, 22, 3] float64 FK of the output file itself."""
    clip = load_output_npz(npz)
    return clip_joints(clip, body_model).astype(np.float64)


# ------------------------------------------------------------------------------------------------ SMPL-X npz
@pytest.mark.parametrize("up_axis", ["y", "z"])
@pytest.mark.parametrize("model", ["default", "smplx"])
def test_smplx_npz_round_trip(outputs, tmp_path, smplx_model, up_axis, model):
    body_model = default_body_model() if model == "default" else smplx_model
    npz = _two_person(outputs)
    files = export_outputs(npz, tmp_path, "smplx", smplx=body_model, up_axis=up_axis)
    assert sorted(f.name for f in files) == sorted(f"{npz.stem}_{r}_p{p}.npz" for r in ("gt", "s1", "s2")
                                                   for p in (0, 1))
    ref = _reference_joints(npz, body_model)
    clip = load_output_npz(npz)
    for row, tag in ((0, "gt"), (2, "s2")):
        for p in (0, 1):
            path = tmp_path / f"{npz.stem}_{tag}_p{p}.npz"
            with np.load(path, allow_pickle=False) as data:
                assert data["poses"].shape == (40, 165) and data["trans"].shape == (40, 3)
                assert data["betas"].shape == (10,) and float(data["mocap_framerate"]) == 30.0
                assert str(data["gender"]) == "neutral" and str(data["up_axis"]) == up_axis
                assert np.abs(data["poses"][:, 66:]).max() == 0  # jaw, eyes, hands: zero (no hands in the file)
                np.testing.assert_array_equal(data["pose_body"], data["poses"][:, 3:66])
                trans = data["trans"]
            back = read_smplx_npz(path, body_model)
            np.testing.assert_allclose(back.joints(body_model), ref[row, :, p], atol=TOL)
            # trans is SMPL-X's transl: world pelvis minus the rest pelvis of these betas (0.3 m up for this model)
            rest = body_model.rest_joints(torch.as_tensor(back.betas))[0].numpy()
            pelvis = clip.T_world_root[row, :, p, 4:].astype(np.float64)
            if up_axis == "z":
                pelvis = pelvis @ Y_UP_TO_Z_UP.T
            np.testing.assert_allclose(trans, pelvis - rest, atol=1e-6)
            if model == "smplx":
                assert rest[1] > 0.2


def test_smplx_npz_matches_the_smplx_package(outputs, tmp_path, smplx_model):
    """The exported global_orient / body_pose / transl / betas fed to smplx's own SMPLXLayer give the same joints as
    our forward kinematics of the output file (so trans and the pose layout are what SMPL-X expects)."""
    npz = _two_person(outputs)
    export_outputs(npz, tmp_path, "smplx", sample=1, smplx=smplx_model)
    ref = _reference_joints(npz, smplx_model)
    layer = smplx_model.smplx_layer(torch.float64)
    for p in (0, 1):
        with np.load(tmp_path / f"{npz.stem}_s1_p{p}.npz") as data:
            poses, trans, betas = (torch.as_tensor(data[k]) for k in ("poses", "trans", "betas"))
        T = poses.shape[0]
        out = layer(betas=betas.expand(T, 10), global_orient=axis_angle_to_matrix(poses[:, None, 0:3]),
                    body_pose=axis_angle_to_matrix(poses[:, 3:66].reshape(T, 21, 3)), transl=trans)
        np.testing.assert_allclose(out.joints[:, :22].numpy(), ref[1, :, p], atol=TOL)


def test_z_up_export_reads_back_through_the_amass_loader(outputs, tmp_path):
    """``magnet.data.raw.load_raw(..., "amass")`` reads a z-up export; preprocessing's conversion (pelvis = transl +
    J0, then z-up -> y-up) gives back the output's pelvis and root orientation."""
    npz = _two_person(outputs)
    body_model = default_body_model()
    export_outputs(npz, tmp_path, "smplx", sample=0, up_axis="z", smplx=body_model)
    raw = load_raw(tmp_path / f"{npz.stem}_gt_p1.npz", "amass")
    assert raw.up_axis == "z" and raw.fps == 30.0 and raw.num_persons == 1 and raw.num_frames == 40
    rest = body_model.rest_joints(torch.as_tensor(raw.betas[0]))[0].numpy()
    pelvis = (raw.transl[0] + rest) @ Z_UP_TO_Y_UP.T
    clip = load_output_npz(npz)
    np.testing.assert_allclose(pelvis, clip.T_world_root[0, :, 1, 4:], atol=1e-6)
    root = Z_UP_TO_Y_UP @ axis_angle_to_matrix(torch.as_tensor(raw.global_orient[0])).numpy()
    want = smplx_params(clip, 0, 1).root_rot
    np.testing.assert_allclose(root, want, atol=1e-6)


def test_hands_are_exported_when_present(outputs, tmp_path):
    clip = load_output_npz(_two_person(outputs))
    rng = np.random.default_rng(0)
    hands = rng.normal(size=clip.hand_joint_rotations.shape).astype(np.float32)
    path = write_output_npz(tmp_path / "in" / "hands.npz", betas=clip.betas, T_world_root=clip.T_world_root,
                            body_joint_rotations=clip.body_joint_rotations, hand_joint_rotations=hands,
                            context_timesteps=clip.context_timesteps)
    export_outputs(path, tmp_path / "out", "smplx", sample=0)
    with np.load(tmp_path / "out" / "hands_gt_p0.npz") as data:
        poses = data["poses"]
    want = load_output_npz(path).hand_joint_rotations[0, :, 0]
    got = axis_angle_to_matrix(torch.as_tensor(poses[:, 75:165].reshape(-1, 30, 3))).numpy()
    from magnet.geometry import quat_to_matrix

    np.testing.assert_allclose(got, quat_to_matrix(torch.as_tensor(want, dtype=torch.float64)).numpy(), atol=1e-6)
    assert np.abs(poses[:, 66:75]).max() == 0


# ------------------------------------------------------------------------------------------------ BVH
def test_euler_zyx_inverts_and_stays_continuous():
    rng = np.random.default_rng(0)
    R = axis_angle_to_matrix(torch.as_tensor(rng.normal(size=(50, 7, 3)) * 2.0)).numpy()
    ang = euler_zyx_from_matrix(R, continuous=False)
    back = _axis_matrix("Z", ang[..., 0]) @ _axis_matrix("Y", ang[..., 1]) @ _axis_matrix("X", ang[..., 2])
    np.testing.assert_allclose(back, R, atol=1e-12)
    # a full turn about z, then a knee-like bend of 150 degrees about x: no jumps between frames
    t = np.linspace(0.0, 1.0, 200)
    spin = axis_angle_to_matrix(torch.as_tensor(np.stack([0 * t, 0 * t, 2.2 * np.pi * t], -1))).numpy()
    bend = axis_angle_to_matrix(torch.as_tensor(np.stack([np.radians(150) * t, 0 * t, 0 * t], -1))).numpy()
    for seq in (spin, bend, spin @ bend):
        a = euler_zyx_from_matrix(seq)
        assert np.abs(np.diff(a, axis=0)).max() < 0.2
        b = _axis_matrix("Z", a[:, 0]) @ _axis_matrix("Y", a[:, 1]) @ _axis_matrix("X", a[:, 2])
        np.testing.assert_allclose(b, seq, atol=1e-12)
    # gimbal lock (y = 90 degrees) still reconstructs
    lock = _axis_matrix("Z", np.array([0.3])) @ _axis_matrix("Y", np.array([np.pi / 2])) @ _axis_matrix("X", np.array([0.5]))
    a = euler_zyx_from_matrix(lock, continuous=False)
    b = _axis_matrix("Z", a[:, 0]) @ _axis_matrix("Y", a[:, 1]) @ _axis_matrix("X", a[:, 2])
    np.testing.assert_allclose(b, lock, atol=1e-9)


@pytest.mark.parametrize("unit", ["m", "cm"])
@pytest.mark.parametrize("model", ["default", "smplx"])
def test_bvh_round_trip(outputs, tmp_path, smplx_model, unit, model):
    body_model = default_body_model() if model == "default" else smplx_model
    npz = _two_person(outputs)
    files = export_outputs(npz, tmp_path, "bvh", smplx=body_model, unit=unit)
    assert len(files) == 6
    ref = _reference_joints(npz, body_model)
    scale = {"m": 1.0, "cm": 100.0}[unit]
    for row, tag in ((0, "gt"), (1, "s1"), (2, "s2")):
        for p in (0, 1):
            bvh = read_bvh(tmp_path / f"{npz.stem}_{tag}_p{p}.bvh")
            # the SMPL-X body tree: every joint's parent in the file is its SMPL-X parent
            assert set(bvh.names) == set(JOINT_NAMES[:22]) and bvh.names[0] == "pelvis" and bvh.num_frames == 40
            assert all(bvh.names[bvh.parents[k]] == JOINT_NAMES[PARENTS[JOINT_INDEX[n]]]
                       for k, n in enumerate(bvh.names) if k > 0)
            assert bvh.channels[0] == ("Xposition", "Yposition", "Zposition", "Zrotation", "Yrotation", "Xrotation")
            assert abs(bvh.frame_time - 1 / 30) < 1e-8
            order = [JOINT_INDEX[n] for n in bvh.names]
            np.testing.assert_allclose(bvh.joint_positions() / scale, ref[row, :, p][:, order], atol=1e-5)
            # the rest offsets are the body model's for these betas
            betas = torch.as_tensor(load_output_npz(npz).betas[row, 0, p], dtype=torch.float64)
            offsets = body_model.rest_offsets(betas).numpy()[order]
            np.testing.assert_allclose(bvh.offsets[1:] / scale, offsets[1:], atol=2e-6)


def test_bvh_reader_rejects_malformed_files(tmp_path):
    bad = tmp_path / "bad.bvh"
    bad.write_text("HIERARCHY\nROOT a\n{\n\tOFFSET 0 0\n}\nMOTION\nFrames: 0\nFrame Time: 0.1\n")
    with pytest.raises(DataError, match="bad.bvh:4: OFFSET needs three numbers"):
        read_bvh(bad)
    bad.write_text("HIERARCHY\nROOT a\n{\n\tOFFSET 0 0 0\n\tCHANNELS 1 Xrotation\n}\nMOTION\nFrames: 2\n"
                   "Frame Time: 0.1\n1\n")
    with pytest.raises(DataError, match="expected 2 frames of 1 values"):
        read_bvh(bad)


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_exports_and_describes_the_files(outputs, tmp_path, capsys):
    assert main([str(outputs), "--format", "bvh", "--out", str(tmp_path), "--sample", "2"]) == 0
    captured = capsys.readouterr()
    assert "wrote 3 bvh file(s)" in captured.out and "default skeleton" in captured.err
    info = yaml.safe_load((tmp_path / "export_info.yaml").read_text())
    assert info["unit"] == "metres" and info["fps"] == 30.0 and info["body_model"] == "default skeleton"
    assert sorted(e["file"] for e in info["files"]) == sorted(p.name for p in tmp_path.glob("*.bvh"))
    assert all(e["row"] == "sample 2" and e["frames"] == 40 for e in info["files"])


@pytest.mark.parametrize("case", ["missing", "foreign", "sample", "format", "up_axis"])
def test_cli_errors_are_one_line_and_write_nothing(outputs, tmp_path, capsys, case):
    npz = _two_person(outputs)
    out = tmp_path / "out"
    args = {
        "missing": [str(tmp_path / "nope.npz"), "--format", "smplx"],
        "foreign": [str(write_foreign_npz(tmp_path / "foreign.npz")), "--format", "bvh"],
        "sample": [str(npz), "--format", "smplx", "--sample", "3"],
        "format": [str(npz), "--format", "fbx"],
        "up_axis": [str(npz), "--format", "bvh", "--up-axis", "z"],
    }[case]
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main([*args, "--out", str(out)]))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    expected = {"missing": "not found", "foreign": "key 'betas' is missing", "sample": "sample 3 is out of range",
                "format": "invalid choice", "up_axis": "Y-up"}[case]
    assert expected in err
    assert not out.exists()


def test_bad_clip_in_a_run_directory_writes_nothing(outputs, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for f in output_files(outputs):
        (run / f.name).write_bytes(f.read_bytes())
    (run / "zz.npz").write_bytes(b"broken")
    with pytest.raises(DataError, match="zz.npz"):
        export_outputs(run, tmp_path / "out", "bvh")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="unknown export format"):
        export_outputs(run, tmp_path / "out", "fbx")


def test_module_entry_point(outputs, tmp_path):
    res = subprocess.run([sys.executable, "-m", "magnet.export", str(_two_person(outputs)), "--format", "smplx",
                          "--out", str(tmp_path), "--sample", "0"], cwd=REPO, capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == sorted(
        f"{_two_person(outputs).stem}_gt_p{p}.npz" for p in (0, 1))
