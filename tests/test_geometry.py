"""Tests for magnet.geometry: rotation conversions, slerp and rigid transforms."""

from __future__ import annotations

import math

import pytest
import torch

from magnet import geometry as g


def random_rotations(shape, dtype=torch.float64, seed=0):
    """Uniform random rotation matrices ``[*shape, 3, 3]`` (from normalised Gaussian quaternions)."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(*shape, 4, generator=gen, dtype=dtype)
    return g.quat_to_matrix(q / q.norm(dim=-1, keepdim=True))


def axis_rotation(axis, angle, dtype=torch.float64):
    """Rotation matrix about a unit ``axis`` written out with Rodrigues' formula (independent reference)."""
    a = torch.as_tensor(axis, dtype=dtype)
    a = a / a.norm()
    K = torch.tensor([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]], dtype=dtype)
    return torch.eye(3, dtype=dtype) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def assert_rotation(R, atol):
    eye = torch.eye(3, dtype=R.dtype).expand_as(R)
    torch.testing.assert_close(R.transpose(-1, -2) @ R, eye, atol=atol, rtol=0)
    torch.testing.assert_close(
        torch.linalg.det(R), torch.ones(R.shape[:-2], dtype=R.dtype), atol=atol, rtol=0
    )


HALF_TURNS = [
    axis_rotation([1, 0, 0], math.pi),
    axis_rotation([0, 1, 0], math.pi),
    axis_rotation([0, 0, 1], math.pi),
    axis_rotation([0.3, -0.5, 0.81], math.pi),
    axis_rotation([1, 1, 0], math.pi),
    axis_rotation([0.2, 0.9, -0.1], math.pi - 1e-7),
]


# ------------------------------------------------------------------------------------------ conversions


def test_rot6d_is_first_two_columns():
    R = random_rotations((5,))
    x = g.matrix_to_rot6d(R)
    assert x.shape == (5, 6)
    torch.testing.assert_close(x[:, :3], R[:, :, 0])
    torch.testing.assert_close(x[:, 3:], R[:, :, 1])
    torch.testing.assert_close(g.rot6d_to_matrix(x), R, atol=1e-12, rtol=0)


def test_rot6d_decode_of_arbitrary_input_is_a_rotation():
    x = torch.randn(2, 3, 4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    R = g.rot6d_to_matrix(x)
    assert R.shape == (2, 3, 4, 3, 3)
    assert_rotation(R, 1e-12)
    # first column is the normalised first input vector, second lies in the span of the two inputs
    torch.testing.assert_close(R[..., :, 0], x[..., :3] / x[..., :3].norm(dim=-1, keepdim=True))
    n = torch.cross(x[..., :3], x[..., 3:], dim=-1)
    assert (R[..., :, 1] * n).sum(-1).abs().max() < 1e-10
    # the second column stays on the side of the second input vector
    assert ((R[..., :, 1] * x[..., 3:]).sum(-1) > 0).all()


def test_rot6d_decode_hand_computed():
    # a1 = (2,0,0), a2 = (1,3,0) -> b1 = x, b2 = y, b3 = z
    R = g.rot6d_to_matrix(torch.tensor([2.0, 0, 0, 1, 3, 0]))
    torch.testing.assert_close(R, torch.eye(3))


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_round_trips_random(dtype, atol):
    R = random_rotations((2, 3, 4), dtype=dtype, seed=2)
    assert R.dtype == dtype
    q = g.matrix_to_quat(R)
    assert q.shape == (2, 3, 4, 4) and q.dtype == dtype
    assert (q[..., 0] >= 0).all()
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(2, 3, 4, dtype=dtype), atol=atol, rtol=0)
    torch.testing.assert_close(g.quat_to_matrix(q), R, atol=atol, rtol=0)
    aa = g.matrix_to_axis_angle(R)
    assert aa.shape == (2, 3, 4, 3)
    assert (aa.norm(dim=-1) <= math.pi + atol).all()
    torch.testing.assert_close(g.axis_angle_to_matrix(aa), R, atol=atol, rtol=0)
    torch.testing.assert_close(g.rot6d_to_matrix(g.matrix_to_rot6d(R)), R, atol=atol, rtol=0)
    q2 = g.axis_angle_to_quat(g.quat_to_axis_angle(q))
    torch.testing.assert_close(q2, q, atol=atol, rtol=0)


def test_axis_angle_matches_rodrigues_reference():
    axis = torch.tensor([0.3, -0.5, 0.81], dtype=torch.float64)
    axis = axis / axis.norm()
    for angle in [0.0, 1e-9, 1e-5, 0.3, 2.0, math.pi - 1e-3]:
        R = g.axis_angle_to_matrix(axis * angle)
        torch.testing.assert_close(R, axis_rotation(axis, angle), atol=1e-12, rtol=0)
        aa = g.matrix_to_axis_angle(R)
        torch.testing.assert_close(aa, axis * angle, atol=1e-10, rtol=0)


