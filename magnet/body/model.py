"""Body model: rest joints from shape parameters and forward kinematics over the SMPL-X tree.

Both sources (the built-in default skeleton and an SMPL-X ``.npz`` file) reduce to the same linear joint model
``J(betas) = joint_template + joint_shapedirs @ betas`` (55 joints, 10 betas); forward kinematics is ours and
is exactly the SMPL-X one for the 55 kinematic joints. Mesh vertices go through the ``smplx`` package and need
a model file.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from magnet.body.default_skeleton import NUM_BETAS, default_joint_model
from magnet.body.kinematic_tree import NUM_JOINTS, PARENTS, depth_levels
from magnet.errors import BodyModelError

ENV_VAR = "MAGNET_SMPLX_MODEL"
SMPLX_FILE_NAME = "SMPLX_NEUTRAL.npz"
DEFAULT_SOURCE = "default skeleton"
_HOW_TO_FIX = (
    "download SMPL-X from its official site (https://smpl-x.is.tue.mpg.de) and point body_model= (train/evaluate), "
    f"--smplx (magnet-preprocess) or {ENV_VAR} at {SMPLX_FILE_NAME}"
)


class DefaultSkeletonWarning(UserWarning):
    """Issued when no SMPL-X file is configured and the built-in default skeleton is used."""


class BodyModel(nn.Module):
    """SMPL-X kinematic body model (buffers only, nothing trainable).

    Attributes:
        source: ``"default skeleton"`` or the SMPL-X file path.
        is_default: True for the built-in default skeleton.
        joint_template: ``[55, 3]`` float64 rest joints for ``betas = 0`` (model coordinates).
        joint_shapedirs: ``[55, 3, 10]`` float64 joint shape directions.

    Buffers are not persistent: they are never written into checkpoints.
    """

    def __init__(
        self,
        joint_template: Tensor,
        joint_shapedirs: Tensor,
        *,
        source: str = DEFAULT_SOURCE,
        smplx_path: str | os.PathLike | None = None,
    ):
        super().__init__()
        if tuple(joint_template.shape) != (NUM_JOINTS, 3):
            raise ValueError(f"joint_template must be [55, 3], got {tuple(joint_template.shape)}")
        if tuple(joint_shapedirs.shape) != (NUM_JOINTS, 3, NUM_BETAS):
            raise ValueError(f"joint_shapedirs must be [55, 3, 10], got {tuple(joint_shapedirs.shape)}")
        self.register_buffer("joint_template", joint_template.to(torch.float64), persistent=False)
        self.register_buffer("joint_shapedirs", joint_shapedirs.to(torch.float64), persistent=False)
        self.source = str(source)
        self.smplx_path = None if smplx_path is None else str(smplx_path)
        self.is_default = self.smplx_path is None
        self.parents = PARENTS
        self.num_joints = NUM_JOINTS
        self._levels = {J: self._make_levels(J) for J in (21, 54)}
        self._smplx_layer = None

    def extra_repr(self) -> str:
        return f"source={self.source!r}"

    # ------------------------------------------------------------------------------------------- shape

    def _check_betas(self, betas: Tensor | None, like: Tensor | None = None) -> Tensor:
        if betas is None:
            dtype = like.dtype if like is not None else torch.get_default_dtype()
            device = like.device if like is not None else self.joint_template.device
            return torch.zeros(NUM_BETAS, dtype=dtype, device=device)
        if betas.shape[-1] != NUM_BETAS:
            raise ValueError(f"betas must be [..., {NUM_BETAS}], got {tuple(betas.shape)}")
        return betas

    def rest_joints(self, betas: Tensor | None = None) -> Tensor:
        """Rest-pose joint positions ``[..., 55, 3]`` for ``betas[..., 10]`` (None = mean shape, ``[55, 3]``).

        Model coordinates: the pelvis is joint 0 and is NOT at the origin for SMPL-X files (SMPL-X ``transl``
        plus the rest pelvis gives the world pelvis). Computed in the dtype of ``betas``.
        """
        betas = self._check_betas(betas)
        tmpl = self.joint_template.to(dtype=betas.dtype, device=betas.device)
        dirs = self.joint_shapedirs.to(dtype=betas.dtype, device=betas.device)
        return tmpl + torch.einsum("jck,...k->...jc", dirs, betas)

    def rest_offsets(self, betas: Tensor | None = None) -> Tensor:
        """Bone offsets ``[..., 55, 3]``: joint minus its parent in the rest pose; row 0 is the rest pelvis."""
        joints = self.rest_joints(betas)
        parents = torch.tensor(PARENTS[1:], device=joints.device)
        return torch.cat([joints[..., :1, :], joints[..., 1:, :] - joints[..., parents, :]], dim=-2)

    # --------------------------------------------------------------------------------------- kinematics

    @staticmethod
    def _make_levels(num_local: int) -> tuple[list[tuple[list[int], list[int]]], list[int]]:
        """Per depth level: (joint ids, positions of their parents in the processing order); and the order."""
        order = [0]
        where = {0: 0}
        levels = []
        for level in depth_levels(num_local + 1):
            levels.append((level, [where[PARENTS[j]] for j in level]))
            for j in level:
                where[j] = len(order)
                order.append(j)
        inverse = [where[j] for j in range(num_local + 1)]
        return levels, inverse

    def forward_kinematics(
        self,
        local_rot: Tensor,
        root_rot: Tensor,
        root_pos: Tensor,
        betas: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """World joint positions and rotations of joints ``0..J``.

        Args:
            local_rot: ``[..., J, 3, 3]`` local rotations of SMPL-X joints ``1..J`` (J = 21: body only; J = 54:
                all joints; any 1 <= J <= 54 works since parents precede children).
            root_rot: ``[..., 3, 3]`` world rotation of the pelvis (``T_world_root`` rotation).
            root_pos: ``[..., 3]`` WORLD PELVIS position (``T_world_root`` translation).
            betas: ``[..., 10]`` shape (None = mean shape). Leading axes of all inputs broadcast.

        Returns:
            ``(positions [..., 1 + J, 3], rotations [..., 1 + J, 3, 3])`` in the dtype of ``local_rot``.
        """
        num_local = local_rot.shape[-3]
        if not 1 <= num_local <= NUM_JOINTS - 1 or local_rot.shape[-2:] != (3, 3):
            raise ValueError(
                f"local_rot must be [..., J, 3, 3] with 1 <= J <= 54, got {tuple(local_rot.shape)}"
            )
        dtype, device = local_rot.dtype, local_rot.device
        betas = self._check_betas(betas, like=local_rot).to(dtype=dtype, device=device)
        root_rot = root_rot.to(dtype)
        root_pos = root_pos.to(dtype)
        lead = torch.broadcast_shapes(
            local_rot.shape[:-3], root_rot.shape[:-2], root_pos.shape[:-1], betas.shape[:-1]
        )
        offsets = self.rest_offsets(betas)  # [..., 55, 3]
        if num_local not in self._levels:
            self._levels[num_local] = self._make_levels(num_local)
        levels, inverse = self._levels[num_local]

        rots = [root_rot.expand(*lead, 3, 3)[..., None, :, :]]
        poss = [root_pos.expand(*lead, 3)[..., None, :]]
        all_rot, all_pos = rots[0], poss[0]
        for joints, parent_slots in levels:
            idx = torch.tensor(joints, device=device)
            pidx = torch.tensor(parent_slots, device=device)
            r_par = all_rot.index_select(-3, pidx)
            p_par = all_pos.index_select(-2, pidx)
            r_loc = local_rot.index_select(-3, idx - 1)
            off = offsets.index_select(-2, idx)
            rots.append(r_par @ r_loc)
            poss.append(p_par + (r_par @ off[..., None])[..., 0])
            all_rot = torch.cat([all_rot, rots[-1]], dim=-3)
            all_pos = torch.cat([all_pos, poss[-1]], dim=-2)
        inv = torch.tensor(inverse, device=device)
        return all_pos.index_select(-2, inv), all_rot.index_select(-3, inv)

    # ------------------------------------------------------------------------------------------- smplx

    def smplx_layer(self, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        """The ``smplx.SMPLXLayer`` of the model file (built once, 10 betas, no hand PCA).

        For a file with fewer than 9930 vertices (a synthetic test file) the vertex-picked extra joints are
        remapped modulo the vertex count so that the layer runs; those extra joints are then meaningless.
        """
        if self.smplx_path is None:
            raise BodyModelError(f"mesh vertices need an SMPL-X model file, none is loaded; {_HOW_TO_FIX}")
        if self._smplx_layer is None:
            import smplx

            with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a line for short shape spaces
                layer = smplx.SMPLXLayer(
                    model_path=self.smplx_path, ext="npz", num_betas=NUM_BETAS, use_pca=False
                )
            num_verts = layer.v_template.shape[0]
            selector = layer.vertex_joint_selector
            if int(selector.extra_joints_idxs.max()) >= num_verts:
                selector.extra_joints_idxs = selector.extra_joints_idxs % num_verts
            layer.requires_grad_(False)
            # a plain attribute, not a submodule: the licensed model data must never reach a state_dict
            object.__setattr__(self, "_smplx_layer", layer)
        return self._smplx_layer.to(dtype=dtype, device=device)

    def smplx_forward(
        self,
        local_rot: Tensor,
        root_rot: Tensor,
        root_pos: Tensor,
        betas: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Run ``smplx`` with the same arguments as :meth:`forward_kinematics`.

        ``local_rot`` is ``[..., 21, 3, 3]`` (hands, jaw and eyes at identity) or ``[..., 54, 3, 3]``.
        Returns ``(vertices [..., V, 3], joints [..., 127, 3])`` in world coordinates (smplx joint order).
        """
        num_local = local_rot.shape[-3]
        if num_local not in (21, 54):
            raise ValueError(f"local_rot must be [..., 21 or 54, 3, 3], got {tuple(local_rot.shape)}")
        dtype, device = local_rot.dtype, local_rot.device
        betas = self._check_betas(betas, like=local_rot).to(dtype=dtype, device=device)
        lead = torch.broadcast_shapes(
            local_rot.shape[:-3], root_rot.shape[:-2], root_pos.shape[:-1], betas.shape[:-1]
        )
        n = int(np.prod(lead)) if lead else 1
        local_rot = local_rot.expand(*lead, num_local, 3, 3).reshape(n, num_local, 3, 3)
        root_rot = root_rot.to(dtype).expand(*lead, 3, 3).reshape(n, 3, 3)
        root_pos = root_pos.to(dtype).expand(*lead, 3).reshape(n, 3)
        betas = betas.expand(*lead, NUM_BETAS).reshape(n, NUM_BETAS)
        transl = root_pos - self.rest_joints(betas)[:, 0]
        kwargs = {}
        if num_local == 54:
            kwargs = {
                "jaw_pose": local_rot[:, 21:22],
                "leye_pose": local_rot[:, 22:23],
                "reye_pose": local_rot[:, 23:24],
                "left_hand_pose": local_rot[:, 24:39],
                "right_hand_pose": local_rot[:, 39:54],
            }
        out = self.smplx_layer(dtype, device)(
            betas=betas,
            global_orient=root_rot[:, None],
            body_pose=local_rot[:, :21],
            transl=transl,
            **kwargs,
        )
        verts = out.vertices.reshape(*lead, -1, 3)
        joints = out.joints.reshape(*lead, -1, 3)
        return verts, joints

    def vertices(
        self,
        local_rot: Tensor,
        root_rot: Tensor,
        root_pos: Tensor,
        betas: Tensor | None = None,
    ) -> Tensor:
        """Mesh vertices ``[..., V, 3]`` (world); same arguments as :meth:`forward_kinematics`; needs SMPL-X."""
        return self.smplx_forward(local_rot, root_rot, root_pos, betas)[0]

    @property
    def faces(self) -> Tensor:
        """Mesh triangles ``[F, 3]`` (long); needs an SMPL-X file."""
        return self.smplx_layer().faces_tensor


