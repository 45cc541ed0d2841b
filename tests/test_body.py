"""Tests for magnet.body: kinematic tree, default skeleton, SMPL-X loading, forward kinematics."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from smplx_fixture import make_synthetic_smplx_npz

from magnet import geometry as g
from magnet.body import BodyModel, DefaultSkeletonWarning, default_body_model, load_body_model
from magnet.body import kinematic_tree as kt
from magnet.body.default_skeleton import STANDING_PELVIS_HEIGHT
from magnet.errors import BodyModelError

SPEC_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15, 20, 25, 26,
                20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38, 21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21,
                52, 53]  # fmt: skip


def random_rot(shape, seed, dtype=torch.float64, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return g.axis_angle_to_matrix(scale * torch.randn(*shape, 3, generator=gen, dtype=dtype))


@pytest.fixture(scope="module")
def default_model():
    return default_body_model()


@pytest.fixture(scope="module")
def smplx_file(tmp_path_factory):
    return make_synthetic_smplx_npz(
        tmp_path_factory.mktemp("smplx") / "SMPLX_NEUTRAL.npz", num_verts=330, seed=3
    )


@pytest.fixture(scope="module")
def smplx_model(smplx_file):
    return load_body_model(smplx_file)


# ------------------------------------------------------------------------------------------------- tree


def test_tree_invariants():
    assert kt.NUM_JOINTS == 55 and len(kt.JOINT_NAMES) == 55 and len(set(kt.JOINT_NAMES)) == 55
    assert list(kt.PARENTS) == SPEC_PARENTS
    assert all(kt.PARENTS[j] < j for j in range(1, 55))
    assert kt.BODY_JOINTS == tuple(range(1, 22)) and kt.HAND_JOINTS == tuple(range(25, 55))
    names = kt.JOINT_NAMES
    assert names[kt.LEFT_FOOT] == "left_foot" and names[kt.RIGHT_FOOT] == "right_foot"
    assert names[kt.LEFT_ANKLE] == "left_ankle" and names[kt.RIGHT_ANKLE] == "right_ankle"
    assert names[0] == "pelvis" and names[15] == "head" and names[20] == "left_wrist" and names[22] == "jaw"
    assert names[23] == "left_eye" and names[24] == "right_eye"
    assert names[25:28] == ("left_index1", "left_index2", "left_index3")
    assert names[37] == "left_thumb1" and names[39] == "left_thumb3"
    assert names[40] == "right_index1" and names[54] == "right_thumb3"
    assert names[31] == "left_pinky1" and names[34] == "left_ring1"
    # finger chains hang off the right wrist
    assert kt.PARENTS[names.index("left_middle1")] == kt.LEFT_WRIST
    assert kt.PARENTS[names.index("right_thumb1")] == kt.RIGHT_WRIST


def test_mirror_index():
    mirror = kt.MIRROR_INDEX
    assert len(mirror) == 55
    assert all(mirror[mirror[j]] == j for j in range(55))
    for j, name in enumerate(kt.JOINT_NAMES):
        other = kt.JOINT_NAMES[mirror[j]]
        if name.startswith("left_"):
            assert other == "right_" + name[5:]
        elif name.startswith("right_"):
            assert other == "left_" + name[6:]
        else:
            assert mirror[j] == j
    assert mirror[1] == 2 and mirror[25] == 40 and mirror[15] == 15
    # mirroring preserves the tree: parent of the mirror = mirror of the parent
    assert all(kt.PARENTS[mirror[j]] == mirror[kt.PARENTS[j]] for j in range(1, 55))


def test_depth_levels():
    levels = kt.depth_levels()
    assert sorted(j for lv in levels for j in lv) == list(range(1, 55))
    seen = {0}
    for lv in levels:
        assert all(kt.PARENTS[j] in seen for j in lv)
        seen.update(lv)
    assert max(j for lv in kt.depth_levels(22) for j in lv) == 21
    assert kt.DEPTH[kt.LEFT_WRIST] == 7 and kt.DEPTH[27] == 10


# ---------------------------------------------------------------------------------------- default skeleton


def test_default_skeleton_proportions(default_model):
    J = default_model.rest_joints(torch.zeros(10, dtype=torch.float64))
    assert J.shape == (55, 3) and J.dtype == torch.float64
    torch.testing.assert_close(J[0], torch.zeros(3, dtype=torch.float64))
    sole = -STANDING_PELVIS_HEIGHT
    # feet a few cm above the soles, ankles a bit higher
    for j in (kt.LEFT_FOOT, kt.RIGHT_FOOT):
        assert 0.01 < J[j, 1] - sole < 0.06
    for j in (kt.LEFT_ANKLE, kt.RIGHT_ANKLE):
        assert 0.04 < J[j, 1] - sole < 0.11
    # eye height of an adult 1.6-1.9 m tall sits roughly 0.1-0.13 m below the top of the head
    height_estimate = J[kt.LEFT_EYE, 1] - sole + 0.12
    assert 1.6 < height_estimate < 1.9
    # left side at +x, facing +z (eyes and toes in front of the pelvis)
    assert J[kt.LEFT_HIP, 0] > 0 and J[kt.LEFT_SHOULDER, 0] > 0 and J[kt.LEFT_WRIST, 0] > 0
    assert J[kt.LEFT_EYE, 2] > 0.05 and J[kt.LEFT_FOOT, 2] > J[kt.LEFT_ANKLE, 2]
    # bone lengths of an adult
    thigh = (J[kt.LEFT_HIP] - J[4]).norm()
    shin = (J[4] - J[kt.LEFT_ANKLE]).norm()
    upper_arm = (J[kt.LEFT_SHOULDER] - J[18]).norm()
    assert 0.35 < thigh < 0.45 and 0.35 < shin < 0.45 and 0.22 < upper_arm < 0.32
    # arm span (wrist to wrist plus two hands) is about the body height
    span = (J[kt.LEFT_WRIST] - J[kt.RIGHT_WRIST]).norm() + 2 * (J[30] - J[kt.LEFT_WRIST]).norm()
    assert abs(span - height_estimate) < 0.15
    assert default_model.is_default and default_model.source == "default skeleton"


def test_default_skeleton_is_symmetric(default_model):
    betas = torch.randn(4, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    J = default_model.rest_joints(betas)
    mirrored = J[:, list(kt.MIRROR_INDEX)] * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(mirrored, J, atol=1e-12, rtol=0)


def test_betas_change_the_skeleton(default_model):
    zero = torch.zeros(10, dtype=torch.float64)
    J0 = default_model.rest_joints(zero)
    # beta0: +6 % size per unit about the pelvis (at the origin)
    b = zero.clone()
    b[0] = 1.0
    torch.testing.assert_close(default_model.rest_joints(b), 1.06 * J0, atol=1e-12, rtol=0)
    # beta1: wider shoulders and hips, same heights
    b = zero.clone()
    b[1] = 2.0
    J1 = default_model.rest_joints(b)
    assert J1[kt.LEFT_SHOULDER, 0] > J0[kt.LEFT_SHOULDER, 0] + 0.005
    assert J1[kt.LEFT_HIP, 0] > J0[kt.LEFT_HIP, 0]
    torch.testing.assert_close(J1[:, 1:], J0[:, 1:], atol=1e-12, rtol=0)
    # beta2: longer legs -> feet lower, upper body unchanged
    b = zero.clone()
    b[2] = 1.0
    J2 = default_model.rest_joints(b)
    assert J2[kt.LEFT_FOOT, 1] < J0[kt.LEFT_FOOT, 1] - 0.02
    torch.testing.assert_close(J2[kt.HEAD], J0[kt.HEAD])
    # linear in betas
    ba, bb = torch.randn(2, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    lhs = default_model.rest_joints(ba + bb) - J0
    rhs = (default_model.rest_joints(ba) - J0) + (default_model.rest_joints(bb) - J0)
    torch.testing.assert_close(lhs, rhs, atol=1e-12, rtol=0)
    # betas 4..9 have no effect on the default skeleton
    b = zero.clone()
    b[4:] = 3.0
    torch.testing.assert_close(default_model.rest_joints(b), J0)
    with pytest.raises(ValueError):
        default_model.rest_joints(torch.zeros(16))


def test_rest_offsets(default_model):
    betas = torch.randn(3, 10, dtype=torch.float64)
    J = default_model.rest_joints(betas)
    off = default_model.rest_offsets(betas)
    assert off.shape == (3, 55, 3)
    torch.testing.assert_close(off[:, 0], J[:, 0])
    torch.testing.assert_close(off[:, 20], J[:, 20] - J[:, 18])


# ------------------------------------------------------------------------------------------------------ FK


def test_fk_identity_reproduces_rest_joints(default_model):
    betas = torch.randn(2, 3, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    root_pos = torch.tensor([0.5, 0.93, -1.0], dtype=torch.float64)
    local = torch.eye(3, dtype=torch.float64).expand(2, 3, 54, 3, 3)
    pos, rot = default_model.forward_kinematics(local, torch.eye(3, dtype=torch.float64), root_pos, betas)
    assert pos.shape == (2, 3, 55, 3) and rot.shape == (2, 3, 55, 3, 3)
    J = default_model.rest_joints(betas)
    torch.testing.assert_close(pos, J - J[..., :1, :] + root_pos, atol=1e-12, rtol=0)
    torch.testing.assert_close(rot, torch.eye(3, dtype=torch.float64).expand_as(rot))


def test_fk_hand_computed_knee_bend(default_model):
    # bend the left knee (joint 4, local slot 3) by 90 degrees about +x: the shin swings backwards (-z)
    local = torch.eye(3, dtype=torch.float64).repeat(21, 1, 1)
    local[4 - 1] = g.axis_angle_to_matrix(torch.tensor([math.pi / 2, 0, 0], dtype=torch.float64))
    assert kt.JOINT_NAMES[4] == "left_knee"
    pos, rot = default_model.forward_kinematics(
        local, torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    )
    J = default_model.rest_joints(torch.zeros(10, dtype=torch.float64))
    shin = J[kt.LEFT_ANKLE] - J[4]
    # R_x(90): (x, y, z) -> (x, -z, y)
    expected = J[4] + torch.stack([shin[0], -shin[2], shin[1]])
    torch.testing.assert_close(pos[kt.LEFT_ANKLE], expected, atol=1e-12, rtol=0)
    assert pos[kt.LEFT_ANKLE, 2] < J[4, 2] - 0.3
    torch.testing.assert_close(pos[kt.RIGHT_ANKLE], J[kt.RIGHT_ANKLE])
    torch.testing.assert_close(rot[kt.LEFT_FOOT], rot[4])


def test_fk_root_rotation_invariance(default_model):
    local = random_rot((6, 54), seed=3, scale=0.4)
    betas = torch.randn(6, 10, dtype=torch.float64)
    root_rot = random_rot((6,), seed=4)
    root_pos = torch.randn(6, 3, dtype=torch.float64)
    pos, rot = default_model.forward_kinematics(local, root_rot, root_pos, betas)
    Q = random_rot((), seed=5)
    pos2, rot2 = default_model.forward_kinematics(local, Q @ root_rot, root_pos, betas)
    torch.testing.assert_close(
        pos2 - root_pos[:, None], (Q @ (pos - root_pos[:, None])[..., None])[..., 0], atol=1e-12, rtol=0
    )
    torch.testing.assert_close(rot2, Q @ rot, atol=1e-12, rtol=0)
    # translating the root translates everything
    pos3, _ = default_model.forward_kinematics(local, root_rot, root_pos + 1.5, betas)
    torch.testing.assert_close(pos3, pos + 1.5, atol=1e-12, rtol=0)


def test_fk_preserves_bone_lengths(default_model):
    betas = torch.randn(8, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    pos, rot = default_model.forward_kinematics(
        random_rot((8, 54), seed=7), random_rot((8,), seed=8), torch.randn(8, 3, dtype=torch.float64), betas
    )
    rest = default_model.rest_joints(betas)
    parents = list(kt.PARENTS[1:])
    torch.testing.assert_close(
        (pos[:, 1:] - pos[:, parents]).norm(dim=-1),
        (rest[:, 1:] - rest[:, parents]).norm(dim=-1),
        atol=1e-12,
        rtol=0,
    )
    det = torch.linalg.det(rot)
    torch.testing.assert_close(det, torch.ones_like(det), atol=1e-12, rtol=0)


def test_fk_body_only_matches_full(default_model):
    local = random_rot((2, 5, 54), seed=9, scale=0.5)
    root_rot, root_pos = random_rot((2, 5), seed=10), torch.randn(2, 5, 3, dtype=torch.float64)
    betas = torch.randn(5, 10, dtype=torch.float64)  # broadcast over the leading axis
    full_pos, full_rot = default_model.forward_kinematics(local, root_rot, root_pos, betas)
    body_pos, body_rot = default_model.forward_kinematics(local[..., :21, :, :], root_rot, root_pos, betas)
    assert body_pos.shape == (2, 5, 22, 3) and body_rot.shape == (2, 5, 22, 3, 3)
    torch.testing.assert_close(body_pos, full_pos[..., :22, :], atol=1e-12, rtol=0)
    torch.testing.assert_close(body_rot, full_rot[..., :22, :, :], atol=1e-12, rtol=0)
    # broadcasting betas gives the same as explicit expansion
    pos_exp, _ = default_model.forward_kinematics(local, root_rot, root_pos, betas.expand(2, 5, 10))
    torch.testing.assert_close(pos_exp, full_pos)
    with pytest.raises(ValueError):
        default_model.forward_kinematics(local[..., :0, :, :], root_rot, root_pos, betas)


def test_fk_dtype_and_gradients(default_model):
    local = random_rot((4, 21), seed=11, dtype=torch.float32).requires_grad_(True)
    root_pos = torch.zeros(4, 3, requires_grad=True)
    betas = torch.zeros(4, 10, requires_grad=True)
    pos, rot = default_model.forward_kinematics(local, torch.eye(3), root_pos, betas)
    assert pos.dtype == torch.float32 and rot.dtype == torch.float32
    pos.square().sum().backward()
    for t in (local, root_pos, betas):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    # betas None = mean shape
    pos0, _ = default_model.forward_kinematics(local.detach(), torch.eye(3), torch.zeros(4, 3))
    torch.testing.assert_close(pos0, pos.detach())


def test_fk_large_batch_runs(default_model):
    n = 4096
    local = torch.eye(3).expand(n, 54, 3, 3)
    pos, _ = default_model.forward_kinematics(local, torch.eye(3), torch.zeros(n, 3), torch.zeros(n, 10))
    assert pos.shape == (n, 55, 3)


def test_buffers_not_in_state_dict(default_model):
    assert default_model.state_dict() == {}
    assert default_model.joint_template.shape == (55, 3)
    assert default_model.joint_shapedirs.shape == (55, 3, 10)


# ------------------------------------------------------------------------------------------- SMPL-X file


def test_smplx_rest_joints_match_regressor(smplx_model, smplx_file):
    data = np.load(smplx_file)
    betas = np.random.default_rng(0).normal(size=10)
    shaped = data["v_template"].astype(np.float64) + data["shapedirs"][:, :, :10].astype(np.float64) @ betas
    expected = data["J_regressor"].astype(np.float64) @ shaped
    J = smplx_model.rest_joints(torch.from_numpy(betas))
    np.testing.assert_allclose(J.numpy(), expected, atol=1e-10)
    assert not smplx_model.is_default and smplx_model.source == str(smplx_file)
    assert J[0, 1] > 0.2  # the synthetic pelvis is off the origin, as in SMPL-X


def _smplx_reference(smplx_file, dtype):
    import smplx

    layer = smplx.SMPLXLayer(model_path=str(smplx_file), ext="npz", num_betas=10, use_pca=False, dtype=dtype)
    sel = layer.vertex_joint_selector
    sel.extra_joints_idxs = sel.extra_joints_idxs % layer.v_template.shape[0]
    return layer


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_fk_matches_smplx(smplx_model, smplx_file, dtype, atol):
    n = 6
    local = random_rot((n, 54), seed=12, dtype=dtype, scale=0.6)
    root_rot = random_rot((n,), seed=13, dtype=dtype)
    betas = torch.randn(n, 10, dtype=dtype, generator=torch.Generator().manual_seed(14))
    transl = torch.randn(n, 3, dtype=dtype, generator=torch.Generator().manual_seed(15))
    out = _smplx_reference(smplx_file, dtype)(
        betas=betas,
        global_orient=root_rot[:, None],
        body_pose=local[:, :21],
        jaw_pose=local[:, 21:22],
        leye_pose=local[:, 22:23],
        reye_pose=local[:, 23:24],
        left_hand_pose=local[:, 24:39],
        right_hand_pose=local[:, 39:54],
        transl=transl,
    )
    # SMPL-X transl + rest pelvis = world pelvis
    root_pos = transl + smplx_model.rest_joints(betas)[:, 0]
    pos, _ = smplx_model.forward_kinematics(local, root_rot, root_pos, betas)
    torch.testing.assert_close(pos, out.joints[:, :55], atol=atol, rtol=0)
    # body-only FK equals smplx with hands, jaw and eyes at identity
    out_body = _smplx_reference(smplx_file, dtype)(
        betas=betas, global_orient=root_rot[:, None], body_pose=local[:, :21], transl=transl
    )
    pos_b, _ = smplx_model.forward_kinematics(local[:, :21], root_rot, root_pos, betas)
    torch.testing.assert_close(pos_b, out_body.joints[:, :22], atol=atol, rtol=0)


def test_vertices_through_smplx(smplx_model):
    local = random_rot((2, 3, 54), seed=16, dtype=torch.float32, scale=0.4)
    root_rot = random_rot((2, 3), seed=17, dtype=torch.float32)
    root_pos = torch.randn(2, 3, 3)
    betas = torch.randn(3, 10)
    verts, joints = smplx_model.smplx_forward(local, root_rot, root_pos, betas)
    assert verts.shape == (2, 3, 330, 3) and joints.shape[:2] == (2, 3)
    pos, _ = smplx_model.forward_kinematics(local, root_rot, root_pos, betas)
    torch.testing.assert_close(joints[..., :55, :], pos, atol=1e-5, rtol=0)
    v = smplx_model.vertices(local[..., :21, :, :], root_rot, root_pos, betas)
    assert v.shape == (2, 3, 330, 3) and torch.isfinite(v).all()
    assert smplx_model.faces.shape == (660, 3)
    # the smplx layer (licensed data) is not a submodule: nothing goes into checkpoints
    assert smplx_model.state_dict() == {} and list(smplx_model.children()) == []


def test_default_model_has_no_vertices(default_model):
    with pytest.raises(BodyModelError, match="SMPL-X"):
        default_model.vertices(torch.eye(3).expand(21, 3, 3), torch.eye(3), torch.zeros(3))


# ------------------------------------------------------------------------------------------------ loading


def test_load_default_warns_once(monkeypatch):
    monkeypatch.delenv("MAGNET_SMPLX_MODEL", raising=False)
    with pytest.warns(DefaultSkeletonWarning, match="default skeleton") as record:
        model = load_body_model()
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert isinstance(model, BodyModel) and model.is_default
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_body_model(warn=False).is_default


def test_load_from_env_and_directory(monkeypatch, smplx_file):
    monkeypatch.setenv("MAGNET_SMPLX_MODEL", str(smplx_file))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = load_body_model()
    assert model.source == str(smplx_file) and not model.is_default
    assert load_body_model(smplx_file.parent).source == str(smplx_file)
    monkeypatch.setenv("MAGNET_SMPLX_MODEL", str(smplx_file.parent / "nope.npz"))
    with pytest.raises(BodyModelError, match="nope.npz"):
        load_body_model()


def _assert_helpful(err: BodyModelError, path):
    msg = str(err)
    assert "\n" not in msg
    assert str(path) in msg
    assert "MAGNET_SMPLX_MODEL" in msg and "body_model=" in msg and "--smplx" in msg and "SMPLX_NEUTRAL.npz" in msg


def test_missing_file_and_directory(tmp_path):
    missing = tmp_path / "SMPLX_NEUTRAL.npz"
    with pytest.raises(BodyModelError, match="not found") as exc:
        load_body_model(missing)
    _assert_helpful(exc.value, missing)
    with pytest.raises(BodyModelError, match="directory") as exc:
        load_body_model(tmp_path)
    _assert_helpful(exc.value, tmp_path)


def _write_npz(path, arrays):
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda d: d.pop("J_regressor"), "'J_regressor' is missing"),
        (lambda d: d.pop("kintree_table"), "'kintree_table' is missing"),
        (lambda d: d.update(J_regressor=d["J_regressor"][:52]), r"'J_regressor' has shape \(52, 330\)"),
        (lambda d: d.update(v_template=d["v_template"][:, :2]), "'v_template' has shape"),
        (lambda d: d.update(weights=d["weights"][:-1]), "'weights' has shape"),
        (lambda d: d.update(shapedirs=d["shapedirs"][:, :, :5]), "at least 10"),
        (lambda d: d.update(posedirs=d["posedirs"][:, :, :100]), "'posedirs' has shape"),
        (lambda d: d["kintree_table"].__setitem__((0, 5), 3), "parents"),
        (lambda d: d.update(f=np.array(["a", "b"])), "'f' has dtype"),
    ],
)
def test_malformed_npz(tmp_path, smplx_file, change, match):
    data = dict(np.load(smplx_file))
    change(data)
    bad = _write_npz(tmp_path / "SMPLX_NEUTRAL.npz", data)
    with pytest.raises(BodyModelError, match=match) as exc:
        load_body_model(bad)
    _assert_helpful(exc.value, bad)


def test_unreadable_and_wrong_format(tmp_path):
    garbage = tmp_path / "SMPLX_NEUTRAL.npz"
    garbage.write_bytes(b"this is not a zip archive")
    with pytest.raises(BodyModelError, match="readable") as exc:
        load_body_model(garbage)
    _assert_helpful(exc.value, garbage)
    pkl = tmp_path / "SMPLX_NEUTRAL.pkl"
    pkl.write_bytes(b"\x80\x04")
    with pytest.raises(BodyModelError, match="npz") as exc:
        load_body_model(pkl)
    _assert_helpful(exc.value, pkl)
    # object arrays (pickled) are refused, not unpickled
    obj = _write_npz(tmp_path / "obj.npz", {"v_template": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(BodyModelError, match="v_template"):
        load_body_model(obj)
