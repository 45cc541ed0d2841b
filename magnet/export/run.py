"""Export sampler outputs (an npz file or a run directory) to SMPL-X parameter npz or BVH files.

Command line::

    python -m magnet.export <npz or run dir> --format smplx|bvh --out DIR [--sample K] [--smplx PATH]
        [--fps F] [--up-axis y|z] [--unit m|cm]

``--sample K``: 0 = the ground truth only, K = sample K only; default: the ground truth and every sample.
Every input file is loaded and every file's content computed before the first file is written; each file is
written under a temporary name and renamed into place.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from magnet.body import BodyModel
from magnet.errors import ConfigError, MagnetError
from magnet.utils import atomic_path

__all__ = ["FORMATS", "INFO_NAME", "export_outputs", "main", "output_name"]

FORMATS = ("smplx", "bvh")
INFO_NAME = "export_info.yaml"


def output_name(clip: str, row: int, person: int, suffix: str) -> str:
    """``<clip>_gt_p0.npz`` for the ground truth, ``<clip>_s2_p1.bvh`` for sample 2, person 1."""
    return f"{clip}_{'gt' if row == 0 else f's{row}'}_p{person}{suffix}"


def export_outputs(path: str | os.PathLike, out_dir: str | os.PathLike, format: str = "smplx", *,
                   sample: int | None = None, smplx: BodyModel | str | os.PathLike | None = None,
                   fps: float | None = None, up_axis: str = "y", unit: str = "m",
                   log: Callable[[str], None] | None = None) -> list[Path]:
    """Export every clip at ``path`` to ``out_dir``: one file per (row, person); returns the written files.

    Args:
        path: an output npz or a run directory of them.
        format: ``smplx`` (AMASS-style SMPL-X parameter npz, :mod:`magnet.export.smplx_npz`) or ``bvh``
            (:mod:`magnet.export.bvh`).
        sample: None = the ground truth and every sample; 0 = the ground truth; K = sample K.
        smplx: body model (instance or SMPL-X path) for the rest offsets / pelvis; None = the run's
            (:func:`magnet.motion_files.run_body_model`).
        fps: frame rate written to the files; None = the run's ``fps``, else 30.
        up_axis: ``y`` (magnet's world) or ``z`` (AMASS's), smplx format only (BVH is always Y-up).
        unit: ``m`` or ``cm``, bvh format only.
        log: gets one line per note (e.g. the default skeleton was used).

    Raises:
        DataError / ConfigError / BodyModelError: one line, before anything is written.
    """
    from magnet.evaluation.io import load_output_npz
    from magnet.export.bvh import UNITS, person_bvh_text
    from magnet.export.smplx_npz import UP_AXES, save_npz, smplx_arrays, smplx_params
    from magnet.motion_files import output_files, run_body_model, run_fps, select_rows

    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; use one of {', '.join(FORMATS)}")
    if up_axis not in UP_AXES:
        raise ConfigError(f"up axis must be one of {', '.join(UP_AXES)}, got {up_axis!r}")
    if unit not in UNITS:
        raise ConfigError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
    if format == "bvh" and up_axis != "y":
        raise ConfigError("BVH files are written Y-up (the BVH convention); --up-axis z applies to --format smplx")
    fps = run_fps(path) if fps is None else float(fps)
    if fps <= 0:
        raise ConfigError(f"fps must be positive, got {fps}")
    files = output_files(path)
    clips = [load_output_npz(f) for f in files]
    rows_of = []
    for clip in clips:
        if sample is None:
            rows_of.append(select_rows(clip))
        elif int(sample) == 0:
            rows_of.append([0])
        else:
            rows_of.append(select_rows(clip, [int(sample)], ground_truth=False))
    body_model = run_body_model(path, smplx)
    out_dir = Path(out_dir)

    # everything computed first: no partial output on a bad clip
    suffix = ".npz" if format == "smplx" else ".bvh"
    pending: list[tuple[Path, Any, dict[str, Any]]] = []
    for clip, rows in zip(clips, rows_of):
        for row in rows:
            for person in range(clip.num_persons):
                params = smplx_params(clip, row, person, fps)
                target = out_dir / output_name(clip.name, row, person, suffix)
                content = (smplx_arrays(params, body_model, up_axis) if format == "smplx"
                           else person_bvh_text(params, body_model, unit))
                entry = {"file": target.name, "clip": clip.name,
                         "row": "ground truth" if row == 0 else f"sample {row}", "person": person,
                         "frames": params.num_frames}
                pending.append((target, content, entry))

    written = []
    for target, content, _ in pending:
        if format == "smplx":
            save_npz(target, content)
        else:
            with atomic_path(target) as tmp:
                tmp.write_text(content)
        written.append(target)
    info = {
        "format": "SMPL-X parameters, AMASS-style npz" if format == "smplx" else "BVH",
        "source": str(path),
        "body_model": body_model.source,
        "fps": fps,
        "frames": "each row's valid frames (ground truth: gt_timesteps, samples: timesteps)",
    }
    if format == "smplx":
        info["up_axis"] = up_axis
        info["trans"] = "SMPL-X transl = world pelvis - rest pelvis J0(betas) of the body model above"
    else:
        info["unit"] = {"m": "metres", "cm": "centimetres"}[unit]
        info["up_axis"] = "y"
        info["rotation_channels"] = "Zrotation Yrotation Xrotation (degrees, R = Rz Ry Rx)"
    info["files"] = [entry for _, _, entry in pending]
    with atomic_path(out_dir / INFO_NAME) as tmp:
        tmp.write_text(yaml.safe_dump(info, sort_keys=False, width=120))
    if log is not None and body_model.is_default:
        log("note: the built-in default skeleton was used (no SMPL-X file): its proportions and betas are not "
            "SMPL-X's" + ("; trans assumes the pelvis at the model origin" if format == "smplx" else "")
            + ". Pass --smplx <SMPLX_NEUTRAL.npz> to export for SMPL-X")
    return written


def _parser():
    from magnet.cli import OneLineArgumentParser
    from magnet.motion_files import add_body_model_arguments

    p = OneLineArgumentParser(prog="python -m magnet.export",
                              description="Export sampler outputs to SMPL-X parameter npz (AMASS-style) or BVH, one "
                                          "file per row and person.")
    p.add_argument("path", help="an output .npz file or a run directory of them")
    p.add_argument("--format", choices=FORMATS, required=True)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--sample", type=int, default=None,
                   help="0 = the ground truth only, K = sample K only (default: the ground truth and every sample)")
    add_body_model_arguments(p)
    p.add_argument("--fps", type=float, default=None, help="frame rate (default: inf_cfg.yaml fps, else 30)")
    p.add_argument("--up-axis", choices=("y", "z"), default="y",
                   help="smplx format: y = magnet's world (default), z = AMASS's")
    p.add_argument("--unit", choices=("m", "cm"), default="m", help="bvh format: length unit (default m)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: 0 on success, 2 after one ``error: ...`` line for a user error."""
    from magnet.motion_files import body_model_argument

    args = _parser().parse_args(argv)
    try:
        files = export_outputs(args.path, args.out, args.format, sample=args.sample,
                               smplx=body_model_argument(args), fps=args.fps, up_axis=args.up_axis, unit=args.unit,
                               log=lambda m: print(m, file=sys.stderr))
    except MagnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(files)} {args.format} file(s) and {INFO_NAME} to {args.out}")
    return 0
