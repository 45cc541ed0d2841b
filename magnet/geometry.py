"""Rotations and rigid transforms in pure torch.

Every function is batched over any number of leading axes, works in float32 and float64 and is differentiable.

Conventions (spec section 0):

* quaternions are ``wxyz`` (Hamilton product);
* the 6D rotation is the first two COLUMNS of the matrix, ``[R[:, 0], R[:, 1]]``, decoded by Gram-Schmidt;
* axis-angle is ``angle * unit_axis`` (``[..., 3]``);
* ``T_a_b`` maps b-coordinates to a-coordinates and ``compose(A, B)`` applies ``B`` first, then ``A``;
* a 9D transform is ``[6D rotation, tx, ty, tz]``, a 7D transform is ``[qw, qx, qy, qz, tx, ty, tz]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "axis_angle_to_matrix",
    "axis_angle_to_quat",
    "geodesic_angle",
    "matrix_to_axis_angle",
    "matrix_to_quat",
    "matrix_to_rot6d",
    "quat_apply",
    "quat_conj",
    "quat_mul",
    "quat_normalize",
    "quat_slerp",
    "quat_to_axis_angle",
    "quat_to_matrix",
    "rot6d_to_matrix",
    "tf7_apply",
    "tf7_compose",
    "tf7_from_rt",
    "tf7_identity",
    "tf7_inverse",
    "tf7_to_rt",
    "tf7_to_tf9",
    "tf9_apply",
    "tf9_compose",
    "tf9_from_rt",
    "tf9_identity",
    "tf9_inverse",
    "tf9_to_rt",
    "tf9_to_tf7",
    "yaw_matrix",
]


def _tiny(x: Tensor) -> float:
    """A floor for squared norms that keeps gradients finite (depends on the dtype)."""
    return 1e-30 if x.dtype == torch.float64 else 1e-20


def _normalize(v: Tensor, eps: float = 1e-12) -> Tensor:
    """Normalise ``v[..., n]`` along the last axis (zero vectors stay finite)."""
    return v / torch.sqrt((v * v).sum(-1, keepdim=True).clamp_min(eps * eps))


def _safe_norm(v: Tensor) -> Tensor:
    """Euclidean norm ``[...]`` of ``v[..., n]`` whose gradient is finite (zero) at the zero vector."""
    return torch.sqrt((v * v).sum(-1).clamp_min(_tiny(v)))


# --------------------------------------------------------------------------------------------------- 6D


def rot6d_to_matrix(x: Tensor) -> Tensor:
    """Decode ``x[..., 6]`` (two columns, any scale, not necessarily orthogonal) to ``R[..., 3, 3]``.

    Gram-Schmidt: b1 = normalize(a1), b2 = normalize(a2 - (b1.a2) b1), b3 = b1 x b2; the b's are the columns.
    """
    a1, a2 = x[..., 0:3], x[..., 3:6]
    b1 = _normalize(a1)
    b2 = _normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rot6d(R: Tensor) -> Tensor:
    """``R[..., 3, 3] -> [..., 6]``: the first two columns ``[r00, r10, r20, r01, r11, r21]``."""
    return torch.cat([R[..., :, 0], R[..., :, 1]], dim=-1)


# --------------------------------------------------------------------------------------------- quaternions


def quat_normalize(q: Tensor) -> Tensor:
    """Unit quaternion ``[..., 4]``."""
    return _normalize(q)


def quat_conj(q: Tensor) -> Tensor:
    """Conjugate ``[w, -x, -y, -z]`` of ``q[..., 4]`` (the inverse of a unit quaternion)."""
    return torch.cat([q[..., :1], -q[..., 1:]], dim=-1)


def quat_mul(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product ``a * b`` of wxyz quaternions ``[..., 4]`` (broadcasting); rotates by b first, then a."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def quat_to_matrix(q: Tensor) -> Tensor:
    """``q[..., 4]`` (wxyz, any non-zero norm) -> ``R[..., 3, 3]``."""
    w, x, y, z = q.unbind(-1)
    s = 2.0 / (q * q).sum(-1).clamp_min(_tiny(q))
    xx, yy, zz = x * x * s, y * y * s, z * z * s
    xy, xz, yz = x * y * s, x * z * s, y * z * s
    wx, wy, wz = w * x * s, w * y * s, w * z * s
    rows = [
        torch.stack([1 - yy - zz, xy - wz, xz + wy], -1),
        torch.stack([xy + wz, 1 - xx - zz, yz - wx], -1),
        torch.stack([xz - wy, yz + wx, 1 - xx - yy], -1),
    ]
    return torch.stack(rows, dim=-2)


def matrix_to_quat(R: Tensor) -> Tensor:
    """``R[..., 3, 3] -> q[..., 4]`` unit wxyz quaternion with ``w >= 0``.

    Four-case method: each of 4w^2, 4x^2, 4y^2, 4z^2 is a linear function of the diagonal; the largest one is
    taken as the pivot (it is >= 1, so its division is well conditioned) and the other three components come
    from the off-diagonal sums and differences.
    """
    m00, m01, m02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    m10, m11, m12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    m20, m21, m22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    t = torch.stack(
        [
            1 + m00 + m11 + m22,  # 4 w^2
            1 + m00 - m11 - m22,  # 4 x^2
            1 - m00 + m11 - m22,  # 4 y^2
            1 - m00 - m11 + m22,  # 4 z^2
        ],
        dim=-1,
    )
    # candidate i is (4 q_i * q) / (4 |q_i|); only the pivot candidate is used, the clamp keeps others finite
    cand = torch.stack(
        [
            torch.stack([t[..., 0], m21 - m12, m02 - m20, m10 - m01], -1),
            torch.stack([m21 - m12, t[..., 1], m10 + m01, m02 + m20], -1),
            torch.stack([m02 - m20, m10 + m01, t[..., 2], m21 + m12], -1),
            torch.stack([m10 - m01, m02 + m20, m21 + m12, t[..., 3]], -1),
        ],
        dim=-2,
    )  # [..., 4 cases, 4]
    denom = 2.0 * torch.sqrt(t.clamp_min(0.25))
    cand = cand / denom[..., None]
    pivot = t.argmax(dim=-1)
    idx = pivot[..., None, None].expand(*pivot.shape, 1, 4)
    q = torch.gather(cand, -2, idx).squeeze(-2)
    q = torch.where(q[..., :1] < 0, -q, q)
    return _normalize(q)


def quat_apply(q: Tensor, v: Tensor) -> Tensor:
    """Rotate points ``v[..., 3]`` by unit quaternions ``q[..., 4]`` (broadcasting)."""
    w, u = q[..., :1], q[..., 1:]
    u, v = torch.broadcast_tensors(u, v)
    uv = torch.cross(u, v, dim=-1)
    return v + 2.0 * (w * uv + torch.cross(u, uv, dim=-1))


def quat_slerp(q0: Tensor, q1: Tensor, t: Tensor | float) -> Tensor:
    """Spherical linear interpolation of unit quaternions ``q0, q1 [..., 4]`` at ``t [...]`` (broadcastable).

    Takes the shortest path (q1 is flipped when q0 . q1 < 0) and falls back to normalised linear interpolation
    for nearly identical rotations. ``t = 0`` gives q0, ``t = 1`` gives q1 (or -q1).
    """
    q0 = quat_normalize(q0)
    q1 = quat_normalize(q1)
    t = torch.as_tensor(t, dtype=q0.dtype, device=q0.device)[..., None]
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    # robust angle between the two unit 4-vectors
    theta = 2.0 * torch.atan2(_safe_norm(q0 - q1), _safe_norm(q0 + q1))[..., None]
    small = theta < 1e-4
    theta_safe = torch.where(small, torch.ones_like(theta), theta)
    sin_theta = torch.sin(theta_safe)
    w0 = torch.where(small, 1.0 - t, torch.sin((1.0 - t) * theta_safe) / sin_theta)
    w1 = torch.where(small, t, torch.sin(t * theta_safe) / sin_theta)
    return quat_normalize(w0 * q0 + w1 * q1)


# --------------------------------------------------------------------------------------------- axis-angle


def axis_angle_to_quat(aa: Tensor) -> Tensor:
    """``aa[..., 3]`` (angle * unit axis) -> unit wxyz quaternion ``[..., 4]`` (w >= 0 for angles <= pi)."""
    th2 = (aa * aa).sum(-1, keepdim=True)
    small = th2 < 1e-8
    th = torch.sqrt(torch.where(small, torch.ones_like(th2), th2))
    half = 0.5 * th
    k = torch.where(small, 0.5 - th2 / 48.0, torch.sin(half) / th)  # sin(theta/2) / theta
    w = torch.where(small, 1.0 - th2 / 8.0, torch.cos(half))
    return torch.cat([w, aa * k], dim=-1)


def quat_to_axis_angle(q: Tensor) -> Tensor:
    """Unit wxyz quaternion ``q[..., 4]`` -> axis-angle ``[..., 3]`` with angle in [0, pi]."""
    q = quat_normalize(q)
    q = torch.where(q[..., :1] < 0, -q, q)
    w, v = q[..., :1], q[..., 1:]
    n2 = (v * v).sum(-1, keepdim=True)
    small = n2 < 1e-8
    n = torch.sqrt(torch.where(small, torch.ones_like(n2), n2))
    # angle / |v| = 2 atan2(|v|, w) / |v|; Taylor for small |v| (then w ~ 1)
    k = torch.where(small, 2.0 / w - (2.0 / 3.0) * n2 / w**3, 2.0 * torch.atan2(n, w) / n)
    return v * k


def axis_angle_to_matrix(aa: Tensor) -> Tensor:
    """``aa[..., 3] -> R[..., 3, 3]``."""
    return quat_to_matrix(axis_angle_to_quat(aa))


def matrix_to_axis_angle(R: Tensor) -> Tensor:
    """``R[..., 3, 3] -> aa[..., 3]`` with angle in [0, pi] (robust at 0 and at 180 degrees)."""
    return quat_to_axis_angle(matrix_to_quat(R))


# ------------------------------------------------------------------------------------------- misc rotations


def yaw_matrix(angle: Tensor | float) -> Tensor:
    """Rotation about +y by ``angle[...]`` radians -> ``[..., 3, 3]`` = [[c, 0, s], [0, 1, 0], [-s, 0, c]]."""
    angle = torch.as_tensor(angle)
    if not angle.is_floating_point():
        angle = angle.to(torch.get_default_dtype())
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    rows = [
        torch.stack([c, zero, s], -1),
        torch.stack([zero, one, zero], -1),
        torch.stack([-s, zero, c], -1),
    ]
    return torch.stack(rows, dim=-2)


def geodesic_angle(Ra: Tensor, Rb: Tensor) -> Tensor:
    """Angle in radians ``[...]`` (in [0, pi]) of the relative rotation ``Ra^T Rb`` (accurate near 0 and pi)."""
    q = matrix_to_quat(Ra.transpose(-1, -2) @ Rb)
    return 2.0 * torch.atan2(_safe_norm(q[..., 1:]), q[..., 0].abs())


# ------------------------------------------------------------------------------------------- 9D transforms


def tf9_identity(shape: int | tuple[int, ...] | torch.Size = (), *, dtype=None, device=None) -> Tensor:
    """Identity 9D transforms of leading shape ``shape`` -> ``[*shape, 9]``."""
    if isinstance(shape, int):
        shape = (shape,)
    x = torch.zeros(*shape, 9, dtype=dtype, device=device)
    x[..., 0] = 1.0
    x[..., 4] = 1.0
    return x


def tf9_from_rt(R: Tensor, t: Tensor) -> Tensor:
    """``R[..., 3, 3], t[..., 3] -> [..., 9]`` (leading axes broadcast)."""
    r6 = matrix_to_rot6d(R)
    lead = torch.broadcast_shapes(r6.shape[:-1], t.shape[:-1])
    return torch.cat([r6.expand(*lead, 6), t.expand(*lead, 3)], dim=-1)


def tf9_to_rt(x: Tensor) -> tuple[Tensor, Tensor]:
    """``x[..., 9] -> (R[..., 3, 3], t[..., 3])``; the rotation is re-orthonormalised by Gram-Schmidt."""
    return rot6d_to_matrix(x[..., :6]), x[..., 6:9]


def _compose_rt(Ra: Tensor, ta: Tensor, Rb: Tensor, tb: Tensor) -> tuple[Tensor, Tensor]:
    return Ra @ Rb, (Ra @ tb[..., None])[..., 0] + ta


def _inverse_rt(R: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    Rt = R.transpose(-1, -2)
    return Rt, -(Rt @ t[..., None])[..., 0]


def tf9_compose(a: Tensor, b: Tensor) -> Tensor:
    """``a . b`` for 9D transforms ``[..., 9]`` (apply b first, then a; leading axes broadcast)."""
    R, t = _compose_rt(*tf9_to_rt(a), *tf9_to_rt(b))
    return tf9_from_rt(R, t)


def tf9_inverse(a: Tensor) -> Tensor:
    """Inverse of 9D transforms ``[..., 9]``."""
    return tf9_from_rt(*_inverse_rt(*tf9_to_rt(a)))


def tf9_apply(a: Tensor, points: Tensor) -> Tensor:
    """Map ``points[..., 3]`` by ``a[..., 9]``: ``R p + t`` (leading axes broadcast)."""
    R, t = tf9_to_rt(a)
    return (R @ points[..., None])[..., 0] + t


# ------------------------------------------------------------------------------------------- 7D transforms


def tf7_identity(shape: int | tuple[int, ...] | torch.Size = (), *, dtype=None, device=None) -> Tensor:
    """Identity 7D transforms of leading shape ``shape`` -> ``[*shape, 7]``."""
    if isinstance(shape, int):
        shape = (shape,)
    x = torch.zeros(*shape, 7, dtype=dtype, device=device)
    x[..., 0] = 1.0
    return x


def tf7_from_rt(R: Tensor, t: Tensor) -> Tensor:
    """``R[..., 3, 3], t[..., 3] -> [..., 7]`` (quaternion with w >= 0; leading axes broadcast)."""
    q = matrix_to_quat(R)
    lead = torch.broadcast_shapes(q.shape[:-1], t.shape[:-1])
    return torch.cat([q.expand(*lead, 4), t.expand(*lead, 3)], dim=-1)


def tf7_to_rt(x: Tensor) -> tuple[Tensor, Tensor]:
    """``x[..., 7] -> (R[..., 3, 3], t[..., 3])``."""
    return quat_to_matrix(x[..., :4]), x[..., 4:7]


def tf7_compose(a: Tensor, b: Tensor) -> Tensor:
    """``a . b`` for 7D transforms ``[..., 7]`` (apply b first, then a; leading axes broadcast)."""
    qa, ta = quat_normalize(a[..., :4]), a[..., 4:7]
    qb, tb = b[..., :4], b[..., 4:7]
    q = quat_normalize(quat_mul(qa, qb))
    t = quat_apply(qa, tb) + ta
    lead = torch.broadcast_shapes(q.shape[:-1], t.shape[:-1])
    return torch.cat([q.expand(*lead, 4), t.expand(*lead, 3)], dim=-1)


def tf7_inverse(a: Tensor) -> Tensor:
    """Inverse of 7D transforms ``[..., 7]``."""
    qi = quat_conj(quat_normalize(a[..., :4]))
    return torch.cat([qi, -quat_apply(qi, a[..., 4:7])], dim=-1)


def tf7_apply(a: Tensor, points: Tensor) -> Tensor:
    """Map ``points[..., 3]`` by ``a[..., 7]`` (leading axes broadcast)."""
    return quat_apply(quat_normalize(a[..., :4]), points) + a[..., 4:7]


def tf9_to_tf7(x: Tensor) -> Tensor:
    """``[..., 9] -> [..., 7]`` (same rigid transform)."""
    return tf7_from_rt(*tf9_to_rt(x))


def tf7_to_tf9(x: Tensor) -> Tensor:
    """``[..., 7] -> [..., 9]`` (same rigid transform)."""
    return tf9_from_rt(*tf7_to_rt(x))
