"""Train a stage: ``python train.py stage=vqvae dataset=dd100`` (see README, "Training").

Composes conf/train.yaml, instantiates the datamodule, the stage's LightningModule (from the stage config itself:
``magnet.cli.instantiate_stage``), callbacks, loggers and the Trainer, fits, and writes the plain weights next to
the checkpoints. Sweeps (``-m``, every Hydra sweep syntax), the submitit launchers (``hydra/launcher=slurm``) and
Hydra sweepers work as usual; ``objective=<metric>`` returns that metric to a sweeper. SIGTERM and Ctrl-C stop
the run after the current step with a checkpoint to resume from (``callbacks.InterruptCheckpoint``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from magnet.cli import check_choices, one_line_warnings, quiet_lightning_notices, run_guarded

GROUPS = ("stage", "dataset", "model", "trainer", "logger", "callbacks", "experiment", "paths")


def check_accelerator(trainer_cfg: DictConfig) -> None:
    """A one-line ConfigError for a GPU trainer (``trainer=gpu`` / ``ddp``) on a machine where torch sees no GPU."""
    import torch

    from magnet.errors import ConfigError

    accelerator = str(trainer_cfg.get("accelerator", "auto")).lower()
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ConfigError(f"trainer.accelerator={accelerator} but torch {torch.__version__} ({build}) sees no GPU; "
                          "use trainer=cpu (or trainer=ddp trainer.accelerator=cpu), or install a CUDA build of torch "
                          "(README, Install)")


def save_resolved_config(cfg: DictConfig, run_dir: Path) -> Path | None:
    """Write ``<run>/.hydra/resolved.yaml``: the run's config with every interpolation and environment variable
    filled in (Hydra's ``config.yaml`` beside it keeps them as written). None when the run has no ``.hydra/``."""
    from omegaconf import OmegaConf

    folder = run_dir / ".hydra"
    if not folder.is_dir():
        return None
    OmegaConf.save(cfg, folder / "resolved.yaml", resolve=True)
    return folder / "resolved.yaml"


def check_sweep_processes(trainer_cfg: DictConfig) -> None:
    """A one-line ConfigError for DDP inside a local sweep: Lightning starts its extra local processes by running the
    command line again, which in a multirun would start the whole sweep again. Under SLURM the processes are SLURM's
    tasks (hydra/launcher=slurm), which works."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from magnet.cli import in_slurm_batch_job
    from magnet.errors import ConfigError

    strategy = str(trainer_cfg.get("strategy", "auto"))
    if HydraConfig.get().mode == RunMode.MULTIRUN and strategy.startswith("ddp") and "spawn" not in strategy \
            and str(trainer_cfg.get("devices")) != "1" and not in_slurm_batch_job():
        raise ConfigError(f"trainer.strategy={strategy} with several local processes cannot run inside a sweep (-m): "
                          "Lightning starts them by running the command again; run the jobs one by one without -m, "
                          "or sweep on SLURM (hydra/launcher=slurm), where SLURM starts the processes")


def train(cfg: DictConfig) -> dict[str, float]:
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from magnet.cli import check_run_settings, instantiate_stage
    from magnet.errors import ConfigError
    from magnet.utils import require_number

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    # the checks that need no Lightning first: a bad value fails in a second or two
    sweeper = str(HydraConfig.get().sweeper.get("_target_", ""))
    if not cfg.get("objective") and not sweeper.endswith("BasicSweeper"):
        raise ConfigError(f"the sweeper {sweeper.rsplit('.', 1)[-1]} optimises a metric: name it with objective=, e.g. "
                          "objective=val/mpjpe_mm (stage 1) or objective=val/loss (stage 2)")
    seed = require_number("seed", cfg.seed, integer=True, hint="e.g. seed=1111")
    check_accelerator(cfg.trainer)
    check_sweep_processes(cfg.trainer)
    check_run_settings(cfg.stage)

    import lightning.pytorch as pl
    from lightning.pytorch.utilities import rank_zero_only
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from callbacks import InterruptCheckpoint
    from magnet.training.base import check_resume_checkpoint

    if rank_zero_only.rank == 0:
        save_resolved_config(cfg, run_dir)
    pl.seed_everything(seed, workers=True)
    if cfg.dataset.get("prepare") is not None:  # e.g. the synthetic dataset is built on first use
        instantiate(cfg.dataset.prepare)
    datamodule = instantiate(cfg.data)
    module = instantiate_stage(cfg.stage)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks = [c for c in callbacks if c is not None]  # a factory may decline (time_checkpoint without minutes)
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    if not loggers:  # logger=none: Lightning's LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    try:
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    except (InstantiationException, ValueError, TypeError) as exc:  # every Trainer argument is a user setting
        cause = exc.__cause__ if isinstance(exc, InstantiationException) and exc.__cause__ is not None else exc
        raise ConfigError(f"Lightning refuses the trainer settings (conf/trainer/, trainer.<name>=): {cause}") from exc
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path:
        check_resume_checkpoint(ckpt_path, cfg.stage.name, module)
    try:
        # weights_only=False: the check has already unpickled the file in full (the user's own run), and
        # checkpoints written before hyper-parameters were plain containers hold omegaconf objects.
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path,
                    weights_only=False if ckpt_path else None)
    except SIGTERMException:
        interrupt = next((c for c in callbacks if isinstance(c, InterruptCheckpoint)), None)
        signum = interrupt.signal if interrupt is not None and interrupt.signal else 15
        if trainer.is_global_zero:
            if interrupt is not None and interrupt.path is not None and interrupt.path.name.startswith("hpc_ckpt_"):
                print(f"interrupted at step {trainer.global_step}; a requeued SLURM job resumes from {interrupt.path} "
                      "by itself", file=sys.stderr)
            elif interrupt is not None and interrupt.path is not None:
                print(f"interrupted at step {trainer.global_step}; resume with: python train.py <same options> "
                      f"ckpt_path={interrupt.path}", file=sys.stderr)
            else:
                print(f"interrupted at step {trainer.global_step} (no checkpoint written)", file=sys.stderr)
        raise SystemExit(128 + int(signum)) from None
    if trainer.is_global_zero and hasattr(module, "export_weights"):
        path = module.export_weights(run_dir / f"{cfg.stage.name}.safetensors")
        print(f"weights: {path}")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if trainer.is_global_zero:
        summary = ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()) if k.startswith("val/"))
        print(f"run dir: {run_dir}")
        if summary:
            print(f"final validation: {summary}")
    objective = cfg.get("objective")
    if objective and objective not in metrics:
        raise ConfigError(f"objective={objective} was not logged by this run (the checkpoints are kept in {run_dir}); "
                          f"logged: {', '.join(sorted(metrics)) or 'nothing'}")
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Train; returns ``metrics[objective]`` (a float, for Hydra sweepers such as Optuna) when ``objective=`` is
    set, else None."""
    from hydra.core.hydra_config import HydraConfig

    one_line_warnings()  # again here: under a launcher (submitit) or a sweeper the job does not run __main__
    quiet_lightning_notices()
    metrics = run_guarded(train, cfg, cleanup_dir=Path(HydraConfig.get().runtime.output_dir))
    objective = cfg.get("objective")
    return metrics[objective] if objective else None


if __name__ == "__main__":
    one_line_warnings()
    quiet_lightning_notices()
    check_choices(sys.argv[1:], GROUPS)
    main()
