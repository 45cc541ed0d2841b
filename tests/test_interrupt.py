"""Runs that survive interruption: Ctrl-C / SIGTERM write a checkpoint of the current step, SLURM's requeue signal
goes through Lightning's auto-requeue and the requeued job resumes by itself, and the optional time-based
checkpoints. Each interrupted run, resumed, ends with the same weights as a run that never stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from safetensors.torch import load_file

from callbacks import time_checkpoint
from datamodules import MotionDataModule
from magnet.errors import ConfigError
from magnet.training.vqvae_module import VQVAEModule

REPO = Path(__file__).resolve().parent.parent
STEPS = 40  # two 20-step epochs (160 windows of batch 8): the resumed runs also cross an epoch boundary


def _args(root, out, *extra):
    return [sys.executable, "train.py", "experiment=demo_vqvae", f"paths.data_dir={root}", f"paths.output_root={out}",
            "dataset.build.num_clips=12", "+dataset.prepare.frames=[90,150]", f"stage.total_steps={STEPS}",
            "stage.batch_size=8", "stage.val_every_n_steps=1000", "stage.val_batches=0", "data.epoch_length=160",
            "callbacks.validation_metrics=null", "callbacks.model_checkpoint.every_n_train_steps=5", *extra]


def _weights(out) -> dict[str, torch.Tensor]:
    (path,) = list(Path(out).rglob("vqvae.safetensors"))
    return load_file(str(path))


def _wait_for(pattern_root: Path, pattern: str, proc: subprocess.Popen, timeout: float = 300.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(pattern_root.rglob(pattern))
        if found:
            return found[0]
        if proc.poll() is not None:
            raise AssertionError(f"training ended (rc {proc.returncode}) before {pattern} appeared: "
                                 f"{proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    raise AssertionError(f"{pattern} did not appear within {timeout} s")


@pytest.fixture(scope="module")
def straight(synthetic_root, tmp_path_factory):
    """The weights of the run that is never interrupted."""
    out = tmp_path_factory.mktemp("straight")
    res = subprocess.run(_args(synthetic_root, out), cwd=REPO, capture_output=True, text=True, timeout=600,
                         check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    return _weights(out)


def _assert_same(weights, straight):
    assert set(weights) == set(straight)
    for key, value in straight.items():
        assert torch.equal(weights[key], value), key


def test_ctrl_c_writes_a_checkpoint_and_the_resumed_run_matches(synthetic_root, tmp_path, straight):
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(_args(synthetic_root, out), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _wait_for(out, "step0000005.ckpt", proc)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGINT, stderr[-3000:]
    (last,) = list(out.rglob("checkpoints/last.ckpt"))
    saved = torch.load(last, map_location="cpu", weights_only=True)
    step = saved["global_step"]
    assert 5 <= step < STEPS
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 0, "batches": step % 20}]
    assert f"interrupted at step {step}; resume with: python train.py <same options> ckpt_path={last}" in stderr
    assert not list(out.rglob("vqvae.safetensors"))  # an interrupted run exports no final weights

    resumed = tmp_path / "resumed"
    res = subprocess.run(_args(synthetic_root, resumed, f"ckpt_path={last}"), cwd=REPO, capture_output=True,
                         text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    _assert_same(_weights(resumed), straight)


def test_slurm_requeue_and_preemption_resume_by_themselves(synthetic_root, tmp_path, straight):
    """A SLURM batch job (environment as SLURM sets it; scontrol recorded instead of run). SIGUSR1 before the time
    limit: Lightning's auto-requeue writes hpc_ckpt_1.ckpt at the end of the current step and requeues the job,
    which then stops. The requeued job (same command, same job id) runs in the same directory and resumes from it
    without being told; a preemption (SIGTERM) then stops it after the current step with hpc_ckpt_2.ckpt; the job
    requeued again resumes from that and ends with the uninterrupted run's weights."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "scontrol.log"
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    (bin_dir / "scontrol").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_NTASKS": "1", "SLURM_JOB_ID": "4242",
           "SLURM_JOB_NAME": "magnet", "SLURM_NODELIST": "localhost", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
           "SLURM_NODEID": "0"}
    out = tmp_path / "outputs"
    run = out / "vqvae" / "synthetic" / "slurm-4242"  # the run directory is named by the job id

    def start():
        return subprocess.Popen(_args(synthetic_root, out), cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    proc = start()
    _wait_for(out, "step0000005.ckpt", proc)
    proc.send_signal(signal.SIGUSR1)  # --signal=USR1@<signal_delay_s> (conf/hydra/launcher/slurm.yaml)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGUSR1, stderr[-3000:]
    assert log.read_text().split() == ["requeue", "4242"]
    first = torch.load(run / "hpc_ckpt_1.ckpt", map_location="cpu", weights_only=True)["global_step"]
    assert 5 <= first < 10
    assert "a requeued SLURM job resumes from" in stderr

    proc = start()  # the requeued job: the very same command
    _wait_for(run, "step0000010.ckpt", proc)
    proc.send_signal(signal.SIGTERM)  # preemption
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert f"Restoring states from the checkpoint path at {run / 'hpc_ckpt_1.ckpt'}" in stdout + stderr
    assert sorted(p.name for p in run.glob("hpc_ckpt_*.ckpt")) == ["hpc_ckpt_1.ckpt", "hpc_ckpt_2.ckpt"]
    assert torch.load(run / "hpc_ckpt_2.ckpt", map_location="cpu", weights_only=True)["global_step"] >= 10

    res = subprocess.run(_args(synthetic_root, out), cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
                         check=False)  # requeued once more
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"Restoring states from the checkpoint path at {run / 'hpc_ckpt_2.ckpt'}" in res.stdout + res.stderr
    _assert_same(_weights(run), straight)


def test_time_checkpoints(synthetic_root, tmp_path):
    assert time_checkpoint(tmp_path, None) is None  # the default: off
    with pytest.raises(ConfigError, match="minutes must be a positive number"):
        time_checkpoint(tmp_path, -1)
    every = time_checkpoint(tmp_path / "ckpt", minutes=1e-6)  # due after every step
    steps = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="step{step:07d}",
                                         auto_insert_metric_name=False, every_n_train_steps=5, save_top_k=-1,
                                         save_last=True)
    dm = MotionDataModule(datasets=[{"name": "synthetic", "dir": str(synthetic_root / "synthetic")}],
                          sequence_len=64, person_num=1, batch_size=8, num_workers=0, seed=0, epoch_length=160)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=7, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[steps, every], default_root_dir=tmp_path,
                         limit_val_batches=0)
    trainer.fit(VQVAEModule(model="tiny", warmup_steps=2, total_steps=100), datamodule=dm)
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert names == ["last.ckpt", "step0000005.ckpt", "time-step0000007.ckpt"]  # the latest time checkpoint kept
    assert torch.load(tmp_path / "ckpt" / "time-step0000007.ckpt", map_location="cpu",
                      weights_only=True)["global_step"] == 7
