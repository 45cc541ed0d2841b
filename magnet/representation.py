"""The per-person packed motion vector, canonical frames, derived transforms and normalisation statistics.

One frame of one person is a vector of ``D(P) = 374 + 9 (P - 1)`` numbers (``P`` = persons in the clip), in this
order (reference spec 1.4; ranges for any P):

=====================  ============================  ==========================================================
field                  slice                         meaning
=====================  ============================  ==========================================================
``betas``              0:10                          SMPL-X shape, repeated on every frame
``body_rot``           10:136                        local 6D rotations of SMPL-X joints 1..21
``hand_rot``           136:316                       15 left then 15 right finger joints, 6D
``delta``              316:325                       9D  C(t-1)^-1 C(t) (identity at t = 0)
``canon_root``         325:334                       9D  C^-1 Root: pelvis in the person's canonical frame
``world_root``         334:343                       9D  pelvis pose in the world
``world_canon``        343:352                       9D  canonical frame C in the world
``partners``           352:352+9(P-1)                9D  C_self^-1 C_j for every other person j, ascending
``contacts``           next 21                       0/1 contact flag per body joint 1..21
``mask``               last 1                        tpose_mask: 1 valid frame, 0 padding / void person
=====================  ============================  ==========================================================

9D transform = ``[6D rotation (first two columns of R), tx, ty, tz]``; ``T_a_b`` maps b- to a-coordinates.
The mean/std vector has ``STATS_DIM = 361`` entries: the first 352 fields above, then one pooled partner 9-vector.
Normalisation touches the first ``NUM_NORMALISED(P) = 352 + 9 (P - 1)`` dims; contacts and mask stay raw.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from magnet.errors import DataError
from magnet.geometry import matrix_to_rot6d, rot6d_to_matrix, yaw_matrix
from magnet.utils import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    from magnet.body import BodyModel

BASE_DIM = 374
"""``D(1)``: the packed dimension of a solo person."""
PARTNER_DIM = 9
STATS_DIM = 361
PER_PERSON_STATS = 352
"""Number of leading dims whose statistics are per-person-frame (everything before the partner block)."""
STATS_PER_PERSON = slice(0, PER_PERSON_STATS)
STATS_PARTNER = slice(PER_PERSON_STATS, STATS_DIM)
NUM_BODY_JOINTS = 21
NUM_HAND_JOINTS = 30
NUM_CONTACTS = 21
STATS_FRAME_STEP = 10
STD_FLOOR = 1e-2


def person_dim(num_persons: int) -> int:
    """Packed per-person dimension ``D(P) = 374 + 9 (P - 1)`` (374/383/392/401 for P = 1..4)."""
    if int(num_persons) < 1:
        raise DataError(f"number of persons must be >= 1, got {num_persons}")
    return BASE_DIM + PARTNER_DIM * (int(num_persons) - 1)


def num_persons_for_dim(dim: int) -> int:
    """Inverse of :func:`person_dim`; raises DataError if ``dim`` is not ``374 + 9 k`` for some ``k >= 0``."""
    dim = int(dim)
    if dim < BASE_DIM or (dim - BASE_DIM) % PARTNER_DIM:
        raise DataError(
            f"feature dimension {dim} is not a packed motion dimension 374 + 9*(P-1) (374, 383, 392, 401, ...); "
            "the data file was not written by magnet-preprocess or is corrupt"
        )
    return 1 + (dim - BASE_DIM) // PARTNER_DIM


def NUM_NORMALISED(num_persons: int) -> int:
    """Number of leading dims that are normalised: ``352 + 9 (P - 1)``."""
    return PER_PERSON_STATS + PARTNER_DIM * (int(num_persons) - 1)


@dataclass(frozen=True)
class PackedLayout:
    """Index ranges (``slice``) of every field of the packed vector for ``num_persons`` persons."""

    num_persons: int

    def __post_init__(self) -> None:
        person_dim(self.num_persons)  # validates

    betas = slice(0, 10)
    body_rot = slice(10, 136)
    hand_rot = slice(136, 316)
    delta = slice(316, 325)
    canon_root = slice(325, 334)
    world_root = slice(334, 343)
    world_canon = slice(343, 352)

    @property
    def dim(self) -> int:
        """``D(P)``."""
        return person_dim(self.num_persons)

    @property
    def partners(self) -> slice:
        """All partner 9-slots: ``352 : 352 + 9 (P - 1)`` (empty for P = 1)."""
        return slice(PER_PERSON_STATS, NUM_NORMALISED(self.num_persons))

    def partner(self, j: int) -> slice:
        """The ``j``-th partner slot (``0 <= j < P - 1``; ascending other-person index, self skipped)."""
        if not 0 <= j < self.num_persons - 1:
            raise IndexError(f"partner slot {j} out of range for {self.num_persons} persons")
        start = PER_PERSON_STATS + PARTNER_DIM * j
        return slice(start, start + PARTNER_DIM)

    @property
    def contacts(self) -> slice:
        start = NUM_NORMALISED(self.num_persons)
        return slice(start, start + NUM_CONTACTS)

    @property
    def mask(self) -> slice:
        """``tpose_mask``: the last dim (a length-1 slice)."""
        return slice(self.dim - 1, self.dim)

    @property
    def normalised(self) -> slice:
        """The dims that (de)normalisation touches: ``0 : 352 + 9 (P - 1)``."""
        return slice(0, NUM_NORMALISED(self.num_persons))

    FIELDS = ("betas", "body_rot", "hand_rot", "delta", "canon_root", "world_root", "world_canon",
              "partners", "contacts", "mask")

    def fields(self) -> dict[str, slice]:
        """``{field name: slice}`` in packing order."""
        return {name: getattr(self, name) for name in self.FIELDS}


# ----------------------------------------------------------------------------------------- canonical frames


def _as_tensor64(x: Any) -> Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).to(torch.float64)


def _inv(R: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    Rt = R.transpose(-1, -2)
    return Rt, -(Rt @ t[..., None])[..., 0]


def _mul(Ra: Tensor, ta: Tensor, Rb: Tensor, tb: Tensor) -> tuple[Tensor, Tensor]:
    return Ra @ Rb, (Ra @ tb[..., None])[..., 0] + ta


def _tf9(R: Tensor, t: Tensor) -> Tensor:
    return torch.cat([matrix_to_rot6d(R), t], dim=-1)


def _rt(x9: Tensor) -> tuple[Tensor, Tensor]:
    return rot6d_to_matrix(x9[..., :6]), x9[..., 6:9]


def canonical_from_root(root_R: Tensor, root_t: Tensor) -> tuple[Tensor, Tensor]:
    """Canonical frame of a person from its root (pelvis) pose.

    ``root_R[..., 3, 3]``, ``root_t[..., 3]`` -> ``(C_R[..., 3, 3], C_t[..., 3])``. ``C_R`` is a yaw about +y that
    takes the world x-axis onto the horizontal projection of the pelvis x-axis ``e = root_R @ (1, 0, 0)``:
    yaw = -atan2(e_z, e_x). ``C_t`` is ``root_t`` with y set to 0.
    """
    e = root_R[..., :, 0]
    yaw = -torch.atan2(e[..., 2], e[..., 0])
    C_R = yaw_matrix(yaw).to(root_R.dtype)
    C_t = root_t.clone()
    C_t[..., 1] = 0.0
    return C_R, C_t


def _check_shape(name: str, x: Tensor, shape: tuple[int, ...]) -> None:
    if tuple(x.shape) != shape:
        raise DataError(f"pack_sequence: {name} has shape {tuple(x.shape)}, expected {shape}")


def pack_sequence(
    betas: Tensor,
    body_rot: Tensor,
    hand_rot: Tensor | None,
    root_R: Tensor,
    root_t: Tensor,
    contacts: Tensor,
    recentre: bool = True,
) -> Tensor:
    """Pack one clip into ``[T, P, D(P)]`` float64 (the caller casts, e.g. to float32 for HDF5).

    Inputs (torch or numpy): ``betas[T, P, 10]``, ``body_rot[T, P, 21, 3, 3]`` local rotations of joints 1..21,
    ``hand_rot[T, P, 30, 3, 3]`` (or None: identity hands), ``root_R[T, P, 3, 3]`` and ``root_t[T, P, 3]`` the
    world pelvis pose (Y-up, floor at y = 0), ``contacts[T, P, 21]``.

    With ``recentre`` the x/z origin moves so that the mean over persons of ``C_i(0).t`` is 0 (this shifts the
    world root and world canonical translations). Derived transforms: ``canon_root = C^-1 Root``,
    ``delta(t) = C(t-1)^-1 C(t)`` (identity at t = 0), ``partners[i][j] = C_i^-1 C_j`` for j != i ascending.
    ``tpose_mask`` is 1 everywhere.
    """
    root_R, root_t = _as_tensor64(root_R), _as_tensor64(root_t)
    if root_R.ndim != 4:
        raise DataError(f"pack_sequence: root_R has shape {tuple(root_R.shape)}, expected [T, P, 3, 3]")
    T, P = root_R.shape[:2]
    betas, body_rot, contacts = _as_tensor64(betas), _as_tensor64(body_rot), _as_tensor64(contacts)
    if hand_rot is None:
        hand_rot = torch.eye(3, dtype=torch.float64).expand(T, P, NUM_HAND_JOINTS, 3, 3)
    hand_rot = _as_tensor64(hand_rot)
    _check_shape("root_R", root_R, (T, P, 3, 3))
    _check_shape("root_t", root_t, (T, P, 3))
    _check_shape("betas", betas, (T, P, 10))
    _check_shape("body_rot", body_rot, (T, P, NUM_BODY_JOINTS, 3, 3))
    _check_shape("hand_rot", hand_rot, (T, P, NUM_HAND_JOINTS, 3, 3))
    _check_shape("contacts", contacts, (T, P, NUM_CONTACTS))
    if T < 1:
        raise DataError("pack_sequence: the clip has no frames")

    C_R, C_t = canonical_from_root(root_R, root_t)
    if recentre:
        offset = C_t[0].mean(dim=0)  # [3], y is 0
        offset[1] = 0.0
        root_t = root_t - offset
        C_t = C_t - offset
    Ci_R, Ci_t = _inv(C_R, C_t)

    canon_root = _mul(Ci_R, Ci_t, root_R, root_t)
    d_R = torch.eye(3, dtype=torch.float64).expand(T, P, 3, 3).clone()
    d_t = torch.zeros(T, P, 3, dtype=torch.float64)
    if T > 1:
        d_R[1:], d_t[1:] = _mul(Ci_R[:-1], Ci_t[:-1], C_R[1:], C_t[1:])

    # partners: SP[t, i, j] = C_i^-1 C_j over all pairs, then drop the diagonal
    sp_R, sp_t = _mul(Ci_R[:, :, None], Ci_t[:, :, None], C_R[:, None, :], C_t[:, None, :])  # [T, P, P, ...]
    sp = _tf9(sp_R, sp_t)  # [T, P, P, 9]
    partner_blocks = []
    for i in range(P):
        others = [j for j in range(P) if j != i]
        partner_blocks.append(sp[:, i, others].reshape(T, PARTNER_DIM * (P - 1)))
    partners = torch.stack(partner_blocks, dim=1)  # [T, P, 9 (P-1)]

    out = torch.cat(
        [
            betas,
            matrix_to_rot6d(body_rot).reshape(T, P, -1),
            matrix_to_rot6d(hand_rot).reshape(T, P, -1),
            _tf9(d_R, d_t),
            _tf9(*canon_root),
            _tf9(root_R, root_t),
            _tf9(C_R, C_t),
            partners,
            contacts,
            torch.ones(T, P, 1, dtype=torch.float64),
        ],
        dim=-1,
    )
    assert out.shape[-1] == person_dim(P)
    return out


def integrate_canonical(delta: Tensor, start: Tensor) -> Tensor:
    """Integrate canonical frames: ``C(0) = start``, ``C(t) = C(t-1) . delta(t)`` (``delta[..., 0, :, :]`` ignored).

    ``delta[..., T, P, 9]``, ``start[..., P, 9]`` -> ``C[..., T, P, 9]`` (9D, same dtype as ``delta``).
    """
    if delta.ndim < 3 or delta.shape[-1] != 9 or start.shape != delta.shape[:-3] + delta.shape[-2:]:
        raise DataError(
            f"integrate_canonical: delta {tuple(delta.shape)} must be [..., T, P, 9] and start "
            f"{tuple(start.shape)} must be [..., P, 9]"
        )
    d_R, d_t = _rt(delta)
    R, t = _rt(start.to(delta.dtype))
    Rs, ts = [R], [t]
    for k in range(1, delta.shape[-3]):
        R, t = _mul(R, t, d_R[..., k, :, :, :], d_t[..., k, :, :])
        Rs.append(R)
        ts.append(t)
    return _tf9(torch.stack(Rs, dim=-4), torch.stack(ts, dim=-3))


def world_root_trajectory(x: Tensor, start: Tensor | None = None) -> Tensor:
    """World root (pelvis) poses rebuilt from the relative fields of DENORMALISED packed motion.

    ``x[..., T, P, D(P)]`` -> ``T_world_root [..., T, P, 9]``: the canonical frames are integrated from
    ``delta`` (:func:`integrate_canonical`) starting at ``start[..., P, 9]`` (default: ``world_canon`` of frame
    0), then ``Root(t) = C(t) . canon_root(t)``. On packed data this reproduces the ``world_root`` field; on
    generated motion (which has no world fields) it is the trajectory to animate.
    """
    x = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    if x.ndim < 3:
        raise DataError(f"world_root_trajectory: x {tuple(x.shape)} must be [..., T, P, D]")
    lay = PackedLayout(num_persons_for_dim(x.shape[-1]))
    if start is None:
        start = x[..., 0, :, lay.world_canon]
    C = integrate_canonical(x[..., lay.delta], start)
    R, t = _mul(*_rt(C), *_rt(x[..., lay.canon_root]))
    return _tf9(R, t)


# -------------------------------------------------------------------------------------------- unpacking


def unpack(x: Tensor) -> dict[str, Any]:
    """Split packed (denormalised) vectors ``x[..., D(P)]`` into named, decoded fields.

    Returns ``betas[..., 10]``, ``body_rot[..., 21, 3, 3]``, ``hand_rot[..., 30, 3, 3]``, 9D transforms as
    ``(R[..., 3, 3], t[..., 3])`` under ``delta``, ``canon_root``, ``world_root``, ``world_canon``,
    ``partners`` as ``(R[..., P-1, 3, 3], t[..., P-1, 3])``, ``contacts[..., 21]`` and ``mask[...]``.
    Numpy input is converted to torch.
    """
    x = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    lay = PackedLayout(num_persons_for_dim(x.shape[-1]))
    lead = x.shape[:-1]
    P = lay.num_persons
    return {
        "betas": x[..., lay.betas],
        "body_rot": rot6d_to_matrix(x[..., lay.body_rot].reshape(*lead, NUM_BODY_JOINTS, 6)),
        "hand_rot": rot6d_to_matrix(x[..., lay.hand_rot].reshape(*lead, NUM_HAND_JOINTS, 6)),
        "delta": _rt(x[..., lay.delta]),
        "canon_root": _rt(x[..., lay.canon_root]),
        "world_root": _rt(x[..., lay.world_root]),
        "world_canon": _rt(x[..., lay.world_canon]),
        "partners": _rt(x[..., lay.partners].reshape(*lead, P - 1, PARTNER_DIM)),
        "contacts": x[..., lay.contacts],
        "mask": x[..., lay.mask][..., 0],
    }


def world_joints(x: Tensor, body_model: BodyModel) -> Tensor:
    """World positions of SMPL-X joints 0..21 by forward kinematics.

    ``x[..., T, P, D]`` DENORMALISED packed motion -> ``[..., T, P, 22, 3]``: root pose from ``world_root``,
    local rotations of joints 1..21 from ``body_rot``, betas from ``betas``. Computed in the dtype of ``x`` on
    the body model's device.
    """
    x = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    lay = PackedLayout(num_persons_for_dim(x.shape[-1]))
    lead = x.shape[:-1]
    buffer = next(iter(body_model.buffers()), None)
    if buffer is not None:
        x = x.to(device=buffer.device)
    root_R, root_t = _rt(x[..., lay.world_root])
    local = rot6d_to_matrix(x[..., lay.body_rot].reshape(*lead, NUM_BODY_JOINTS, 6))
    positions, _ = body_model.forward_kinematics(local, root_R, root_t, x[..., lay.betas])
    return positions


# -------------------------------------------------------------------------------------- person selection


def select_persons(x: Any, order: list[int]) -> Any:
    """Reorder / subset / pad the persons of NORMALISED packed motion ``x[..., P, D(P)]``.

    ``order[k]`` is the old person index placed at new slot ``k``, or ``-1`` for a void person. Returns
    ``[..., len(order), D(len(order))]`` (numpy in, numpy out; torch in, torch out). Every person's partner block
    is rebuilt: slots follow ascending NEW person index (self skipped); a slot toward a void person is all zeros,
    and a void person's own features are all zeros including ``tpose_mask = 0``.

    Zeros are the normalised mean, so this is meant for normalised data (the datamodule uses it for person
    shuffling, subsets and void persons). Contacts and mask are copied unchanged for real persons.
    """
    P = x.shape[-2]
    old = PackedLayout(num_persons_for_dim(x.shape[-1]))
    if old.num_persons != P:
        raise DataError(f"select_persons: {P} persons but feature dimension {x.shape[-1]} is for {old.num_persons}")
    order = [int(k) for k in order]
    if not order:
        raise DataError("select_persons: order is empty")
    real = [k for k in order if k != -1]
    if any(not 0 <= k < P for k in real) or len(set(real)) != len(real):
        raise DataError(f"select_persons: order {order} must hold distinct indices in [0, {P}) or -1")
    new = PackedLayout(len(order))
    D_old, D_new = old.dim, new.dim
    zero = P * D_old  # index of the appended zero column
    idx = np.full((len(order), D_new), zero, dtype=np.int64)
    own = np.arange(PER_PERSON_STATS)
    tail = np.arange(NUM_CONTACTS + 1)
    for a, i in enumerate(order):
        if i == -1:
            continue
        base = i * D_old
        idx[a, :PER_PERSON_STATS] = base + own
        idx[a, new.contacts.start:] = base + old.contacts.start + tail
        others = [b for b in range(len(order)) if b != a]
        for slot, b in enumerate(others):
            j = order[b]
            if j == -1:
                continue
            old_slot = j if j < i else j - 1
            src = base + old.partner(old_slot).start
            dst = new.partner(slot).start
            idx[a, dst:dst + PARTNER_DIM] = src + np.arange(PARTNER_DIM)
    flat = x.reshape(*x.shape[:-2], P * D_old)
    if isinstance(x, Tensor):
        ext = torch.cat([flat, flat.new_zeros(*flat.shape[:-1], 1)], dim=-1)
        return ext[..., torch.as_tensor(idx, device=x.device)]
    flat = np.asarray(flat)
    ext = np.concatenate([flat, np.zeros((*flat.shape[:-1], 1), dtype=flat.dtype)], axis=-1)
    return ext[..., idx]


# ------------------------------------------------------------------------------------------- statistics


class StatsAccumulator:
    """Streaming mean/std over packed clips (Chan's parallel update in float64).

    ``update(x[T, P, D])`` takes every ``frame_step``-th frame (0, 10, 20, ...). Dims 0..351 are accumulated over
    all (frame, person) pairs; the partner statistics pool every partner slot of every person.
    """

    def __init__(self, frame_step: int = STATS_FRAME_STEP, std_floor: float = STD_FLOOR):
        self.frame_step = int(frame_step)
        self.std_floor = float(std_floor)
        self._own = [0, np.zeros(PER_PERSON_STATS), np.zeros(PER_PERSON_STATS)]  # count, mean, M2
        self._partner = [0, np.zeros(PARTNER_DIM), np.zeros(PARTNER_DIM)]

    @staticmethod
    def _merge(acc: list, rows: np.ndarray) -> None:
        n_b = rows.shape[0]
        if n_b == 0:
            return
        mean_b = rows.mean(axis=0)
        m2_b = ((rows - mean_b) ** 2).sum(axis=0)
        n_a, mean_a, m2_a = acc
        n = n_a + n_b
        delta = mean_b - mean_a
        acc[0] = n
        acc[1] = mean_a + delta * (n_b / n)
        acc[2] = m2_a + m2_b + delta**2 * (n_a * n_b / n)

    def update(self, x: Any, name: str = "sequence") -> None:
        """Add one clip ``x[T, P, D(P)]`` (numpy or torch, raw values)."""
        x = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
        if x.ndim != 3:
            raise DataError(f"stats: {name} has shape {x.shape}, expected [T, P, D]")
        P = x.shape[1]
        if x.shape[2] != person_dim(P):
            raise DataError(f"stats: {name} has D={x.shape[2]} but P={P} persons needs D={person_dim(P)}")
        sub = x[:: self.frame_step].astype(np.float64)
        self._merge(self._own, sub[..., :PER_PERSON_STATS].reshape(-1, PER_PERSON_STATS))
        if P > 1:
            self._merge(self._partner, sub[..., PackedLayout(P).partners].reshape(-1, PARTNER_DIM))

    def result(self) -> MotionStats:
        """The accumulated :class:`MotionStats` (partner stats NaN if only solo clips were seen)."""
        if self._own[0] == 0:
            raise DataError("stats: no frames to compute the mean/std from (is the train split empty?)")
        mean = np.empty(STATS_DIM)
        var = np.empty(STATS_DIM)
        mean[STATS_PER_PERSON] = self._own[1]
        var[STATS_PER_PERSON] = self._own[2] / self._own[0]
        if self._partner[0]:
            mean[STATS_PARTNER] = self._partner[1]
            var[STATS_PARTNER] = self._partner[2] / self._partner[0]
        else:
            mean[STATS_PARTNER] = np.nan
            var[STATS_PARTNER] = np.nan
        std = np.maximum(np.sqrt(var), self.std_floor)  # NaN stays NaN
        return MotionStats(mean, std)


def compute_stats(
    sequences: Iterable[Any], frame_step: int = STATS_FRAME_STEP, std_floor: float = STD_FLOOR
) -> MotionStats:
    """Mean/std (361,) over an iterable of raw clips ``[T, P, D(P)]`` (use the train split only).

    Every ``frame_step``-th frame; population std (ddof 0) floored at ``std_floor``; float64. With only solo clips
    the 9 partner statistics are NaN (as in the reference); normalising P = 1 data still works.
    """
    acc = StatsAccumulator(frame_step, std_floor)
    for k, x in enumerate(sequences):
        acc.update(x, name=f"sequence #{k}")
    return acc.result()


class MotionStats:
    """Normalisation statistics: ``mean[361]``, ``std[361]`` float64 numpy arrays (reference npz layout).

    ``normalise`` / ``denormalise`` accept numpy arrays or torch tensors ``[..., P, D(P)]`` and return the same
    kind, dtype and device; only the first ``NUM_NORMALISED(P)`` dims change (partner stats tiled P-1 times).
    """

    def __init__(self, mean: Any, std: Any, source: str = "<memory>"):
        mean, std = np.array(mean, dtype=np.float64), np.array(std, dtype=np.float64)
        if mean.shape != (STATS_DIM,) or std.shape != (STATS_DIM,):
            raise DataError(
                f"mean/std in {source} have shapes {mean.shape} and {std.shape}, expected ({STATS_DIM},); "
                "recompute them with magnet-preprocess"
            )
        own = slice(0, PER_PERSON_STATS)
        if not (np.isfinite(mean[own]).all() and np.isfinite(std[own]).all() and (std[own] > 0).all()):
            raise DataError(f"mean/std in {source} hold NaN/Inf or non-positive std; recompute them with magnet-preprocess")
        self.mean, self.std, self.source = mean, std, source
        self._cache: dict[tuple, tuple[Tensor, Tensor]] = {}

    compute = staticmethod(compute_stats)

    @property
    def has_partner_stats(self) -> bool:
        """False when the partner statistics are NaN (stats computed from solo clips only)."""
        return bool(np.isfinite(self.mean[STATS_PARTNER]).all() and np.isfinite(self.std[STATS_PARTNER]).all())

    def save(self, path: str | os.PathLike) -> None:
        """Write ``{mean, std}`` (float64, shape (361,)) to an npz, atomically."""
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, mean=self.mean, std=self.std)

    @classmethod
    def load(cls, path: str | os.PathLike) -> MotionStats:
        """Read an npz with keys ``mean`` and ``std`` of shape (361,) (reference files work unchanged)."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"mean/std file not found: {path} (run magnet-preprocess or set the dataset dir)")
        try:
            with np.load(path, allow_pickle=False) as f:
                missing = [k for k in ("mean", "std") if k not in f.files]
                if missing:
                    raise DataError(f"mean/std file {path} lacks key(s) {missing}; recompute it with magnet-preprocess")
                mean, std = f["mean"], f["std"]
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"cannot read mean/std file {path} ({type(e).__name__}); recompute it with magnet-preprocess") from e
        return cls(mean, std, source=str(path))

    def vectors(self, num_persons: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-person ``(mean, std)`` of length ``NUM_NORMALISED(P)``: 352 own stats then the partner 9 tiled."""
        reps = int(num_persons) - 1
        if reps > 0 and not self.has_partner_stats:
            raise DataError(
                f"mean/std {self.source} has no partner statistics (computed from solo clips only) but the data "
                f"has {num_persons} persons; recompute the stats on multi-person training data"
            )
        mean = np.concatenate([self.mean[STATS_PER_PERSON], np.tile(self.mean[STATS_PARTNER], reps)])
        std = np.concatenate([self.std[STATS_PER_PERSON], np.tile(self.std[STATS_PARTNER], reps)])
        return mean, std

    def _stats_like(self, x: Any) -> tuple[Any, Any, int]:
        P = x.shape[-2]
        if x.shape[-1] != person_dim(P):
            raise DataError(f"normalise: data [..., {P}, {x.shape[-1]}] has D != person_dim({P}) = {person_dim(P)}")
        if isinstance(x, Tensor):
            key = (P, x.dtype, x.device)
            if key not in self._cache:
                m, s = self.vectors(P)
                self._cache[key] = (torch.as_tensor(m, dtype=x.dtype, device=x.device),
                                    torch.as_tensor(s, dtype=x.dtype, device=x.device))
            m, s = self._cache[key]
        else:
            m, s = self.vectors(P)
            dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
            m, s = m.astype(dtype), s.astype(dtype)
        return m, s, NUM_NORMALISED(P)

    def normalise(self, x: Any) -> Any:
        """``x[..., P, D(P)]`` raw -> normalised ``(x - mean) / std`` on the first ``NUM_NORMALISED(P)`` dims."""
        m, s, n = self._stats_like(x)
        if isinstance(x, Tensor):
            return torch.cat([(x[..., :n] - m) / s, x[..., n:]], dim=-1)
        x = np.asarray(x)
        return np.concatenate([(x[..., :n] - m) / s, x[..., n:].astype(m.dtype)], axis=-1)

    def denormalise(self, x: Any) -> Any:
        """Inverse of :meth:`normalise`: ``x * std + mean`` on the first ``NUM_NORMALISED(P)`` dims."""
        m, s, n = self._stats_like(x)
        if isinstance(x, Tensor):
            return torch.cat([x[..., :n] * s + m, x[..., n:]], dim=-1)
        x = np.asarray(x)
        return np.concatenate([x[..., :n] * s + m, x[..., n:].astype(m.dtype)], axis=-1)


__all__ = [
    "BASE_DIM",
    "NUM_NORMALISED",
    "PARTNER_DIM",
    "PER_PERSON_STATS",
    "STATS_DIM",
    "STATS_FRAME_STEP",
    "STATS_PARTNER",
    "STATS_PER_PERSON",
    "STD_FLOOR",
    "MotionStats",
    "PackedLayout",
    "StatsAccumulator",
    "canonical_from_root",
    "compute_stats",
    "integrate_canonical",
    "num_persons_for_dim",
    "pack_sequence",
    "person_dim",
    "select_persons",
    "unpack",
    "world_joints",
    "world_root_trajectory",
]

