"""Generated motion as BVH (Biovision Hierarchy), one person of one row per file, and a small BVH reader.

The hierarchy is the SMPL-X body tree (pelvis and the 21 body joints, SMPL-X names) with the rest offsets of the
person's betas for the body model used (``BodyModel.rest_offsets``), in the T pose of SMPL-X, Y up, facing +z.
End sites continue the head (10 cm), wrists (8 cm) and feet (5 cm) along their bones. The root has six channels
``Xposition Yposition Zposition Zrotation Yrotation Xrotation`` (world pelvis position, then rotation), every
other joint three rotation channels ``Zrotation Yrotation Xrotation``: the joint's rotation is ``Rz @ Ry @ Rx``
(degrees), which is the SMPL-X local rotation of that joint (the root's: the global orientation), so standard BVH
forward kinematics reproduces the body model's joint positions. Euler angles are kept continuous over time
(the nearer of the two equivalent triples, angles unwrapped by full turns), so importers interpolate cleanly.
Lengths are metres by default (``unit="cm"`` multiplies offsets and positions by 100); BVH files cannot hold
comments, so ``python -m magnet.export`` states the unit, frame rate and source in ``export_info.yaml`` beside
the files. Blender imports them with File > Import > Motion Capture (.bvh) (scale 1 for metres, 0.01 for cm).

:func:`read_bvh` parses any BVH file (any channel order, position channels on any joint) into a :class:`BvhMotion`
whose :meth:`BvhMotion.joint_positions` runs plain BVH forward kinematics: it is what the round-trip tests use.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from magnet.body import BodyModel
from magnet.body.kinematic_tree import JOINT_NAMES, PARENTS
from magnet.errors import ConfigError, DataError
from magnet.export.smplx_npz import SmplxParams
from magnet.utils import atomic_path

__all__ = ["UNITS", "BvhMotion", "bvh_text", "euler_zyx_from_matrix", "person_bvh_text", "read_bvh", "write_bvh"]

UNITS = {"m": 1.0, "cm": 100.0}
NUM_JOINTS = 22
END_SITES = {15: 0.10, 20: 0.08, 21: 0.08, 10: 0.05, 11: 0.05}  # leaf joint -> end-site length (m)
ROTATION_CHANNELS = ("Zrotation", "Yrotation", "Xrotation")
POSITION_CHANNELS = ("Xposition", "Yposition", "Zposition")


# ------------------------------------------------------------------------------------------------ Euler angles
def euler_zyx_from_matrix(R: np.ndarray, continuous: bool = True) -> np.ndarray:
    """Angles ``(z, y, x)`` in radians with ``R = Rz(z) @ Ry(y) @ Rx(x)`` for ``R [T, ..., 3, 3]``.

    ``continuous``: along axis 0 (time) each frame takes, of the two equivalent triples ``(z, y, x)`` and
    ``(z + pi, pi - y, x + pi)``, the one nearest the previous frame after unwrapping every angle by full turns,
    so the curves have no 360 degree jumps. At gimbal lock (``|cos y| < 1e-9``) x = 0.
    """
    R = np.asarray(R, dtype=np.float64)
    sy = np.clip(-R[..., 2, 0], -1.0, 1.0)
    y = np.arcsin(sy)
    cy = np.sqrt(R[..., 2, 1] ** 2 + R[..., 2, 2] ** 2)
    lock = cy < 1e-9
    z = np.where(lock, np.arctan2(-R[..., 0, 1], R[..., 1, 1]), np.arctan2(R[..., 1, 0], R[..., 0, 0]))
    x = np.where(lock, 0.0, np.arctan2(R[..., 2, 1], R[..., 2, 2]))
    angles = np.stack([z, y, x], axis=-1)
    if not continuous or angles.shape[0] < 2:
        return angles
    alternate = np.stack([z + math.pi, math.pi - y, x + math.pi], axis=-1)
    out = np.empty_like(angles)
    out[0] = angles[0]
    two_pi = 2.0 * math.pi
    for t in range(1, angles.shape[0]):
        prev = out[t - 1]
        best = None
        for cand in (angles[t], alternate[t]):
            cand = cand + two_pi * np.round((prev - cand) / two_pi)
            dist = np.abs(cand - prev).sum(axis=-1)
            if best is None:
                best, best_dist = cand, dist
            else:
                take = dist < best_dist
                best = np.where(take[..., None], cand, best)
                best_dist = np.where(take, dist, best_dist)
        out[t] = best
    return out


def _axis_matrix(axis: str, angle: np.ndarray) -> np.ndarray:
    """Rotation matrices ``[..., 3, 3]`` about ``axis`` ('X', 'Y' or 'Z') by ``angle`` radians."""
    c, s = np.cos(angle), np.sin(angle)
    one, zero = np.ones_like(angle), np.zeros_like(angle)
    if axis == "X":
        rows = ((one, zero, zero), (zero, c, -s), (zero, s, c))
    elif axis == "Y":
        rows = ((c, zero, s), (zero, one, zero), (-s, zero, c))
    else:
        rows = ((c, -s, zero), (s, c, zero), (zero, zero, one))
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


# ------------------------------------------------------------------------------------------------ writer
def _fmt(v: float) -> str:
    s = f"{v:.6f}"
    return "0.000000" if s == "-0.000000" else s


def bvh_text(root_rot: np.ndarray, body_rot: np.ndarray, pelvis: np.ndarray, offsets: np.ndarray, fps: float,
             unit: str = "m") -> str:
    """The BVH text of one person: ``root_rot [T, 3, 3]`` (global orientation), ``body_rot [T, 21, 3, 3]`` (local
    rotations of SMPL-X joints 1..21), ``pelvis [T, 3]`` (world pelvis, metres), ``offsets [22, 3]`` (rest bone
    offsets, joint minus parent, metres; row 0 ignored: the root's offset is zero), ``fps``; lengths in ``unit``.
    """
    if unit not in UNITS:
        raise ConfigError(f"BVH unit must be one of {', '.join(UNITS)}, got {unit!r}")
    if fps <= 0:
        raise ConfigError(f"fps must be positive, got {fps}")
    scale = UNITS[unit]
    T = root_rot.shape[0]
    children: dict[int, list[int]] = {j: [] for j in range(NUM_JOINTS)}
    for j in range(1, NUM_JOINTS):
        children[PARENTS[j]].append(j)
    lines = ["HIERARCHY"]

    def emit(j: int, depth: int) -> None:
        pad = "\t" * depth
        off = np.zeros(3) if j == 0 else offsets[j] * scale
        lines.append(f"{pad}{'ROOT' if j == 0 else 'JOINT'} {JOINT_NAMES[j]}")
        lines.append(f"{pad}{{")
        lines.append(f"{pad}\tOFFSET {' '.join(_fmt(v) for v in off)}")
        chans = (POSITION_CHANNELS + ROTATION_CHANNELS) if j == 0 else ROTATION_CHANNELS
        lines.append(f"{pad}\tCHANNELS {len(chans)} {' '.join(chans)}")
        for c in children[j]:
            emit(c, depth + 1)
        if not children[j]:
            bone = offsets[j]
            norm = float(np.linalg.norm(bone))
            direction = bone / norm if norm > 1e-9 else np.array([0.0, 1.0, 0.0])
            end = direction * END_SITES.get(j, 0.05) * scale
            lines.append(f"{pad}\tEnd Site")
            lines.append(f"{pad}\t{{")
            lines.append(f"{pad}\t\tOFFSET {' '.join(_fmt(v) for v in end)}")
            lines.append(f"{pad}\t}}")
        lines.append(f"{pad}}}")

    emit(0, 0)
    order = []  # joints in the order of the hierarchy (depth first), as the motion lines list them

    def walk(j: int) -> None:
        order.append(j)
        for c in children[j]:
            walk(c)

    walk(0)
    rots = np.concatenate([root_rot[:, None], body_rot], axis=1)  # [T, 22, 3, 3], index = joint id
    degrees = np.degrees(euler_zyx_from_matrix(rots))  # [T, 22, 3] (z, y, x)
    lines += ["MOTION", f"Frames: {T}", f"Frame Time: {1.0 / fps:.8f}"]
    for t in range(T):
        values = list(pelvis[t] * scale)
        for j in order:
            values.extend(degrees[t, j])
        lines.append(" ".join(_fmt(v) for v in values))
    return "\n".join(lines) + "\n"


def person_bvh_text(params: SmplxParams, body_model: BodyModel, unit: str = "m") -> str:
    """The BVH text of one person's motion (:class:`~magnet.export.smplx_npz.SmplxParams`): rest offsets from
    ``body_model`` for the person's betas, frame time from ``params.fps``."""
    offsets = body_model.rest_offsets(torch.as_tensor(params.betas, dtype=torch.float64))[:NUM_JOINTS].numpy()
    return bvh_text(params.root_rot, params.body_rot, params.pelvis, offsets, params.fps, unit)


def write_bvh(path: str | os.PathLike, params: SmplxParams, body_model: BodyModel, unit: str = "m") -> Path:
    """Write one person's motion as BVH (atomically, see :func:`person_bvh_text`); returns the path."""
    path = Path(path)
    text = person_bvh_text(params, body_model, unit)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


# ------------------------------------------------------------------------------------------------ reader
@dataclass
class BvhMotion:
    """A parsed BVH file. Joints in file order: ``names``, ``parents`` (-1 for the root), ``offsets [J, 3]``,
    ``channels`` (per joint, e.g. ``("Zrotation", "Yrotation", "Xrotation")``), ``frames [T, C]`` (all channel
    values, file order), ``frame_time`` (seconds)."""

    names: list[str]
    parents: list[int]
    offsets: np.ndarray
    channels: list[tuple[str, ...]]
    frames: np.ndarray
    frame_time: float

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    def joint_positions(self) -> np.ndarray:
        """World positions ``[T, J, 3]`` by BVH forward kinematics: a joint's local transform is a translation by
        its offset plus its position channels, then the product of its rotation channels in channel order."""
        T, J = self.num_frames, len(self.names)
        world_rot = np.zeros((T, J, 3, 3))
        world_pos = np.zeros((T, J, 3))
        col = 0
        for j in range(J):
            local_pos = np.broadcast_to(self.offsets[j], (T, 3)).copy()
            local_rot = np.broadcast_to(np.eye(3), (T, 3, 3)).copy()
            for name in self.channels[j]:
                values = self.frames[:, col]
                col += 1
                axis, kind = name[0].upper(), name[1:].lower()
                if kind == "position":
                    local_pos[:, "XYZ".index(axis)] += values
                else:
                    local_rot = local_rot @ _axis_matrix(axis, np.radians(values))
            p = self.parents[j]
            if p < 0:
                world_pos[:, j], world_rot[:, j] = local_pos, local_rot
            else:
                world_pos[:, j] = world_pos[:, p] + (world_rot[:, p] @ local_pos[..., None])[..., 0]
                world_rot[:, j] = world_rot[:, p] @ local_rot
        return world_pos


def read_bvh(path: str | os.PathLike) -> BvhMotion:
    """Parse a BVH file (end sites are skipped). Raises DataError naming the file and line on malformed input."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"BVH file not found: {path}")
    tokens: list[tuple[int, str]] = []
    lines = path.read_text().splitlines()
    motion_line = None
    for i, line in enumerate(lines):
        if line.strip().upper().startswith("MOTION"):
            motion_line = i
            break
        tokens += [(i + 1, tok) for tok in line.replace("{", " { ").replace("}", " } ").split()]
    if motion_line is None:
        raise DataError(f"{path}: no MOTION section; not a BVH file")

    def bad(line_no: int, what: str) -> DataError:
        return DataError(f"{path}:{line_no}: {what}; not a valid BVH file")

    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[tuple[str, ...]] = []
    stack: list[int | None] = []
    pending: int | None = None  # the joint whose '{' comes next (None: an end site)
    if not tokens or tokens[0][1].upper() != "HIERARCHY":
        raise bad(tokens[0][0] if tokens else 1, "it does not start with HIERARCHY")
    k = 1
    while k < len(tokens):
        line_no, tok = tokens[k]
        up = tok.upper()
        if up in ("ROOT", "JOINT"):
            if k + 1 >= len(tokens):
                raise bad(line_no, f"{tok} without a name")
            parent = next((s for s in reversed(stack) if s is not None), -1) if stack else -1
            if up == "JOINT" and (not stack or stack[-1] is None):
                raise bad(line_no, "JOINT outside a joint")
            names.append(tokens[k + 1][1])
            parents.append(parent)
            offsets.append([0.0, 0.0, 0.0])
            channels.append(())
            pending = len(names) - 1
            k += 2
        elif up == "END":
            pending = None
            k += 2  # "End Site"
        elif tok == "{":
            stack.append(pending)
            k += 1
        elif tok == "}":
            if not stack:
                raise bad(line_no, "unbalanced '}'")
            stack.pop()
            k += 1
        elif up == "OFFSET":
            try:
                vals = [float(tokens[k + i][1]) for i in (1, 2, 3)]
            except (IndexError, ValueError):
                raise bad(line_no, "OFFSET needs three numbers") from None
            if stack and stack[-1] is not None:
                offsets[stack[-1]] = vals
            k += 4
        elif up == "CHANNELS":
            try:
                n = int(tokens[k + 1][1])
                chans = tuple(tokens[k + 2 + i][1] for i in range(n))
            except (IndexError, ValueError):
                raise bad(line_no, "CHANNELS needs a count and that many names") from None
            for c in chans:
                if len(c) < 2 or c[0].upper() not in "XYZ" or c[1:].lower() not in ("position", "rotation"):
                    raise bad(line_no, f"unknown channel {c!r}")
            if not stack or stack[-1] is None:
                raise bad(line_no, "CHANNELS outside a joint")
            channels[stack[-1]] = chans
            k += 2 + n
        else:
            raise bad(line_no, f"unexpected {tok!r}")
    if not names or stack:
        raise bad(len(lines), "empty or unbalanced hierarchy")
    try:
        count = int(lines[motion_line + 1].split(":")[1])
        frame_time = float(lines[motion_line + 2].split(":")[1])
        rows = [[float(v) for v in line.split()] for line in lines[motion_line + 3:] if line.strip()]
    except (IndexError, ValueError):
        raise bad(motion_line + 2, "malformed Frames / Frame Time / motion values") from None
    width = sum(len(c) for c in channels)
    if len(rows) != count or any(len(r) != width for r in rows):
        raise bad(motion_line + 4, f"expected {count} frames of {width} values")
    return BvhMotion(names=names, parents=parents, offsets=np.asarray(offsets, dtype=np.float64),
                     channels=channels, frames=np.asarray(rows, dtype=np.float64).reshape(count, width),
                     frame_time=frame_time)