def test_identity_conversions():
    eye = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(g.matrix_to_quat(eye), torch.tensor([1.0, 0, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(g.matrix_to_axis_angle(eye), torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(g.axis_angle_to_matrix(torch.zeros(3, dtype=torch.float64)), eye)
    torch.testing.assert_close(
        g.matrix_to_rot6d(eye), torch.tensor([1.0, 0, 0, 0, 1, 0], dtype=torch.float64)
    )


@pytest.mark.parametrize("R", HALF_TURNS)
def test_half_turns(R):
    q = g.matrix_to_quat(R)
    assert q[0] >= 0 and abs(q[0]) < 1e-7
    torch.testing.assert_close(g.quat_to_matrix(q), R, atol=1e-10, rtol=0)
    aa = g.matrix_to_axis_angle(R)
    assert abs(aa.norm().item() - math.pi) < 1e-6
    torch.testing.assert_close(g.axis_angle_to_matrix(aa), R, atol=1e-10, rtol=0)
    # the angle to the identity is pi, and to itself 0
    assert abs(g.geodesic_angle(torch.eye(3, dtype=R.dtype), R).item() - math.pi) < 1e-6
    assert g.geodesic_angle(R, R).item() < 1e-7


def test_half_turn_about_x_quaternion_value():
    q = g.matrix_to_quat(torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)))
    torch.testing.assert_close(q.abs(), torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64))


def test_quat_mul_and_conj():
    R1, R2 = random_rotations((6,), seed=3), random_rotations((6,), seed=4)
    q1, q2 = g.matrix_to_quat(R1), g.matrix_to_quat(R2)
    torch.testing.assert_close(g.quat_to_matrix(g.quat_mul(q1, q2)), R1 @ R2, atol=1e-12, rtol=0)
    ident = g.quat_mul(q1, g.quat_conj(q1))
    torch.testing.assert_close(ident, torch.tensor([1.0, 0, 0, 0], dtype=torch.float64).expand(6, 4))
    v = torch.randn(6, 3, dtype=torch.float64)
    torch.testing.assert_close(g.quat_apply(q1, v), (R1 @ v[..., None])[..., 0], atol=1e-12, rtol=0)
    # hand-computed: i * j = k
    i, j = torch.tensor([0.0, 1, 0, 0]), torch.tensor([0.0, 0, 1, 0])
    torch.testing.assert_close(g.quat_mul(i, j), torch.tensor([0.0, 0, 0, 1]))
    torch.testing.assert_close(g.quat_normalize(torch.tensor([2.0, 0, 0, 0])), torch.tensor([1.0, 0, 0, 0]))


def test_quat_to_matrix_ignores_scale():
    q = g.matrix_to_quat(random_rotations((3,), seed=5))
    torch.testing.assert_close(g.quat_to_matrix(3.0 * q), g.quat_to_matrix(q), atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------- slerp


def test_slerp_endpoints_and_midpoint():
    axis = torch.tensor([0.0, 0.6, 0.8], dtype=torch.float64)
    q0 = g.axis_angle_to_quat(axis * 0.2)
    q1 = g.axis_angle_to_quat(axis * 1.4)
    torch.testing.assert_close(g.quat_slerp(q0, q1, 0.0), q0)
    torch.testing.assert_close(g.quat_slerp(q0, q1, 1.0), q1)
    mid = g.quat_slerp(q0, q1, 0.5)
    torch.testing.assert_close(g.quat_to_axis_angle(mid), axis * 0.8, atol=1e-12, rtol=0)
    quarter = g.quat_slerp(q0, q1, torch.tensor(0.25, dtype=torch.float64))
    torch.testing.assert_close(g.quat_to_axis_angle(quarter), axis * 0.5, atol=1e-12, rtol=0)


def test_slerp_shortest_path_with_negated_quaternion():
    axis = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    q0 = g.axis_angle_to_quat(axis * 0.1)
    q1 = -g.axis_angle_to_quat(axis * 0.5)  # same rotation as +q1
    mid = g.quat_slerp(q0, q1, 0.5)
    R_mid = g.quat_to_matrix(mid)
    torch.testing.assert_close(R_mid, g.axis_angle_to_matrix(axis * 0.3), atol=1e-12, rtol=0)


def test_slerp_near_identical_and_batched_t():
    q0 = g.axis_angle_to_quat(torch.tensor([0.3, 0.2, 0.1], dtype=torch.float64))
    q1 = g.quat_mul(q0, g.axis_angle_to_quat(torch.tensor([1e-9, 0, 0], dtype=torch.float64)))
    t = torch.linspace(0, 1, 7, dtype=torch.float64)
    out = g.quat_slerp(q0.expand(7, 4), q1.expand(7, 4), t)
    assert out.shape == (7, 4)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, q0.expand(7, 4), atol=1e-8, rtol=0)
    # identical inputs: gradient is finite
    qa = q0.clone().requires_grad_(True)
    g.quat_slerp(qa, q0, 0.3).sum().backward()
    assert torch.isfinite(qa.grad).all()


def test_slerp_angles_are_linear_in_t():
    R0, R1 = random_rotations((10,), seed=6), random_rotations((10,), seed=7)
    q0, q1 = g.matrix_to_quat(R0), g.matrix_to_quat(R1)
    total = g.geodesic_angle(R0, R1)
    t = torch.rand(10, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    Rt = g.quat_to_matrix(g.quat_slerp(q0, q1, t))
    torch.testing.assert_close(g.geodesic_angle(R0, Rt), t * total, atol=1e-10, rtol=0)
    torch.testing.assert_close(g.geodesic_angle(Rt, R1), (1 - t) * total, atol=1e-10, rtol=0)


# ----------------------------------------------------------------------------------------- yaw, angle


def test_yaw_matrix():
    R = g.yaw_matrix(torch.tensor(math.pi / 2, dtype=torch.float64))
    x = torch.tensor([1.0, 0, 0], dtype=torch.float64)
    torch.testing.assert_close(R @ x, torch.tensor([0.0, 0, -1], dtype=torch.float64), atol=1e-15, rtol=0)
    torch.testing.assert_close(
        R @ torch.tensor([0.0, 0, 1], dtype=torch.float64),
        torch.tensor([1.0, 0, 0], dtype=torch.float64),
        atol=1e-15,
        rtol=0,
    )
    th = torch.tensor([[0.3, -1.0], [2.0, 3.1]], dtype=torch.float64)
    Ry = g.yaw_matrix(th)
    assert Ry.shape == (2, 2, 3, 3)
    torch.testing.assert_close(
        Ry, g.axis_angle_to_matrix(th[..., None] * torch.tensor([0.0, 1, 0], dtype=torch.float64))
    )
    c, s = math.cos(0.3), math.sin(0.3)
    ref = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float64)
    torch.testing.assert_close(Ry[0, 0], ref)
    assert g.yaw_matrix(0.5).dtype == torch.get_default_dtype()


def test_geodesic_angle_values():
    axis = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    for angle in [0.0, 1e-6, 0.5, 2.5, math.pi]:
        Ra = random_rotations((), seed=9)
        Rb = Ra @ g.axis_angle_to_matrix(axis * angle)
        assert abs(g.geodesic_angle(Ra, Rb).item() - angle) < 1e-9
    Rs = random_rotations((3, 4), seed=10)
    assert g.geodesic_angle(Rs, Rs.transpose(-1, -2)).shape == (3, 4)


# ----------------------------------------------------------------------------------------- gradients


def test_gradcheck():
    x = torch.randn(
        3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(11), requires_grad=True
    )
    assert torch.autograd.gradcheck(g.rot6d_to_matrix, (x,))
    R = random_rotations((3,), seed=12).requires_grad_(True)
    assert torch.autograd.gradcheck(g.matrix_to_quat, (R,))
    aa = (torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(13))).requires_grad_(
        True
    )
    assert torch.autograd.gradcheck(g.axis_angle_to_matrix, (aa,))
    q0 = g.matrix_to_quat(random_rotations((3,), seed=14)).requires_grad_(True)
    q1 = g.matrix_to_quat(random_rotations((3,), seed=15)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: g.quat_slerp(a, b, 0.3), (q0, q1))


