"""Sampling a dataset split into an output directory (what ``sample.py`` runs).

``sample_directory(...)`` checks everything it can before any model work (options, checkpoint, dataset, clip
names, person counts, clip lengths, the plan), then writes ``inf_cfg.yaml`` and one npz per clip in the
reference's output format (spec 7.1: row 0 the ground truth, rows 1..S the samples), so ``python evaluate.py
run_dir=<out_dir>`` and the reference's ``eval.py`` read the folder as it is.

Resumable: a re-run with the same configuration skips clips whose npz exists (each npz is written atomically, so
an interrupted run leaves only whole files). A folder that holds another configuration's outputs is refused unless
``overwrite=True`` (which removes them first). Every clip gets its own seed derived from ``seed`` and the clip
name, so a clip's samples do not depend on which other clips run or on resuming.
"""

from __future__ import annotations

import os
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from magnet.data import dataset_files
from magnet.data.hdf5 import open_dataset
from magnet.errors import ConfigError, DataError
from magnet.evaluation.io import INF_CFG_NAME, write_inference_config, write_output_npz
from magnet.sampling.checkpoint import read_checkpoint_info
from magnet.sampling.config import SamplingConfig
from magnet.sampling.plans import Plan
from magnet.sampling.tasks import DRIVEN_TASKS, check_request, plan_for

__all__ = ["ClipRef", "SampleRun", "clip_seed", "list_clips", "sample_directory"]

PLAN_NAME = "plan.npz"


@dataclass(frozen=True)
class ClipRef:
    """One clip to sample: where it lives and how big it is."""

    dataset: str
    hdf5: Path
    split: str
    name: str
    frames: int
    persons: int
    out_name: str


@dataclass
class SampleRun:
    """What :func:`sample_directory` did: ``written`` / ``skipped`` clip names, ``plans`` (clip -> Plan), the
    output directory, network calls made and the seconds spent sampling."""

    out_dir: Path
    clips: list[ClipRef]
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    plans: dict[str, Plan] = field(default_factory=dict)
    network_calls: int = 0
    seconds: float = 0.0


