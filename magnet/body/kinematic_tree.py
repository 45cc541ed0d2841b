"""The SMPL-X kinematic tree: 55 joints (pelvis, 21 body joints, jaw, 2 eyes, 2 x 15 finger joints).

Joint ids are the SMPL-X ids. In the reference's root-less indexing, local rotation ``i`` belongs to SMPL-X joint
``i + 1``: the "body 21" block is joints 1..21 and the "hands" block is joints 25..54.
"""

from __future__ import annotations

NUM_JOINTS = 55
NUM_BODY_JOINTS = 21
NUM_HAND_JOINTS = 30

_BODY_NAMES = (
    "pelvis",
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "jaw",
    "left_eye",
    "right_eye",
)
_FINGERS = ("index", "middle", "pinky", "ring", "thumb")

JOINT_NAMES: tuple[str, ...] = _BODY_NAMES + tuple(
    f"{side}_{finger}{k}" for side in ("left", "right") for finger in _FINGERS for k in (1, 2, 3)
)

PARENTS: tuple[int, ...] = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
    20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
    21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53,
)  # fmt: skip

JOINT_INDEX: dict[str, int] = {name: i for i, name in enumerate(JOINT_NAMES)}


def _mirror_name(name: str) -> str:
    if name.startswith("left_"):
        return "right_" + name[len("left_") :]
    if name.startswith("right_"):
        return "left_" + name[len("right_") :]
    return name


MIRROR_INDEX: tuple[int, ...] = tuple(JOINT_INDEX[_mirror_name(n)] for n in JOINT_NAMES)

BODY_JOINTS: tuple[int, ...] = tuple(range(1, 22))
HAND_JOINTS: tuple[int, ...] = tuple(range(25, 55))
LEFT_HAND_JOINTS: tuple[int, ...] = tuple(range(25, 40))
RIGHT_HAND_JOINTS: tuple[int, ...] = tuple(range(40, 55))
PELVIS = 0
LEFT_HIP = 1
RIGHT_HIP = 2
LEFT_ANKLE = 7
RIGHT_ANKLE = 8
LEFT_FOOT = 10
RIGHT_FOOT = 11
NECK = 12
HEAD = 15
LEFT_SHOULDER = 16
RIGHT_SHOULDER = 17
LEFT_WRIST = 20
RIGHT_WRIST = 21
JAW = 22
LEFT_EYE = 23
RIGHT_EYE = 24


def _depths() -> tuple[int, ...]:
    depth = [0] * NUM_JOINTS
    for j in range(1, NUM_JOINTS):
        depth[j] = depth[PARENTS[j]] + 1
    return tuple(depth)


DEPTH: tuple[int, ...] = _depths()
"""Number of edges between each joint and the pelvis."""


def depth_levels(num_joints: int = NUM_JOINTS) -> list[list[int]]:
    """Joints ``1 .. num_joints-1`` grouped by depth (level 1 first); a joint's parent is in an earlier level."""
    levels: dict[int, list[int]] = {}
    for j in range(1, num_joints):
        levels.setdefault(DEPTH[j], []).append(j)
    return [levels[d] for d in sorted(levels)]
