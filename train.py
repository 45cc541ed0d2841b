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

from magnet.cli import check_choices, one_line_warnings, run_guarded

GROUPS = ("stage", "dataset", "model", "trainer", "logger", "callbacks", "experiment", "paths")


def train(cfg: DictConfig) -> dict[str, float]:
    import lightning.pytorch as pl
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

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
        check_checkpoint(ckpt_path, cfg.stage.name, module)
    # weights_only=False: check_checkpoint has already unpickled the file in full (the user's own run), and
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


def check_checkpoint(path: str, stage: str, module=None) -> None:
    """Fail clearly on a missing, unreadable or other-stage Lightning checkpoint before training starts.

    With ``module``, the checkpoint's weights must also fit it: the same keys with the same shapes (a checkpoint of
    another model preset or person count is refused here instead of by a multi-line ``load_state_dict`` error).
    """
    import torch

    from magnet.errors import CheckpointError

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} not found; pass ckpt_path=<run dir>/checkpoints/last.ckpt")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {p} cannot be read ({type(exc).__name__}); the file is corrupt or "
                              "not a Lightning checkpoint") from exc
    found = ckpt.get("magnet", {}).get("stage") if isinstance(ckpt, dict) else None
    if found != stage:
        raise CheckpointError(f"checkpoint {p} is from stage {found!r}, not {stage!r}; resume with the same "
                              f"stage= it was trained with")
    if module is None:
        return
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {p} has no state_dict; the file is not a complete Lightning checkpoint")
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    hint = "resume with the model= / dataset= options the checkpoint was trained with"
    if bad:
        k = bad[0]
        raise CheckpointError(f"checkpoint {p}: {k!r} has shape {tuple(state[k].shape)} but this model expects "
                              f"{tuple(own[k].shape)} ({len(bad)} mismatched); {hint}")
    if missing or unexpected:
        k, what = (missing[0], "missing") if missing else (unexpected[0], "unexpected")
        raise CheckpointError(f"checkpoint {p}: {what} key {k!r} ({len(missing)} missing, {len(unexpected)} "
                              f"unexpected); {hint}")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    metrics = run_guarded(train, cfg, cleanup_dir=Path(HydraConfig.get().runtime.output_dir))
    objective = cfg.get("objective")  # for sweepers: the metric to return
    return metrics.get(objective) if objective else None


if __name__ == "__main__":
    one_line_warnings()
    check_choices(sys.argv[1:], GROUPS)
    main()
