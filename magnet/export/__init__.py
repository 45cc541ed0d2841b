"""Export generated motion to files other tools open: SMPL-X parameter npz (AMASS-style) and BVH.

One file per (row, person) of every clip: ``<clip>_<gt|sK>_p<person>.npz`` / ``.bvh`` (``gt`` = the ground truth,
``sK`` = sample K), over the row's valid frames, plus ``export_info.yaml`` (format, unit, frame rate, up axis, body
model, source and the files). Python API: :func:`magnet.export.run.export_outputs`; formats in
:mod:`magnet.export.smplx_npz` and :mod:`magnet.export.bvh`. Command line: ``python -m magnet.export``.
"""

from magnet.export.bvh import BvhMotion, read_bvh, write_bvh
from magnet.export.run import FORMATS, export_outputs, main
from magnet.export.smplx_npz import SmplxParams, read_smplx_npz, smplx_params, write_smplx_npz

__all__ = [
    "FORMATS",
    "BvhMotion",
    "SmplxParams",
    "export_outputs",
    "main",
    "read_bvh",
    "read_smplx_npz",
    "smplx_params",
    "write_bvh",
    "write_smplx_npz",
]