# ----------------------------------------------------------------------------------------------- loading


def default_body_model() -> BodyModel:
    """The built-in default skeleton (see :mod:`magnet.body.default_skeleton`)."""
    template, shapedirs = default_joint_model()
    return BodyModel(template, shapedirs, source=DEFAULT_SOURCE)


def _bad(path: Path, what: str) -> BodyModelError:
    return BodyModelError(f"SMPL-X model {path}: {what}; {_HOW_TO_FIX}")


def _read_array(data, path: Path, key: str) -> np.ndarray:
    if key not in data.files:
        raise _bad(path, f"key '{key}' is missing")
    try:
        arr = np.asarray(data[key])
    except ValueError as exc:  # object arrays need pickle, which we refuse
        raise _bad(path, f"key '{key}' cannot be read ({exc})") from exc
    if arr.dtype.kind not in "biuf":
        raise _bad(path, f"key '{key}' has dtype {arr.dtype}, a numeric array was expected")
    return arr


def _expect_shape(path: Path, key: str, arr: np.ndarray, shape: tuple) -> None:
    ok = arr.ndim == len(shape) and all(s is None or s == a for s, a in zip(shape, arr.shape))
    if not ok:
        want = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ")"
        raise _bad(path, f"key '{key}' has shape {tuple(arr.shape)}, expected {want}")


