"""Sample a trained DFoT: ``python sample.py ckpt=<run dir> [task=joint] [schedule=...] [dataset=... split=test]``.

Thin Hydra entry point around :func:`magnet.sampling.run.sample_directory` (options in ``conf/sample.yaml``, task
settings in ``conf/task/``, schedules in ``conf/schedule/``). Writes one npz per clip in the reference's output
format plus ``inf_cfg.yaml`` into ``out_dir``; ``plan_only=true`` writes ``plan.npz`` and prints the network calls
per clip without loading the model. User errors print ``error: <one line>`` on stderr and exit with code 2,
leaving nothing written.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from magnet.cli import check_choices, one_line_warnings, run_guarded

GROUPS = ("task", "schedule", "sampling", "dataset", "paths")

TASK_KEYS = ("sampling_subseq_len", "ar_seq_stride", "root_transform_mode", "denoising_process",
             "is_update_history_transforms", "use_temporal_smoothing", "temporal_smoothing_strength",
             "cfg_scale_dict", "use_smoothing_guidance", "smoothing_guidance_weight", "smoothing_guidance_start_ratio",
             "smoothing_guidance_end_ratio", "use_foot_skating_guidance", "foot_skating_guidance_weight",
             "foot_skating_guidance_start_ratio", "foot_skating_guidance_end_ratio", "driven", "keyframes")


def sampling_config(cfg: DictConfig):
    """The :class:`magnet.sampling.SamplingConfig` of a composed ``conf/sample.yaml``."""
    from magnet.sampling.config import SamplingConfig

    task = OmegaConf.to_container(cfg.task, resolve=True)
    options = {k: task[k] for k in TASK_KEYS if k in task}
    return SamplingConfig(  # it checks every value's type and range (one line naming the option)
        task=str(task["task"]), sampling_schedule=str(cfg.schedule.name),
        offset_proportion=cfg.schedule.offset_proportion, sampling_num=cfg.sampling_num,
        sampling_steps=cfg.sampling_steps, ddim_eta=cfg.eta, context_seq_len=cfg.context_seq_len,
        sampling_seq_len=cfg.sampling_seq_len, compat=cfg.compat,
        guidance_every=cfg.sampling.guidance_every, precision=cfg.sampling.precision, **options)


def sample(cfg: DictConfig) -> None:
    from hydra.utils import instantiate

    from magnet.errors import ConfigError
    from magnet.sampling.run import sample_directory
    from magnet.utils import require_bool, require_number

    if not cfg.ckpt:
        raise ConfigError("ckpt is required: python sample.py ckpt=<DFoT run dir, its dfot.safetensors, a "
                          "checkpoints/last.ckpt or a reference run directory>")
    config = sampling_config(cfg)
    seed = require_number("seed", cfg.seed, integer=True)
    max_clips = None if cfg.max_clips is None else require_number("max_clips", cfg.max_clips, integer=True, minimum=1)
    if cfg.dataset.get("prepare") is not None:  # the synthetic dataset builds itself on first use
        instantiate(cfg.dataset.prepare)
    datasets = OmegaConf.to_container(cfg.dataset.datasets, resolve=True)
    clips = None if cfg.clips is None else [str(c) for c in cfg.clips]
    run = sample_directory(
        cfg.ckpt, cfg.out_dir, config, datasets=datasets, split=str(cfg.split), clips=clips,
        max_clips=max_clips, seed=seed, device=str(cfg.device), plan_only=require_bool("plan_only", cfg.plan_only),
        overwrite=require_bool("overwrite", cfg.overwrite), body_model=cfg.body_model, stats=cfg.stats,
        progress=require_bool("progress", cfg.progress),
        fps=require_number("dataset.fps", cfg.dataset.get("fps") or 30, above=0))
    if cfg.plan_only:
        return
    if run.excluded:
        print(f"note: {len(run.excluded)} clip(s) of split {cfg.split} have fewer persons than the checkpoint or are "
              f"too short for task {config.task}; they were not sampled")
    if run.skipped:
        print(f"resumed: {len(run.skipped)} clip(s) already in {run.out_dir} were kept")
    per_clip = f", {run.seconds / len(run.written):.2f} s per clip" if run.written else ""
    print(f"wrote {len(run.written)} clip(s) into {run.out_dir} ({run.network_calls} network calls, "
          f"{run.seconds:.1f} s{per_clip})")
    print(f"evaluate with: python evaluate.py run_dir={run.out_dir}")


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    run_guarded(sample, cfg)


if __name__ == "__main__":
    one_line_warnings()
    check_choices(sys.argv[1:], GROUPS)
    main()
