"""SMPL-X body model: kinematic tree, built-in default skeleton, SMPL-X file loading and forward kinematics."""

from magnet.body.kinematic_tree import JOINT_NAMES, MIRROR_INDEX, NUM_JOINTS, PARENTS
from magnet.body.model import (
    ENV_VAR,
    BodyModel,
    DefaultSkeletonWarning,
    default_body_model,
    load_body_model,
    load_smplx_file,
)

__all__ = [
    "ENV_VAR",
    "JOINT_NAMES",
    "MIRROR_INDEX",
    "NUM_JOINTS",
    "PARENTS",
    "BodyModel",
    "DefaultSkeletonWarning",
    "default_body_model",
    "load_body_model",
    "load_smplx_file",
]