def clip_seed(seed: int, name: str) -> int:
    """The seed of clip ``name`` in a run seeded ``seed`` (stable across machines and runs)."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**63 - 1)


def list_clips(datasets: list[dict[str, Any]], split: str, clips: list[str] | None, num_persons: int,
               max_clips: int | None = None) -> tuple[list[ClipRef], list[str]]:
    """The clips of ``split`` to sample -> ``(clips, excluded)``; ``excluded`` names clips of the split with fewer
    persons than the checkpoint generates (an explicitly named one is an error instead)."""
    found: list[ClipRef] = []
    excluded: list[str] = []
    several = len(datasets) > 1
    wanted = None if clips is None else [str(c) for c in clips]
    seen: set[str] = set()
    for ds in datasets:
        files = dataset_files(ds["dir"], ds["name"])
        hdf5 = Path(ds.get("hdf5") or files.hdf5)
        if not hdf5.is_file():
            raise DataError(f"dataset file {hdf5} not found; build it with magnet-preprocess (or use dataset=synthetic, "
                            "which builds itself)")
        with open_dataset(hdf5) as f:
            if not f.has_split(split):
                raise DataError(f"{hdf5} has no split {split!r}; choose one of {', '.join(f.splits)}")
            for name in f.sequences(split):
                if wanted is not None and name not in wanted:
                    continue
                seen.add(name)
                T, P, _ = f.shape(split, name)
                out = f"{ds['name']}__{name}" if several else name
                ref = ClipRef(str(ds["name"]), hdf5, split, name, int(T), int(P), out)
                if P < num_persons:
                    if wanted is not None:
                        raise DataError(f"clip {name} ({hdf5}, split {split}) has {P} person(s) but the checkpoint "
                                        f"generates {num_persons}; pick clips with at least {num_persons} persons")
                    excluded.append(name)
                    continue
                found.append(ref)
    if wanted is not None:
        missing = [c for c in wanted if c not in seen]
        if missing:
            raise DataError(f"clip {missing[0]!r} is not in split {split!r} of "
                            f"{', '.join(str(d['name']) for d in datasets)}"
                            f"{f' ({len(missing)} missing)' if len(missing) > 1 else ''}; check the names with "
                            "python -c \"from magnet.data.hdf5 import list_sequences; print(list_sequences(PATH, SPLIT))\"")
    if max_clips is not None:
        if int(max_clips) < 1:
            raise ConfigError(f"max_clips must be >= 1, got {max_clips}")
        found = found[: int(max_clips)]
    if not found:
        raise DataError(f"no clip of split {split!r} has at least {num_persons} persons "
                        f"({len(excluded)} with fewer); pick another split or dataset")
    return found, excluded


def run_record(cfg: SamplingConfig, *, ckpt: str, clips: list[ClipRef], seed: int, stats_source: str,
               body_model: str | None, num_persons: int, fps: float = 30.0) -> dict[str, Any]:
    """The ``inf_cfg.yaml`` content: the reference's keys (``sampling_cfg``, ``smpl_path``, ...), the outputs'
    frame rate ``fps`` (the dataset's; read by ``evaluate.py`` and the renderer), plus ``magnet`` with what decides
    the outputs (compared on resume)."""
    sampling = cfg.to_dict()
    task = sampling.pop("task")
    sampling["sampling_task"] = task
    sampling["sampling_schedule"] = sampling.pop("sampling_schedule")
    return {
        "checkpoint_dir": str(ckpt),
        "dataset_path": min(str(c.hdf5) for c in clips) if clips else None,
        "dataset_split": clips[0].split if clips else None,
        "sampling_task": task,
        "sampling_cfg": sampling,
        "inference_data_list": [c.name for c in clips],
        "smpl_path": body_model,
        "random_seed": int(seed),
        "fps": float(fps),
        "magnet": {"compat": cfg.compat, "num_persons": int(num_persons), "stats": stats_source,
                   "datasets": sorted({c.dataset for c in clips})},
    }


def _comparable(record: dict[str, Any]) -> dict[str, Any]:
    keep = dict(record)
    keep.pop("inference_data_list", None)  # a re-run may sample more or fewer clips of the same configuration
    keep.pop("fps", None)  # a label of the outputs (older folders lack it), not something the sampler reads
    return keep


def prepare_out_dir(out_dir: Path, record: dict[str, Any], overwrite: bool) -> None:
    """Refuse a folder holding another configuration's outputs (unless ``overwrite``, which empties it of them)."""
    cfg_path = out_dir / INF_CFG_NAME
    npz = sorted(out_dir.glob("*.npz")) if out_dir.is_dir() else []
    npz = [p for p in npz if p.name != PLAN_NAME and not p.name.startswith("plan_")]
    if not npz and not cfg_path.is_file():
        return
    same = False
    if cfg_path.is_file():
        try:
            old = yaml.safe_load(cfg_path.read_text()) or {}
        except yaml.YAMLError:
            old = {}
        same = isinstance(old, dict) and _comparable(old) == _comparable(yaml.safe_load(yaml.safe_dump(record)))
    if same:
        return
    if not overwrite:
        what = "another sampling configuration" if cfg_path.is_file() else "npz files of unknown origin"
        raise ConfigError(f"output folder {out_dir} holds {what}; pass overwrite=true to replace its outputs, or "
                          "choose another out_dir=")
    for p in npz:
        p.unlink()
    for p in list(out_dir.glob("eval_*")) + [cfg_path]:
        if p.is_file():
            p.unlink()


def _load_clip(ref: ClipRef) -> np.ndarray:
    with open_dataset(ref.hdf5) as f:
        return f.read(ref.split, ref.name)


def sample_directory(ckpt: str | os.PathLike, out_dir: str | os.PathLike, config: SamplingConfig, *,
                     datasets: list[dict[str, Any]], split: str = "test", clips: list[str] | None = None,
                     max_clips: int | None = None, seed: int = 1111, device: str = "cpu",
                     plan_only: bool = False, overwrite: bool = False, body_model: str | None = None,
                     stats: str | None = None, progress: bool = True, fps: float = 30.0,
                     log: Callable[[str], None] = print) -> SampleRun:
    """Sample every selected clip of ``split`` into ``out_dir`` (see the module docstring)."""
    import time

    from magnet.sampling.sampler import Sampler

    out_dir = Path(out_dir)
    dev = resolve_device(device)
    info = read_checkpoint_info(ckpt)
    P = int(info["num_persons"])
    refs, excluded = list_clips(datasets, split, clips, P, max_clips)
    # plans first: every option and clip error surfaces before any model work
    plans: dict[str, Plan] = {}
    cache: dict[int, Plan] = {}
    kept: list[ClipRef] = []
    last_error: Exception | None = None
    for ref in refs:
        try:
            check_request(config, P, ref.frames, ref.persons, where=f"clip {ref.name} ({ref.hdf5.name})")
        except DataError:
            if clips is not None:  # a clip the user named: its problem is the answer
                raise
            excluded.append(ref.name)  # too short for the task: left out, as clips with too few persons
            last_error = sys.exc_info()[1]
            continue
        kept.append(ref)
        key = ref.frames if config.task in DRIVEN_TASKS else -1  # the others do not depend on the clip
        if key not in cache:
            cache[key] = plan_for(config, P, ref.frames)
        plans[ref.out_name] = cache[key]
    if not kept:
        raise DataError(f"no clip of split {split!r} suits task {config.task}: {last_error}")
    refs = kept
    run = SampleRun(out_dir=out_dir, clips=refs, excluded=excluded, plans=plans)
    if plan_only:
        _write_plans(out_dir, plans, log)
        return run
    sampler = Sampler.from_checkpoint(ckpt, device=dev, stats=stats, body_model=body_model)
    record = run_record(config, ckpt=str(ckpt), clips=refs, seed=seed, stats_source=sampler.stats.source,
                        body_model=body_model, num_persons=P, fps=fps)
    prepare_out_dir(out_dir, record, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_inference_config(out_dir, record)
    todo = [r for r in refs if not (out_dir / f"{r.out_name}.npz").is_file()]
    run.skipped = [r.out_name for r in refs if r not in todo]
    t0 = time.perf_counter()
    with _progress(progress) as bar:
        clip_task = bar.add_task("clips", total=len(todo)) if bar else None
        step_task = bar.add_task("denoising", total=1) if bar else None
        for ref in todo:
            plan = plans[ref.out_name]
            if bar:
                bar.update(step_task, completed=0, total=plan.num_steps, description=f"{ref.out_name}")

            def tick(done: int, total: int, _bar=bar, _task=step_task) -> None:
                if _bar:
                    _bar.update(_task, completed=done)

            samples = sampler.generate(context=_load_clip(ref), config=config, seed=clip_seed(seed, ref.name),
                                       joints=False, progress=tick)
            arrays = samples.output_arrays()
            write_output_npz(out_dir / f"{ref.out_name}.npz", **arrays)
            run.written.append(ref.out_name)
            run.network_calls += samples.network_calls
            if bar:
                bar.update(clip_task, advance=1)
    run.seconds = time.perf_counter() - t0
    return run


def _write_plans(out_dir: Path, plans: dict[str, Plan], log: Callable[[str], None]) -> None:
    distinct: dict[int, Plan] = {id(p): p for p in plans.values()}
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(distinct) == 1:
        path = next(iter(distinct.values())).save(out_dir / PLAN_NAME)
        log(f"wrote {path}")
    else:
        for name, p in plans.items():
            path = p.save(out_dir / f"plan_{name}.npz")
        log(f"wrote {len(plans)} plans (plan_<clip>.npz) into {out_dir}: plans differ between clips")
    for name, p in plans.items():
        log(f"{name}: {p.num_calls} network calls, {p.num_steps} denoising steps, {p.num_windows} window(s), "
            f"{p.total_frames} frames")
    first = next(iter(plans.values()))
    log(first.summary())


def resolve_device(device: str) -> torch.device:
    """``cpu`` | ``cuda`` | ``cuda:N`` | ``auto`` -> a usable device (one-line error when CUDA is missing)."""
    d = str(device)
    if d == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if d.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={d} but CUDA is not available on this machine; use device=cpu (or auto)")
    try:
        return torch.device(d)
    except RuntimeError as exc:
        raise ConfigError(f"device {d!r} is not a torch device; use cpu, cuda, cuda:N or auto") from exc


class _NoBar:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _progress(enabled: bool):
    if not enabled:
        return _NoBar()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
