"""The human-readable summary of an evaluation: one markdown table (metric, unit, generated, GT baseline, what
the baseline is), then counts and settings. A grouped result (reference mode, clips with several person counts)
gets a generated and a GT-baseline column per person count, side by side."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["format_value", "summary_markdown", "summary_rows"]


def format_value(value: Any) -> str:
    """Numbers with 4 significant digits; ``None`` -> ``n/a``; ints as they are."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}"
    return str(value)


def _get(d: dict, path: str) -> Any:
    cur: Any = d
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


# what the baseline column holds, per kind of row
GT_HALVES = "GT vs GT (1)"
ZERO_GT = "GT (one per context)"
STATIC = "last context frame held (2)"
GT_VALUE = "the GT itself"
BASELINE_NOTES = (
    ("(1) FD between two halves of the GT frames: every clip is cut into alternating 1-second blocks, so both "
     "halves hold every clip. A generator that matches the GT distribution of these clips scores about this "
     "(copying the GT scores 0); it is a reference point, not a lower bound, and grows with fewer frames."),
    "(2) A model that freezes at the last context frame; n/a without context frames.",
)


def summary_rows(result: dict) -> list[tuple[str, str, Any, Any, str]]:
    """``(metric, unit, generated, GT baseline, what the baseline is)`` rows of an evaluation dict
    (``body``/``baseline``/``meta``)."""
    body, base, meta = result["body"], result["baseline"], result["meta"]
    length = meta.get("length_unit", "mm")
    rows: list[tuple[str, str, Any, Any, str]] = []
    for key, unit in (("g", "m^2"), ("k", "(m/s)^2")):
        what = "positions" if key == "g" else "velocities"
        rows.append((f"FD per frame ({what}, {key})", unit, _get(body, f"{key}.solo.fd"),
                     _get(base, f"{key}.solo.fd"), GT_HALVES))
        rows.append((f"FD 30-frame windows / 30 ({key})", unit, _get(body, f"{key}.solo_seq.fd"),
                     _get(base, f"{key}.solo_seq.fd"), GT_HALVES))
        rows.append((f"sample diversity ({key})", unit, _get(body, f"{key}.solo.div_sample"),
                     _get(base, f"{key}.solo.div_sample"), ZERO_GT))
        rows.append((f"sample diversity, 1 s chunks ({key})", unit, _get(body, f"{key}.solo_seq.div_sample"),
                     _get(base, f"{key}.solo_seq.div_sample"), ZERO_GT))
    for name, unit in (("mpjpe", length), ("mpjve", f"{length}/s")):
        keys = [k for k in body if k.startswith(name) and "best_list" not in k]
        best_keys = [k for k in body if k.startswith(f"{name}_best_list")]
        if keys:
            rows.append((f"{name.upper()} (mean over samples)", unit, body[keys[0]], base.get(keys[0]), STATIC))
        if best_keys and body[best_keys[0]]:
            curve = body[best_keys[0]]
            rows.append((f"{name.upper()} best of {len(curve)}", unit, curve[-1], base.get(keys[0]), STATIC))
    for key in ("g", "k"):
        if "corr_gen" in body.get(key, {}):
            rows.append((f"person correlation ({key})", "-", body[key]["corr_gen"], body[key]["corr_gt"], GT_VALUE))
    gen, gt = body["g"]["foot_skate_gen"], body["g"]["foot_skate_gt"]
    speed_key = "avg_foot_sliding_vel_m_per_s" if "avg_foot_sliding_vel_m_per_s" in gen else "avg_foot_sliding_vel"
    rows.append(("foot sliding ratio", "fraction", gen["foot_sliding_ratio"], gt["foot_sliding_ratio"], GT_VALUE))
    rows.append(("foot sliding speed", "m/s", gen[speed_key], gt[speed_key], GT_VALUE))
    pen, pen_gt = body["g"]["penetration_gen"], body["g"]["penetration_gt"]
    for name, unit, k in (("penetration ratio", "fraction", "penetration_ratio"),
                          ("penetration total depth (avg)", "m", "avg_total_penetration"),
                          ("penetration max depth (avg)", "m", "avg_max_depth"),
                          ("penetration max depth (overall)", "m", "overall_max_depth")):
        rows.append((name, unit, pen[k], pen_gt[k], GT_VALUE))
    return rows


def _persons_label(group: str, result: dict) -> str:
    p = result["groups"][group]["meta"]["persons_per_clip"][0]
    return f"{p} person" + ("" if p == 1 else "s")


def _table(result: dict) -> list[str]:
    """The metric table: one generated / GT-baseline column pair, or one per group of a grouped result."""
    if "groups" not in result:
        lines = ["| metric | unit | generated | GT baseline | baseline is |", "|---|---|---|---|---|"]
        for name, unit, gen, base, what in summary_rows(result):
            lines.append(f"| {name} | {unit} | {format_value(gen)} | {format_value(base)} | {what} |")
        return lines
    groups = list(result["groups"])
    per_group = {g: summary_rows(result["groups"][g]) for g in groups}
    rows: dict[tuple[str, str], dict[str, Any]] = {}  # (metric, unit) -> {group: (gen, base), "what": ...}
    for group in sorted(groups, key=lambda g: -len(per_group[g])):  # the row order of the fullest group
        for name, unit, gen, base, what in per_group[group]:
            rows.setdefault((name, unit), {"what": what})[group] = (gen, base)
    labels = [_persons_label(g, result) for g in groups]
    head = " | ".join(f"generated ({label}) | GT baseline ({label})" for label in labels)
    lines = [f"| metric | unit | {head} | baseline is |", "|---" * (3 + 2 * len(groups)) + "|"]
    for (name, unit), values in rows.items():
        cells = []
        for group in groups:
            gen, base = values.get(group, ("-", "-"))
            cells += [format_value(gen), format_value(base)]
        lines.append(f"| {name} | {unit} | {' | '.join(cells)} | {values['what']} |")
    return lines


def summary_markdown(result: dict) -> str:
    """The markdown summary: the metric table, then counts and settings."""
    meta = result["meta"]
    lines = ["# Evaluation summary", "", *_table(result)]
    lines += [""] + [x for note in BASELINE_NOTES for x in (note, "")]
    lines += [
        (f"- mode: {meta['mode']} (task: {meta['task']}, evaluated persons: {meta['evaluated_persons']})"),
        (f"- frames: {meta['frames']}; clips: {meta['clips']}; samples per clip: {meta['samples_per_clip']}; "
         f"persons per clip: {', '.join(str(p) for p in meta['persons_per_clip'])}"),
    ]
    if "groups" in result:
        clips = ", ".join(f"{_persons_label(g, result)}: {result['groups'][g]['meta']['clips']}"
                          for g in result["groups"])
        lines.append(f"- each person count is evaluated as its own group (clips per group: {clips}): the reference "
                     "pools every clip into one tensor, which needs one person count; mode=fixed pools all clips")
    lines += [
        (f"- evaluated frames: generated {meta['generated_frames']} (per sample), GT {meta['gt_frames']}; "
         f"fps {meta['fps']}"),
        (f"- seed: {meta['seed']} (which half gets each clip's first GT block; nothing else is random); "
         f"body model: {meta['body_model']}"),
        "",
    ]
    return "\n".join(lines)