def test_gradients_finite_at_singular_points():
    for R in [torch.eye(3, dtype=torch.float64), HALF_TURNS[0], HALF_TURNS[3]]:
        Rg = R.clone().requires_grad_(True)
        g.matrix_to_axis_angle(Rg).sum().backward()
        assert torch.isfinite(Rg.grad).all()
    aa = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    g.axis_angle_to_matrix(aa).sum().backward()
    assert torch.isfinite(aa.grad).all()
    R = torch.eye(3, dtype=torch.float64, requires_grad=True)
    g.geodesic_angle(R, torch.eye(3, dtype=torch.float64)).backward()
    assert torch.isfinite(R.grad).all()
    x = torch.tensor([1.0, 0, 0, 0, 1, 0], requires_grad=True)
    g.rot6d_to_matrix(x).sum().backward()
    assert torch.isfinite(x.grad).all()


# ----------------------------------------------------------------------------------------- transforms


def random_tf9(shape, seed):
    gen = torch.Generator().manual_seed(seed)
    R = random_rotations(shape, seed=seed)
    t = torch.randn(*shape, 3, generator=gen, dtype=torch.float64)
    return g.tf9_from_rt(R, t)


def test_tf9_identity_and_rt():
    ident = g.tf9_identity((2, 3), dtype=torch.float64)
    assert ident.shape == (2, 3, 9) and ident.dtype == torch.float64
    R, t = g.tf9_to_rt(ident)
    torch.testing.assert_close(R, torch.eye(3, dtype=torch.float64).expand(2, 3, 3, 3))
    torch.testing.assert_close(t, torch.zeros(2, 3, 3, dtype=torch.float64))
    assert g.tf9_identity(4).shape == (4, 9)
    assert g.tf9_identity().shape == (9,)
    a = random_tf9((5,), seed=20)
    p = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(g.tf9_apply(g.tf9_identity(5, dtype=torch.float64), p), p)
    torch.testing.assert_close(g.tf9_compose(a, ident[0, :1].expand(5, 9)), a)


