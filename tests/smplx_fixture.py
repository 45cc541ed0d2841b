"""A synthetic, correctly shaped SMPL-X model file for tests (the real model is licensed and absent).

The vertices are random clusters around the default skeleton's rest joints, so the regressed joints have
plausible positions. Everything else (shape/pose blend shapes, faces, landmarks) is random with the right shapes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from magnet.body.default_skeleton import default_joint_model
from magnet.body.kinematic_tree import NUM_JOINTS, PARENTS


def make_synthetic_smplx_npz(path: str | os.PathLike, num_verts: int = 550, seed: int = 0) -> Path:
    """Write a random SMPL-X-shaped npz to ``path`` (a file name, or a directory -> SMPLX_NEUTRAL.npz).

    Keys: v_template (V,3), f (F,3), shapedirs (V,3,400), posedirs (V,3,486), J_regressor (55,V) and
    weights (V,55) with rows summing to 1, kintree_table (2,55) with the SMPL-X parents, hands_components{l,r}
    (45,45), hands_mean{l,r} (45,), lmk_faces_idx (51,), lmk_bary_coords (51,3), dynamic_lmk_faces_idx (79,17),
    dynamic_lmk_bary_coords (79,17,3). ``num_verts`` must be at least 55. Returns the file path.
    """
    if num_verts < NUM_JOINTS:
        raise ValueError(f"num_verts must be >= {NUM_JOINTS}, got {num_verts}")
    path = Path(path)
    if path.is_dir():
        path = path / "SMPLX_NEUTRAL.npz"
    rng = np.random.default_rng(seed)
    template, _ = default_joint_model()
    joints = template.numpy() + np.array([0.0, 0.3, 0.0])  # pelvis off the origin, as in SMPL-X

    owner = np.arange(num_verts) % NUM_JOINTS  # the joint each vertex belongs to
    v_template = joints[owner] + rng.normal(scale=0.02, size=(num_verts, 3))

    j_regressor = np.zeros((NUM_JOINTS, num_verts))
    j_regressor[owner, np.arange(num_verts)] = rng.uniform(0.5, 1.5, size=num_verts)
    j_regressor /= j_regressor.sum(axis=1, keepdims=True)

    weights = np.zeros((num_verts, NUM_JOINTS))
    parent_of_owner = np.array(PARENTS)[owner]
    main = rng.uniform(0.6, 1.0, size=num_verts)
    weights[np.arange(num_verts), owner] = main
    has_parent = parent_of_owner >= 0
    weights[np.arange(num_verts)[has_parent], parent_of_owner[has_parent]] += 1.0 - main[has_parent]
    weights[~has_parent, owner[~has_parent]] = 1.0
    weights /= weights.sum(axis=1, keepdims=True)

    num_faces = 2 * num_verts
    faces = np.stack([rng.permutation(num_verts)[:3] for _ in range(num_faces)]).astype(np.int64)
    bary = rng.uniform(0.1, 1.0, size=(51, 3))
    dyn_bary = rng.uniform(0.1, 1.0, size=(79, 17, 3))
    kintree = np.stack([np.array(PARENTS), np.arange(NUM_JOINTS)]).astype(np.int64)

    arrays = {
        "v_template": v_template.astype(np.float32),
        "f": faces,
        "shapedirs": (rng.normal(scale=0.01, size=(num_verts, 3, 400))).astype(np.float32),
        "posedirs": (rng.normal(scale=0.002, size=(num_verts, 3, 486))).astype(np.float32),
        "J_regressor": j_regressor.astype(np.float32),
        "weights": weights.astype(np.float32),
        "kintree_table": kintree,
        "hands_componentsl": rng.normal(size=(45, 45)).astype(np.float32),
        "hands_componentsr": rng.normal(size=(45, 45)).astype(np.float32),
        "hands_meanl": rng.normal(scale=0.1, size=45).astype(np.float32),
        "hands_meanr": rng.normal(scale=0.1, size=45).astype(np.float32),
        "lmk_faces_idx": rng.integers(0, num_faces, size=51).astype(np.int64),
        "lmk_bary_coords": (bary / bary.sum(-1, keepdims=True)).astype(np.float32),
        "dynamic_lmk_faces_idx": rng.integers(0, num_faces, size=(79, 17)).astype(np.int64),
        "dynamic_lmk_bary_coords": (dyn_bary / dyn_bary.sum(-1, keepdims=True)).astype(np.float32),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path
