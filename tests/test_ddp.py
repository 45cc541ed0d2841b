"""Multi-process training: ``trainer=ddp`` with two CPU processes (gloo) through train.py, the global / per-process
batch option, metrics synchronised across the processes and logging from rank 0 alone."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from datamodules import MotionDataModule
from magnet.errors import ConfigError
from magnet.training.vqvae_module import VQVAEModule

REPO = Path(__file__).resolve().parent.parent


def _datamodule(root, **kw):
    args = {"datasets": [{"name": "synthetic", "dir": str(root / "synthetic")}], "sequence_len": 64, "person_num": 1,
            "batch_size": 8, "num_workers": 0, "seed": 0}
    args.update(kw)
    return MotionDataModule(**args)


def test_batch_scope_global_splits_the_batch_over_the_processes(synthetic_root):
    two = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_progress_bar=False)
    assert two.world_size == 2  # a real two-process Trainer (nothing is launched before fit)
    dm = _datamodule(synthetic_root, batch_size=16, batch_scope="global")
    dm.trainer = two
    assert dm.per_process(16) == 8
    dm.setup("fit")
    assert dm.train_dataloader().batch_size == 8 and dm.val_dataloader().batch_size == 8
    with pytest.raises(ConfigError, match="does not divide among the 2 training processes") as err:
        dm.per_process(15)
    assert "\n" not in str(err.value)
    per_device = _datamodule(synthetic_root, batch_size=16, batch_scope="device")
    per_device.trainer = two
    assert per_device.per_process(16) == 16
    alone = _datamodule(synthetic_root, batch_size=15, batch_scope="global")  # no Trainer / one process: all of it
    assert alone.per_process(15) == 15
    with pytest.raises(ConfigError, match="batch_scope"):
        _datamodule(synthetic_root, batch_scope="per_gpu")


def _metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_two_process_ddp_run(synthetic_root, tmp_path):
    """Two gloo processes train 6 steps: the global batch of 8 is 4 windows per process (an epoch of 32 windows is 4
    steps), both processes take part, rank 0 alone prints and logs, and the validation metric is the one of the
    whole validation split (both halves, synchronised), i.e. what one process validating the same weights gets."""
    out = tmp_path / "outputs"
    args = [sys.executable, "train.py", "experiment=demo_vqvae", f"paths.data_dir={synthetic_root}",
            f"paths.output_root={out}", "dataset.build.num_clips=12", "+dataset.prepare.frames=[90,150]",
            "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "stage.total_steps=6",
            "stage.batch_size=8", "stage.val_every_n_steps=6", "stage.val_batches=1.0", "data.epoch_length=32",
            "trainer.log_every_n_steps=1", "callbacks.validation_metrics=null",
            "callbacks.model_checkpoint.every_n_train_steps=6"]
    res = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "GLOBAL_RANK: 0" in res.stderr and "GLOBAL_RANK: 1" in res.stderr and "MEMBER: 2/2" in res.stderr
    assert res.stdout.count("final validation:") == 1 and res.stdout.count("weights:") == 1  # rank 0 only
    (run,) = list((out / "vqvae" / "synthetic").iterdir())
    rows = _metrics(run / "csv" / "metrics.csv")
    train_rows = [r for r in rows if r.get("train/loss")]
    steps = [int(r["step"]) for r in train_rows]
    assert steps == sorted(set(steps)) and len(steps) == 6  # one writer: every step logged once
    assert {int(r["step"]): int(r["epoch"]) for r in train_rows}[5] == 1  # 32 windows / 8 per step = 4 steps
    val = [r for r in rows if r.get("val/mpjpe_mm")]
    assert len(val) == 1
    ddp_mpjpe = float(val[0]["val/mpjpe_mm"])

    # the same weights validated by one process on the whole validation split (10 windows: 5 per rank under DDP,
    # no padding)
    module = VQVAEModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt", map_location="cpu")
    dm = _datamodule(synthetic_root, batch_size=8)
    dm.setup("validate")
    assert len(dm.val_set) == 10
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False)
    (single,) = trainer.validate(module, datamodule=dm, verbose=False)
    assert torch.isfinite(torch.tensor(ddp_mpjpe))
    assert ddp_mpjpe == pytest.approx(single["val/mpjpe_mm"], rel=1e-5)


def test_local_ddp_inside_a_sweep_is_refused(synthetic_root, tmp_path):
    """Lightning would start the DDP processes by running the sweep's command line again: one line, exit 2."""
    out = tmp_path / "outputs"
    res = subprocess.run([sys.executable, "train.py", "-m", "experiment=demo_vqvae", f"paths.data_dir={synthetic_root}",
                          f"paths.output_root={out}", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                          "stage.lr=1e-3,2e-3"], cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
    assert "cannot run inside a sweep" in lines[0] and "hydra/launcher=slurm" in lines[0]
    assert not any(p.is_file() and p.name != "multirun.yaml" for p in out.rglob("*"))