def test_tf9_hand_computed():
    # yaw by 90 degrees then translate by (1, 2, 3): x -> -z -> (1, 2, 2)
    a = g.tf9_from_rt(
        g.yaw_matrix(torch.tensor(math.pi / 2, dtype=torch.float64)),
        torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64),
    )
    assert a.shape == (9,)
    torch.testing.assert_close(a[6:], torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    out = g.tf9_apply(a, torch.tensor([1.0, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64), atol=1e-15, rtol=0)


def test_tf9_compose_inverse_apply():
    a, b = random_tf9((2, 3, 4), seed=21), random_tf9((2, 3, 4), seed=22)
    p = torch.randn(2, 3, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(23))
    ident = g.tf9_identity((2, 3, 4), dtype=torch.float64)
    torch.testing.assert_close(g.tf9_compose(a, g.tf9_inverse(a)), ident, atol=1e-12, rtol=0)
    torch.testing.assert_close(g.tf9_compose(g.tf9_inverse(a), a), ident, atol=1e-12, rtol=0)
    torch.testing.assert_close(
        g.tf9_apply(g.tf9_compose(a, b), p), g.tf9_apply(a, g.tf9_apply(b, p)), atol=1e-12, rtol=0
    )
    torch.testing.assert_close(g.tf9_apply(g.tf9_inverse(a), g.tf9_apply(a, p)), p, atol=1e-12, rtol=0)
    # broadcasting: one transform applied to many points
    pts = torch.randn(7, 3, dtype=torch.float64)
    out = g.tf9_apply(a[0, 0, 0], pts)
    assert out.shape == (7, 3)
    torch.testing.assert_close(out[3], g.tf9_apply(a[0, 0, 0], pts[3]))


def test_tf7_matches_tf9():
    a9, b9 = random_tf9((4, 5), seed=24), random_tf9((4, 5), seed=25)
    a7, b7 = g.tf9_to_tf7(a9), g.tf9_to_tf7(b9)
    assert a7.shape == (4, 5, 7)
    assert (a7[..., 0] >= 0).all()
    torch.testing.assert_close(g.tf7_to_tf9(a7), a9, atol=1e-12, rtol=0)
    p = torch.randn(4, 5, 3, dtype=torch.float64)
    torch.testing.assert_close(g.tf7_apply(a7, p), g.tf9_apply(a9, p), atol=1e-12, rtol=0)
    torch.testing.assert_close(g.tf7_to_tf9(g.tf7_compose(a7, b7)), g.tf9_compose(a9, b9), atol=1e-12, rtol=0)
    torch.testing.assert_close(g.tf7_to_tf9(g.tf7_inverse(a7)), g.tf9_inverse(a9), atol=1e-12, rtol=0)
    ident7 = g.tf7_identity((4, 5), dtype=torch.float64)
    torch.testing.assert_close(g.tf7_compose(a7, g.tf7_inverse(a7)), ident7, atol=1e-12, rtol=0)
    R, t = g.tf7_to_rt(a7)
    torch.testing.assert_close(g.tf7_from_rt(R, t), a7, atol=1e-12, rtol=0)
    torch.testing.assert_close(t, a9[..., 6:])


def test_float32_transforms():
    a = random_tf9((3,), seed=26).float()
    p = torch.randn(3, 3)
    out = g.tf9_apply(g.tf9_inverse(a), g.tf9_apply(a, p))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, p, atol=1e-5, rtol=0)
    out7 = g.tf7_apply(g.tf7_inverse(g.tf9_to_tf7(a)), g.tf9_apply(a, p))
    assert out7.dtype == torch.float32
    torch.testing.assert_close(out7, p, atol=1e-5, rtol=0)