def load_smplx_file(path: str | os.PathLike) -> BodyModel:
    """Load ``SMPLX_NEUTRAL.npz`` (or a directory holding it) as a :class:`BodyModel`.

    Raises:
        BodyModelError: the file is missing, unreadable, lacks a required key or has wrong shapes.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        if not (path / SMPLX_FILE_NAME).is_file():
            raise _bad(path, f"the directory has no {SMPLX_FILE_NAME}")
        path = path / SMPLX_FILE_NAME
    if not path.is_file():
        raise _bad(path, "file not found")
    if path.suffix != ".npz":
        raise _bad(path, "only the .npz release of SMPL-X is supported")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise _bad(path, f"not a readable npz file ({type(exc).__name__})") from exc
    with data:
        v_template = _read_array(data, path, "v_template")
        _expect_shape(path, "v_template", v_template, (None, 3))
        num_verts = v_template.shape[0]
        shapedirs = _read_array(data, path, "shapedirs")
        _expect_shape(path, "shapedirs", shapedirs, (num_verts, 3, None))
        if shapedirs.shape[2] < NUM_BETAS:
            raise _bad(path, f"key 'shapedirs' has {shapedirs.shape[2]} components, at least 10 are needed")
        j_regressor = _read_array(data, path, "J_regressor")
        _expect_shape(path, "J_regressor", j_regressor, (NUM_JOINTS, num_verts))
        weights = _read_array(data, path, "weights")
        _expect_shape(path, "weights", weights, (num_verts, NUM_JOINTS))
        posedirs = _read_array(data, path, "posedirs")
        _expect_shape(path, "posedirs", posedirs, (num_verts, 3, 9 * (NUM_JOINTS - 1)))
        faces = _read_array(data, path, "f")
        _expect_shape(path, "f", faces, (None, 3))
        kintree = _read_array(data, path, "kintree_table")
        _expect_shape(path, "kintree_table", kintree, (2, NUM_JOINTS))
        if [int(p) for p in kintree[0, 1:]] != list(PARENTS[1:]):
            raise _bad(
                path, "key 'kintree_table' does not hold the SMPL-X joint parents (not an SMPL-X model)"
            )
    j_reg = torch.from_numpy(j_regressor.astype(np.float64))
    template = j_reg @ torch.from_numpy(v_template.astype(np.float64))
    dirs = torch.from_numpy(shapedirs[:, :, :NUM_BETAS].astype(np.float64))
    joint_shapedirs = torch.einsum("jv,vck->jck", j_reg, dirs)
    if not (torch.isfinite(template).all() and torch.isfinite(joint_shapedirs).all()):
        raise _bad(path, "the template or shape directions contain NaN or Inf")
    return BodyModel(template, joint_shapedirs, source=str(path), smplx_path=path)


def load_body_model(path: str | os.PathLike | None = None, *, warn: bool = True) -> BodyModel:
    """Load the body model: ``path``, else env ``MAGNET_SMPLX_MODEL``, else the built-in default skeleton.

    ``path`` may be ``SMPLX_NEUTRAL.npz`` or a directory holding it. The default skeleton is announced with one
    :class:`DefaultSkeletonWarning` unless ``warn=False``.

    Raises:
        BodyModelError: a given file is missing or malformed (the message names the path and what to do).
    """
    if path is None or str(path) == "":
        path = os.environ.get(ENV_VAR) or None
    if path is not None:
        return load_smplx_file(path)
    if warn:
        warnings.warn(
            f"no SMPL-X model configured (body_model= / --smplx / {ENV_VAR}); using the built-in default skeleton",
            DefaultSkeletonWarning,
            stacklevel=2,
        )
    return default_body_model()
