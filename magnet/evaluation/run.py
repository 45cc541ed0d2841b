"""Evaluate a directory of generated outputs (spec 5): every metric of 5.2 for ``g`` and ``k``, GT baselines,
and the output files ``eval_dict_c{suffix}.yaml`` / ``.csv`` and ``eval_summary{suffix}.md``.

Two modes:

* ``"reference"`` reproduces the original ``eval.py``: metres, every person evaluated unless the inference config
  has ``sampling_cfg.task_mode`` set to a conditioning task (it never has: the reference reads the wrong key), the
  reference quirks of the metric functions, ``sample_num`` ignored with ``whole_seq``/``seq_len``, and the
  reference key names (``mpjpe``, ``avg_foot_sliding_vel``).
* ``"fixed"`` (default): for ``partner_prediction``, ``motion_control_live``, ``motion_control`` and
  ``partner_inpainting`` (``sampling_task`` in ``inf_cfg.yaml``; ``task_mode`` accepted) only the generated persons
  1..P-1 enter FD, diversity, MPJPE/MPJVE and foot sliding (correlation and penetration are between persons and
  use all of them); the metric functions' fixed behaviour; MPJPE in mm; keys carry units (``mpjpe_mm``,
  ``mpjve_mm_per_s``, ``avg_foot_sliding_vel_m_per_s``).

Both modes add ``baseline`` (reference points, see :func:`baseline_description`) and ``meta`` (counts, mode,
seed, body model) sections beside the reference's ``body`` section. Output names: ``suffix`` is "" / ``_seq_<L>``
/ ``_whole_seq`` / ``_test_set`` as in the reference, plus ``_reference`` in reference mode; the reference's
hard-coded ``_1113`` tag is dropped.

Clips with different person counts: fixed mode pools them (correlation per count, weighted by rows). The
reference pools every clip into one tensor, which needs one count, so reference mode evaluates each person count
as its own group and reports the groups side by side: the result then holds ``groups`` (``persons_2``,
``persons_4``, ...; each a ``body`` / ``baseline`` / ``meta`` result equal to evaluating only those clips) and an
overall ``meta``, and the CSV has a ``gt_<group>`` and a ``gen_<group>`` row per group. With one person count the
files have the reference's structure.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from magnet.body import BodyModel, load_body_model
from magnet.errors import BodyModelError, ConfigError, DataError
from magnet.evaluation.features import ClipFeatures, clip_features, select_frames
from magnet.evaluation.io import list_output_files, load_output_npz, read_inference_config
from magnet.metrics import (
    FD_STRIDE,
    FD_WINDOW,
    feature_moments,
    foot_sliding,
    frechet_distance_from_moments,
    mpjpe,
    mpjve,
    penetration,
    penetration_from_sums,
    penetration_sums,
    person_correlation,
    sample_diversity,
    sample_diversity_seq,
    window_features,
)
from magnet.metrics._utils import check_mode
from magnet.utils import atomic_path

__all__ = [
    "CONDITIONED_TASKS",
    "REFERENCE_LAST_PERSON_TASKS",
    "EvaluationResult",
    "baseline_description",
    "evaluate_directory",
    "group_name",
    "grouped_csv_lines",
    "output_suffix",
    "resolve_body_model",
    "to_csv_lines",
]

# tasks whose person slot 0 is fed from GT (spec 4.4): fixed mode evaluates persons 1..P-1 only
CONDITIONED_TASKS = ("partner_prediction", "motion_control_live", "motion_control", "partner_inpainting")
# the reference's list (checked against sampling_cfg.task_mode, which is never set)
REFERENCE_LAST_PERSON_TASKS = ("partner_prediction", "motion_control", "partner_inpainting")


class EvaluationResult(dict):
    """The evaluation dict (``body`` / ``baseline`` / ``meta``; or ``groups`` / ``meta`` in reference mode with
    several person counts) with the written paths in ``.files`` (``yaml``, ``csv``, ``summary``) and the markdown
    summary in ``.summary``."""

    files: dict[str, Path]
    summary: str


# ---------------------------------------------------------------------------------------------- helpers
def output_suffix(mode: str, whole_seq: bool, seq_len: int | None, test_set: Any) -> str:
    """``_seq_<L>`` / ``_whole_seq`` / ``_test_set`` (later ones win, as in the reference), plus ``_reference``."""
    suffix = f"_seq_{seq_len}" if seq_len is not None else ""
    suffix = "_whole_seq" if whole_seq else suffix
    suffix = "_test_set" if test_set is not None else suffix
    return suffix + ("_reference" if mode == "reference" else "")


def resolve_body_model(body_model: BodyModel | str | os.PathLike | None, smpl_path: str | None,
                       run_dir: Path) -> BodyModel:
    """The body model: ``body_model`` (instance or path) if given, else ``smpl_path`` of ``inf_cfg.yaml`` (relative
    paths are tried from the working directory, then from ``run_dir``), else ``$MAGNET_SMPLX_MODEL``, else the
    built-in default skeleton. A named file that does not exist raises :class:`BodyModelError`."""
    if isinstance(body_model, BodyModel):
        return body_model
    if body_model not in (None, ""):
        return load_body_model(body_model)
    if smpl_path is not None:
        p = Path(smpl_path).expanduser()
        if not p.is_absolute() and not p.exists() and (run_dir / p).exists():
            p = run_dir / p
        if not p.exists():
            raise BodyModelError(f"{run_dir / 'inf_cfg.yaml'} names smpl_path {smpl_path}, which does not exist; "
                                 "put the SMPL-X file there or pass body_model=<path to SMPLX_NEUTRAL.npz>")
        return load_body_model(p)
    return load_body_model(None, warn=False)


def _select(x: Tensor, persons: list[int] | None) -> Tensor:
    """Persons ``persons`` of ``x[..., P, F]`` (None = all)."""
    return x if persons is None else x[..., persons, :]


def _persons_of(p: int, conditioned: bool, reference: bool, driven: tuple[int, ...] = (0,)) -> list[int] | None:
    if not conditioned:
        return None
    if reference:
        return [p - 1]  # the reference keeps the last person
    generated = [i for i in range(p) if i not in driven]
    if p < 2 or not generated:
        return None
    return generated


def _add(total: tuple | None, m: tuple) -> tuple:
    return m if total is None else tuple(a + b for a, b in zip(total, m))


def _fd_sums(clips: list[Tensor], windowed: bool) -> tuple | None:
    """FD running sums ``(n, sum, outer)`` of features ``[R, T, P, D]`` pooled over clips (windowed: 30-frame
    windows, clips that are too short are skipped); None when nothing was added."""
    total = None
    for c in clips:
        if windowed:
            c = window_features(c, FD_WINDOW, FD_STRIDE)
            if c is None:
                continue
        total = _add(total, feature_moments(c))
    return total


def _block_half_sums(clips: list[Tensor], windowed: bool, block: int, first_half: list[int]) -> list[tuple | None]:
    """FD running sums of the two GT halves for the GT-vs-GT baseline.

    Each clip ``[1, T, P, D]`` is cut into consecutive ``block``-frame blocks that alternate between the two
    halves; clip i's first block goes to half ``first_half[i]`` (0 or 1). Windowed: every 30-frame window of the
    clip goes to the half of the block holding its first frame. Both halves therefore hold every clip (same
    persons, same content, frames interleaved in time), so their FD is the distance between two sets of real
    motion of the same clips: the value a generator that reproduces the GT distribution of these clips can
    expect to reach, not a distance between different clips.
    """
    halves: list[tuple | None] = [None, None]
    for c, first in zip(clips, first_half):
        if windowed:
            x = window_features(c, FD_WINDOW, FD_STRIDE)  # [1, W, P, 30 D]
            if x is None:
                continue
            starts = torch.arange(x.shape[-3]) * FD_STRIDE
        else:
            x = c
            starts = torch.arange(x.shape[-3])
        half = (starts // block + first) % 2
        for h in (0, 1):
            part = x[..., half == h, :, :]
            if part.shape[-3]:
                halves[h] = _add(halves[h], feature_moments(part))
    return halves


def baseline_description(baselines: bool = True) -> str:
    """What the ``baseline`` numbers are (written into the YAML and, shortened, the summary)."""
    text = ("Reference points, not targets. fd: GT vs GT, the FD between two halves of the GT frames, each "
            "clip cut into alternating 1-second blocks (the seed picks which half gets a clip's first block), "
            "so both halves hold every clip; a generator matching the GT distribution of these clips scores "
            "about this, and copying the GT scores 0. div_sample: 0 (one GT per context). mpjpe/mpjve: holding "
            "the last context frame still (null without context). Correlation, foot sliding and penetration of "
            "the GT are body.*.*_gt.")
    if not baselines:
        text += " FD and MPJPE baselines turned off (baselines=false)."
    return text


def _fd(real, fake, windowed: bool) -> float | None:
    if real is None or fake is None or float(real[0]) < 2 or float(fake[0]) < 2:
        return None
    value = float(frechet_distance_from_moments(real, fake))
    return value / FD_WINDOW if windowed else value


def _group_by_persons(items: list[Tensor]) -> dict[int, list[Tensor]]:
    groups: dict[int, list[Tensor]] = {}
    for x in items:
        groups.setdefault(int(x.shape[-2]), []).append(x)
    return groups


def _correlation(features: list[Tensor], mode: str) -> float | None:
    """Inter-person correlation of features ``[R, T, P, D]`` pooled over clips; clips with different person
    counts are pooled per count and the results averaged weighted by rows (fixed mode only)."""
    groups = {p: xs for p, xs in _group_by_persons(features).items() if p >= 2}
    if not groups:
        return None
    if len(groups) == 1:
        return person_correlation(next(iter(groups.values())), mode=mode)
    if mode == "reference":  # evaluate_directory evaluates each person count as its own group in this mode
        raise ValueError(f"reference-mode correlation needs one person count, got {sorted(groups)}")
    total, weight = 0.0, 0
    for xs in groups.values():
        value = person_correlation(xs, mode=mode)
        if value is not None:
            rows = sum(int(x[..., 0, 0].numel()) for x in xs)
            total, weight = total + value * rows, weight + rows
    return total / weight if weight else None


def _penetration(joints: list[Tensor], mode: str) -> dict[str, float | int]:
    """Capsule penetration of joints ``[R, T, P, 22, 3]`` pooled over clips."""
    if mode == "reference":
        if len({int(j.shape[2]) for j in joints}) != 1 or len({int(j.shape[0]) for j in joints}) != 1:
            # evaluate_directory groups clips by person count and checks the sample counts in this mode
            raise ValueError("reference-mode penetration concatenates all clips along time and needs the same "
                             "person and sample counts in every clip")
        # rows in the reference's order (sample-major over the time-concatenated clips) for its 10^6-row subsample
        return penetration(torch.cat(joints, dim=1), mode="reference")
    total = None
    for j in joints:
        s = penetration_sums(j)
        if total is None:
            total = s
        else:
            total = {k: torch.maximum(total[k], v) if k == "overall_max" else total[k] + v for k, v in s.items()}
    out = penetration_from_sums(total)
    ints = ("penetrating_frames", "total_frames")
    return {k: int(v) if k in ints else float(v) for k, v in out.items()}


def _foot(joints: list[Tensor], persons_fn, mode: str, fps: float) -> dict[str, Any]:
    clips = [_select(j[..., 1:, :].flatten(-2), persons_fn(j)).unflatten(-1, (21, 3)) for j in joints]
    out = foot_sliding(clips, fps=fps, mode=mode)
    if mode == "reference":
        # the reference divides an int64 count tensor by an int (float32 true division) and reports two keys
        ratio = float(torch.tensor(out["sliding_frames"]) / out["total_frames"]) if out["total_frames"] else math.nan
        return {"foot_sliding_ratio": ratio, "avg_foot_sliding_vel": out["avg_foot_sliding_vel_m_per_s"]}
    return out


# --------------------------------------------------------------------------------------------- the run
def evaluate_directory(
    run_dir: str | os.PathLike,
    mode: str = "fixed",
    whole_seq: bool = False,
    seq_len: int | None = None,
    sample_num: int | None = None,
    test_set: str | os.PathLike | None = None,
    fps: float | None = None,
    body_model: BodyModel | str | os.PathLike | None = None,
    seed: int = 0,
    allow_missing_config: bool = False,
    baselines: bool = True,
    write: bool = True,
) -> EvaluationResult:
    """Evaluate every output npz in ``run_dir`` and write the YAML, CSV and markdown summary into it.

    Args:
        run_dir: directory of ``<clip>.npz`` outputs plus ``inf_cfg.yaml``.
        mode: ``"fixed"`` or ``"reference"`` (see the module docstring).
        whole_seq / seq_len / sample_num: frame and sample selection (:func:`~magnet.evaluation.select_frames`).
        test_set: YAML file whose ``test`` list names the clips to evaluate (default: every npz).
        fps: frames per second of the outputs (velocities, foot speeds, 1-second diversity chunks); None ->
            ``fps`` of ``inf_cfg.yaml`` (``sample.py`` writes the dataset's), else 30 (the reference's rate).
        body_model: a :class:`~magnet.body.BodyModel` or SMPL-X path; None -> ``smpl_path`` of ``inf_cfg.yaml``,
            else ``$MAGNET_SMPLX_MODEL``, else the default skeleton.
        seed: picks, per clip, which half of the GT-vs-GT FD baseline gets the clip's first 1-second GT block
            (see :func:`baseline_description`); the model's numbers do not depend on it.
        allow_missing_config: evaluate without ``inf_cfg.yaml`` (all persons, default body model).
        baselines: compute the GT-vs-GT FD and static-pose MPJPE baselines (False: null; the GT-vs-GT windowed
            FD costs as much as the model's own windowed FD).
        write: write the three files (atomically, only after every metric succeeded); with False the paths in
            ``.files`` are where they would go.

    Returns:
        :class:`EvaluationResult` with keys ``body`` (the reference structure), ``baseline`` and ``meta``; in
        reference mode with clips of several person counts, ``groups`` (``{"persons_<P>": {body, baseline,
        meta}}``, one per count) and ``meta``.

    Raises:
        DataError / ConfigError / BodyModelError: bad directory, files, options or body model (one line each).
    """
    check_mode(mode)
    if fps is None:
        from magnet.motion_files import run_fps

        fps = run_fps(run_dir)
    fps = int(fps) if float(fps).is_integer() else float(fps)
    if fps <= 0:
        raise ConfigError(f"fps must be positive, got {fps}")
    run_dir = Path(run_dir)
    reference = mode == "reference"
    files = list_output_files(run_dir, test_set)
    cfg = read_inference_config(run_dir, allow_missing=allow_missing_config)
    model = resolve_body_model(body_model, cfg.smpl_path, run_dir)

    if reference:
        conditioned = cfg.reference_task_mode in REFERENCE_LAST_PERSON_TASKS
        task = cfg.reference_task_mode
    else:
        task = cfg.sampling_task or "joint"
        conditioned = task in CONDITIONED_TASKS

    feats: list[ClipFeatures] = []
    for path in files:
        clip = load_output_npz(path)
        sel = select_frames(clip, whole_seq=whole_seq, seq_len=seq_len, sample_num=sample_num, reference=reference)
        feats.append(clip_features(clip, model, sel))
    counts = Counter(f.num_samples for f in feats)
    if len(counts) > 1:
        detail = ", ".join(f"{f.name}: {f.num_samples}" for f in feats[:4])
        raise DataError(f"the clips hold different sample counts ({detail}, ...); pass sample_num=<= "
                        f"{min(counts)} to evaluate the same number from each")

    evaluated = "all" if not conditioned else (
        "last" if reference else f"generated (all but the driven {', '.join(map(str, cfg.driven))})")
    settings = {
        "mode": mode,
        "frames": "whole_seq" if whole_seq else (f"seq_len={seq_len}" if seq_len is not None else "default"),
        "task": task,
        "evaluated_persons": evaluated,
    }

    def meta_of(group: list[ClipFeatures]) -> dict[str, Any]:
        return {
            **settings,
            "clips": len(group),
            "samples_per_clip": group[0].num_samples,
            "sample_num": sample_num,
            "persons_per_clip": sorted({f.num_persons for f in group}),
            "generated_frames": int(sum(f.gen_joints.shape[1] for f in group)),
            "gt_frames": int(sum(f.gt_joints.shape[1] for f in group)),
            "fps": fps,
            "seed": seed,
            "body_model": model.source,
            "inf_cfg": str(cfg.path) if cfg.found else None,
            "test_set": None if test_set is None else str(test_set),
            "length_unit": "m" if reference else "mm",
        }

    person_counts = sorted({f.num_persons for f in feats})
    if reference and len(person_counts) > 1:
        # The reference pools every clip into one tensor, which needs one person count: evaluate each count as
        # its own group (exactly what evaluating only those clips gives) and report the groups side by side.
        groups = {}
        for p in person_counts:
            group = [f for f in feats if f.num_persons == p]
            body, baseline = _metrics(group, mode, conditioned, reference, fps, seed, baselines, cfg.driven)
            groups[group_name(p)] = {"body": body, "baseline": baseline, "meta": meta_of(group)}
        meta = {**meta_of(feats), "grouped_by_persons": True}
        result = EvaluationResult(groups=groups, meta=meta)
        csv_text = "\n".join(grouped_csv_lines({k: g["body"] for k, g in groups.items()})) + "\n"
    else:
        body, baseline = _metrics(feats, mode, conditioned, reference, fps, seed, baselines, cfg.driven)
        result = EvaluationResult(body=body, baseline=baseline, meta=meta_of(feats))
        csv_text = "\n".join(to_csv_lines(body)) + "\n"
    suffix = output_suffix(mode, whole_seq, seq_len, test_set)
    from magnet.evaluation.report import summary_markdown  # local: report imports this module's constants

    yaml_text = yaml.safe_dump(dict(result), sort_keys=False, default_flow_style=False, width=120)
    summary = summary_markdown(result)
    result.summary = summary
    result.files = {
        "yaml": run_dir / f"eval_dict_c{suffix}.yaml",
        "csv": run_dir / f"eval_dict_c{suffix}.csv",
        "summary": run_dir / f"eval_summary{suffix}.md",
    }
    if write:
        for key, text in (("yaml", yaml_text), ("csv", csv_text), ("summary", summary)):
            with atomic_path(result.files[key]) as tmp:
                tmp.write_text(text)
    return result


def group_name(num_persons: int) -> str:
    """The key of a person-count group in a grouped (reference-mode, mixed person counts) result: ``persons_2``."""
    return f"persons_{num_persons}"


def _metrics(feats: list[ClipFeatures], mode: str, conditioned: bool, reference: bool, fps: float,
             seed: int, baselines: bool = True, driven: tuple[int, ...] = (0,)) -> tuple[dict, dict]:
    """The ``body`` dict (reference structure and order) and the ``baseline`` dict."""
    def persons(x: Tensor) -> list[int] | None:  # x: features [R, T, P, 63]
        return _persons_of(int(x.shape[-2]), conditioned, reference, driven)

    gen_g = [ClipFeatures.g_of(f.gen_joints) for f in feats]
    gt_g = [ClipFeatures.g_of(f.gt_joints) for f in feats]
    gen_k = [ClipFeatures.k_of(f.gen_joints, fps) for f in feats]
    gt_k = [ClipFeatures.k_of(f.gt_joints, fps) for f in feats]

    # the GT-vs-GT FD baseline: the GT frames of every clip split into alternating 1-second blocks; the seed
    # picks, per clip, which half gets the first block
    first_half = torch.randint(0, 2, (len(feats),), generator=torch.Generator().manual_seed(int(seed))).tolist()
    block = max(round(fps), 1)

    body: dict[str, Any] = {"g": {}, "k": {}}
    baseline: dict[str, Any] = {"description": baseline_description(baselines), "g": {}, "k": {}}
    for key, gen, gt in (("g", gen_g, gt_g), ("k", gen_k, gt_k)):
        gen_sel = [_select(x, persons(x)) for x in gen]
        gt_sel = [_select(x, persons(x)) for x in gt]
        for suffix, windowed in (("solo", False), ("solo_seq", True)):
            fd = _fd(_fd_sums(gt_sel, windowed), _fd_sums(gen_sel, windowed), windowed)
            if fd is None and not windowed:
                raise DataError(f"not enough frames to compute the Fréchet distance of '{key}' (at least 2 per "
                                "set); evaluate longer or more clips")
            if gen_sel[0].shape[0] >= 2:
                div = (sample_diversity_seq(gen_sel, fps=int(fps), mode=mode) if windowed
                       else sample_diversity(gen_sel))
                if math.isnan(div) and not reference:
                    div = None  # fixed mode: no clip is one second long
            else:
                div = math.nan if reference else None  # one sample: the variance across samples is undefined
            body[key][suffix] = {"fd": fd, "div_sample": div}
            base_fd = None
            if baselines:
                halves = _block_half_sums(gt_sel, windowed, block, first_half)
                base_fd = _fd(halves[0], halves[1], windowed)
            baseline[key][suffix] = {"fd": base_fd, "div_sample": 0.0}

    # MPJPE / MPJVE with best-of-k, on the selected persons
    gen_j = [f.gen_joints[..., 1:, :] for f in feats]
    gt_j = [f.gt_joints[0, :, :, 1:, :] for f in feats]

    def sel_j(x: Tensor) -> Tensor:
        p = _persons_of(int(x.shape[-3]), conditioned, reference, driven)
        return x if p is None else x[..., p, :, :]

    gen_j = [sel_j(x) for x in gen_j]
    gt_j = [sel_j(x) for x in gt_j]
    errors = {**mpjpe(gen_j, gt_j, mode=mode), **mpjve(gen_j, gt_j, fps=fps, mode=mode)}
    keys = list(errors)
    if reference:  # the reference names: mpjpe, mpjpe_best_list, mpjve, mpjve_best_list (metres)
        names = ["mpjpe", "mpjpe_best_list", "mpjve", "mpjve_best_list"]
        errors = {new: errors[old] for new, old in zip(names, keys)}
    body.update(errors)
    static = None
    if baselines and all(f.last_context is not None for f in feats):
        static = [sel_j(f.last_context[..., 1:, :]) for f in feats]
    for key in list(errors):
        if "best_list" in key:
            continue
        value = None
        if static is not None:
            stat_pred = [s.expand(1, g.shape[0], *s.shape[2:]) for s, g in zip(static, gt_j)]
            fn = mpjve if key.startswith("mpjve") else mpjpe
            kwargs = {"fps": fps} if fn is mpjve else {}
            res = fn(stat_pred, gt_j, mode=mode, **kwargs)
            value = next(iter(res.values()))
        baseline[key] = value

    # person correlation (all persons)
    if feats[0].num_persons > 1 or (not reference and any(f.num_persons > 1 for f in feats)):
        for key, gen, gt in (("g", gen_g, gt_g), ("k", gen_k, gt_k)):
            body[key]["corr_gt"] = _correlation(gt, mode)
            body[key]["corr_gen"] = _correlation(gen, mode)

    # foot sliding (selected persons) and penetration (all persons)
    def foot_persons(j: Tensor) -> list[int] | None:
        return _persons_of(int(j.shape[-3]), conditioned, reference, driven)

    body["g"]["foot_skate_gt"] = _foot([f.gt_joints for f in feats], foot_persons, mode, fps)
    body["g"]["foot_skate_gen"] = _foot([f.gen_joints for f in feats], foot_persons, mode, fps)
    body["g"]["penetration_gt"] = _penetration([f.gt_joints for f in feats], mode)
    body["g"]["penetration_gen"] = _penetration([f.gen_joints for f in feats], mode)
    return body, baseline


# ------------------------------------------------------------------------------------------------ CSV
def _csv_rows(body: dict) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``gt`` and ``gen`` rows of the reference CSV as ``{key: value or ""}`` (keys in column order)."""
    gt_row: dict[str, Any] = {}
    gen_row: dict[str, Any] = {}

    def register(path: str, value: Any) -> None:
        if not isinstance(value, float):
            return
        key = path.replace("_gt", "")
        is_gt = key != path
        key = key.replace("_gen", "")
        row, other = (gt_row, gen_row) if is_gt else (gen_row, gt_row)
        if key not in gt_row and key not in gen_row:
            gt_row[key] = ""  # column order follows the first appearance
        row[key] = value
        other.setdefault(key, "")

    for k0, v0 in body.items():
        if isinstance(v0, dict):
            for k1, v1 in v0.items():
                if isinstance(v1, dict):
                    for k2, v2 in v1.items():
                        register(f"{k0}.{k1}.{k2}", v2)
                else:
                    register(f"{k0}.{k1}", v1)
        else:
            register(k0, v0)
    return gt_row, {k: gen_row[k] for k in gt_row}


def to_csv_lines(body: dict) -> list[str]:
    """The reference CSV: ``split,<keys>`` / ``gt,<values>`` / ``gen,<values>``.

    Keys are dotted paths (up to 3 levels) of the float leaves of ``body``; ``_gt`` and ``_gen`` are removed from
    the key and decide the row (other leaves go to ``gen``, and the other row stays empty). Integers, lists and
    None are skipped. Column order = first appearance.
    """
    gt_row, gen_row = _csv_rows(body)
    keys = list(gt_row)
    return [
        "split," + ",".join(keys),
        "gt," + ",".join(str(gt_row[k]) for k in keys),
        "gen," + ",".join(str(gen_row[k]) for k in keys),
    ]


def grouped_csv_lines(bodies: dict[str, dict]) -> list[str]:
    """The CSV of a grouped result: the reference's columns (the union over groups, in first-appearance order) and
    two rows per group, ``gt_<group>`` and ``gen_<group>`` (e.g. ``gt_persons_2``); a key a group lacks is empty."""
    rows = {name: _csv_rows(body) for name, body in bodies.items()}
    keys: list[str] = []
    for gt_row, _ in rows.values():
        keys += [k for k in gt_row if k not in keys]
    lines = ["split," + ",".join(keys)]
    for name, (gt_row, gen_row) in rows.items():
        lines.append(f"gt_{name}," + ",".join(str(gt_row.get(k, "")) for k in keys))
        lines.append(f"gen_{name}," + ",".join(str(gen_row.get(k, "")) for k in keys))
    return lines
