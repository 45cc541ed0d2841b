"""Train a stage: ``python train.py stage=vqvae dataset=dd100`` (see README, "Training").

Composes conf/train.yaml, instantiates the datamodule, the stage's LightningModule, callbacks, loggers and the
Trainer, fits, and writes the plain weights next to the checkpoints. Multirun sweeps (``-m``) and the SLURM
launcher (``hydra/launcher=slurm``) work as usual with Hydra.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from magnet.cli import check_choices, one_line_warnings, quiet_lightning_notices, run_guarded

GROUPS = ("stage", "dataset", "model", "trainer", "logger", "callbacks", "experiment", "paths")


def train(cfg: DictConfig) -> dict[str, float]:
    import lightning.pytorch as pl
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    from magnet.training.base import check_resume_checkpoint

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    pl.seed_everything(cfg.seed, workers=True)
    if cfg.dataset.get("prepare") is not None:  # e.g. the synthetic dataset is built on first use
        instantiate(cfg.dataset.prepare)
    datamodule = instantiate(cfg.data)
    # Plain dicts / lists (not DictConfig) so the saved hyper-parameters load with torch.load(weights_only=True),
    # which Lightning uses when resuming with ckpt_path=.
    module = instantiate(cfg.stage.module, _convert_="all")
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path:
        check_resume_checkpoint(ckpt_path, cfg.stage.name, module)
    # weights_only=False: the check has already unpickled the file in full (the user's own run), and
    # checkpoints written before hyper-parameters were plain containers hold omegaconf objects.
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=False if ckpt_path else None)
    if trainer.is_global_zero and hasattr(module, "export_weights"):
        path = module.export_weights(run_dir / f"{cfg.stage.name}.safetensors")
        print(f"weights: {path}")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if trainer.is_global_zero:
        summary = ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()) if k.startswith("val/"))
        print(f"run dir: {run_dir}")
        if summary:
            print(f"final validation: {summary}")
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    metrics = run_guarded(train, cfg, cleanup_dir=Path(HydraConfig.get().runtime.output_dir))
    objective = cfg.get("objective")  # for sweepers: the metric to return
    return metrics.get(objective) if objective else None


if __name__ == "__main__":
    one_line_warnings()
    quiet_lightning_notices()
    check_choices(sys.argv[1:], GROUPS)
    main()
