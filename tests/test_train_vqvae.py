"""Stage 1 training: the LightningModule, resume, weights export and the train.py entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from datamodules import MotionDataModule
from magnet.models.vqvae import load_vqvae
from magnet.training.schedule import warmup_cosine_factor
from magnet.training.vqvae_module import VQVAEModule

REPO = Path(__file__).resolve().parent.parent


def _datamodule(root, batch_size=16):
    return MotionDataModule(
        datasets=[{"name": "synthetic", "dir": str(root / "synthetic")}],
        sequence_len=64, person_num=1, batch_size=batch_size, num_workers=0, seed=0, epoch_length=320,
    )


def _module(**kw):
    args = {"model": "tiny", "lr": 1e-3, "warmup_steps": 5, "total_steps": 1000, "min_lr_ratio": 0.05}
    args.update(kw)
    return VQVAEModule(**args)


def _trainer(tmp_path, max_steps, callbacks=(), **kw):
    kw.setdefault("limit_val_batches", 2)
    return pl.Trainer(
        accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=list(callbacks), default_root_dir=tmp_path,
        num_sanity_val_steps=0, **kw,
    )


class _LossRecorder(pl.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def test_schedule_warmup_cosine_and_clamp():
    assert warmup_cosine_factor(0, 10, 100, 0.05) == 0.0
    assert warmup_cosine_factor(5, 10, 100, 0.05) == pytest.approx(0.5)
    assert warmup_cosine_factor(10, 10, 100, 0.05) == pytest.approx(1.0)
    assert warmup_cosine_factor(55, 10, 100, 0.05) == pytest.approx(0.05 + 0.95 * 0.5)
    assert warmup_cosine_factor(100, 10, 100, 0.05) == pytest.approx(0.05)
    # held at the floor after total_steps (the reference DFoT schedule climbs back up instead)
    assert warmup_cosine_factor(150, 10, 100, 0.05) == pytest.approx(0.05)
    assert warmup_cosine_factor(10_000, 10, 100, 0.05) == pytest.approx(0.05)


def test_loss_goes_down_and_validation_beats_mean_pose(synthetic_root, tmp_path):
    pl.seed_everything(0)
    rec = _LossRecorder()
    module = _module()
    trainer = _trainer(tmp_path, 60, [rec], val_check_interval=60, check_val_every_n_epoch=None,
                       enable_checkpointing=False)
    trainer.fit(module, datamodule=_datamodule(synthetic_root))
    first, last = sum(rec.losses[:5]) / 5, sum(rec.losses[-5:]) / 5
    assert last < 0.6 * first, (first, last)
    m = trainer.callback_metrics
    for key in ("val/mpjpe_mm", "val/mpjpe_mean_pose_mm", "val/root_transl_mm", "val/root_rot_deg"):
        assert key in m and torch.isfinite(m[key])
    assert float(m["val/mpjpe_mm"]) < float(m["val/mpjpe_mean_pose_mm"])
    assert bool(module.model.quantizer.initialised)


def test_resume_continues_step_and_codebook(synthetic_root, tmp_path):
    pl.seed_everything(0)
    ckpt_dir = tmp_path / "ckpt"
    cb = pl.callbacks.ModelCheckpoint(dirpath=ckpt_dir, save_last=True, every_n_train_steps=10)
    _trainer(tmp_path, 10, [cb]).fit(_module(), datamodule=_datamodule(synthetic_root))
    last = ckpt_dir / "last.ckpt"
    assert last.is_file()
    saved = torch.load(last, map_location="cpu", weights_only=False)
    assert saved["magnet"]["stage"] == "vqvae" and "rng" in saved["magnet"]
    saved_codebook = saved["state_dict"]["model.quantizer.codebook"]

    seen = {}

    class _Probe(pl.Callback):
        def on_train_start(self, trainer, module):
            seen["step"] = trainer.global_step
            seen["codebook"] = module.model.quantizer.codebook.detach().clone()
            seen["initialised"] = bool(module.model.quantizer.initialised)
            seen["lr_factor"] = trainer.lr_scheduler_configs[0].scheduler.last_epoch

    fresh = _module()
    _trainer(tmp_path, 15, [_Probe()], enable_checkpointing=False).fit(
        fresh, datamodule=_datamodule(synthetic_root), ckpt_path=str(last)
    )
    assert seen["step"] == 10
    assert seen["lr_factor"] == 10
    assert seen["initialised"]
    torch.testing.assert_close(seen["codebook"], saved_codebook)


def test_export_weights_round_trip(synthetic_root, tmp_path):
    dm = _datamodule(synthetic_root)
    dm.setup("fit")
    module = _module(stats=dm.stats)
    module.model.train()
    batch = next(iter(dm.train_dataloader()))
    with torch.no_grad():
        module.training_step(batch, 0)  # initialises the codebook from the batch
    path = module.export_weights(tmp_path / "vqvae.safetensors")
    loaded = load_vqvae(path).eval()
    module.model.eval()
    value, enc, dec, mask = module._inputs(batch)
    torch.testing.assert_close(loaded.reconstruct(value, enc, dec, mask), module.model.reconstruct(value, enc, dec, mask))


def _run(args, cwd=REPO):
    return subprocess.run([sys.executable, "train.py", *args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False)


def test_train_py_end_to_end(synthetic_root, tmp_path):
    out = tmp_path / "outputs"
    res = _run(["experiment=demo_vqvae", f"paths.data_dir={synthetic_root}", f"paths.output_root={out}",
                "dataset.build.num_clips=12", "+dataset.prepare.frames=[90,150]", "stage.total_steps=12",
                "stage.batch_size=16", "stage.val_every_n_steps=6", "callbacks.model_checkpoint.every_n_train_steps=6",
                "data.epoch_length=320", "trainer.log_every_n_steps=2"])
    assert res.returncode == 0, res.stderr[-3000:]
    run_dirs = list((out / "vqvae" / "synthetic").iterdir())
    assert len(run_dirs) == 1
    run = run_dirs[0]
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "vqvae.safetensors").is_file()
    assert (run / ".hydra" / "config.yaml").is_file()
    metrics = (run / "csv" / "metrics.csv").read_text()
    assert "val/mpjpe_mm" in metrics and "train/codebook_perplexity" in metrics
    assert "final validation:" in res.stdout

    # Resume as a user does: ckpt_path= on the command line. The checkpoint loads with weights_only=True (plain
    # hyper-parameters, no omegaconf objects) and training continues at step 6 with the saved codebook.
    mid = run / "checkpoints" / "step0000006.ckpt"
    saved = torch.load(mid, map_location="cpu", weights_only=True)
    assert saved["global_step"] == 6 and isinstance(saved["hyper_parameters"]["model"], dict)
    out2 = tmp_path / "resumed"
    res = _run(["experiment=demo_vqvae", f"paths.data_dir={synthetic_root}", f"paths.output_root={out2}",
                "dataset.build.num_clips=12", "+dataset.prepare.frames=[90,150]", "stage.total_steps=8",
                "stage.batch_size=16", "stage.val_every_n_steps=6", "data.epoch_length=320", "trainer.log_every_n_steps=1",
                f"ckpt_path={mid}"])
    assert res.returncode == 0, res.stderr[-3000:]
    (run2,) = list((out2 / "vqvae" / "synthetic").iterdir())
    resumed = torch.load(run2 / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 8
    assert resumed["lr_schedulers"][0]["last_epoch"] == 8
    rows = (run2 / "csv" / "metrics.csv").read_text().splitlines()
    col = rows[0].split(",").index("step")
    steps = [int(r.split(",")[col]) for r in rows[1:]]
    assert steps and min(steps) >= 6, steps  # logging continues after the restored step
    assert bool(resumed["state_dict"]["model.quantizer.initialised"])  # (the codebook restore: test above)

    # A checkpoint of another model size is refused with one line before training, leaving no run directory.
    out3 = tmp_path / "mismatch"
    res = _run(["experiment=demo_vqvae", f"paths.data_dir={synthetic_root}", f"paths.output_root={out3}",
                "dataset.build.num_clips=12", "+dataset.prepare.frames=[90,150]", "model=paper", f"ckpt_path={mid}"])
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "this model expects" in lines[0] and "model=" in lines[0], res.stderr[-2000:]
    assert not any(p.is_file() for p in out3.rglob("*"))


@pytest.mark.parametrize(
    "args, needle",
    [
        (["stage=foo"], "unknown stage 'foo'"),
        (["dataset=nope"], "unknown dataset 'nope'"),
        (["body_model=/nonexistent/SMPLX_NEUTRAL.npz"], "/nonexistent"),
        (["ckpt_path=CORRUPT"], "cannot be read"),
        (["stage.lr=abc"], "lr must be a number > 0, got 'abc'"),
        (["stage.total_steps=0"], "total_steps must be an integer >= 1, got 0"),
        (["stage.batch_size=-4"], "batch_size must be an integer >= 1, got -4"),
        (["trainer.devices=0"], "`Trainer(devices=0)` value is not a valid input"),
        pytest.param(["trainer=gpu"], "trainer.accelerator=gpu but torch", marks=pytest.mark.skipif(
            torch.cuda.is_available(), reason="this machine has a GPU")),
    ],
)
def test_train_py_bad_input_is_one_line(args, needle, synthetic_root, tmp_path):
    corrupt = tmp_path / "bad.ckpt"
    corrupt.write_bytes(b"not a checkpoint")
    args = [a.replace("CORRUPT", str(corrupt)) for a in args]
    out = tmp_path / "outputs"
    res = _run(["experiment=demo_vqvae", f"paths.data_dir={synthetic_root}", f"paths.output_root={out}",
                "dataset.build.num_clips=12", "+dataset.prepare.frames=[90,150]", *args])
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], res.stderr[-2000:]
    assert not any(p.is_file() for p in out.rglob("*"))  # no run directory, nothing half-written


def test_mid_epoch_resume_matches_an_uninterrupted_run(synthetic_root, tmp_path):
    """The DataLoader state is checkpointed: resuming at step 6 of a 20-batch epoch trains on the same batches as
    the run that never stopped, so the weights after step 10 are the same."""
    ckpt_dir = tmp_path / "ckpt"
    pl.seed_everything(0)
    cb = pl.callbacks.ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=6, save_top_k=-1, filename="s{step}",
                                      auto_insert_metric_name=False)
    straight = _module()
    _trainer(tmp_path, 10, [cb], limit_val_batches=0).fit(straight, datamodule=_datamodule(synthetic_root))
    mid = ckpt_dir / "s6.ckpt"
    state = torch.load(mid, map_location="cpu", weights_only=True)
    loader_states = state["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader_states == [{"epoch": 0, "batches": 6}]

    pl.seed_everything(123)  # whatever the process RNG is, the checkpoint restores it
    resumed = _module()
    _trainer(tmp_path, 10, [], limit_val_batches=0, enable_checkpointing=False).fit(
        resumed, datamodule=_datamodule(synthetic_root), ckpt_path=str(mid))
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=1e-6, atol=1e-7, msg=key)


def test_progress_bar_total_after_mid_epoch_resume(synthetic_root, tmp_path):
    """The bar never shows more batches done than its total ("100/79"), after a mid-epoch resume or in a last,
    shorter epoch of a step-based run (20-batch epochs)."""
    from callbacks import StepRichProgressBar

    class _BarRecorder(pl.Callback):
        def __init__(self, bar):
            self.bar, self.seen = bar, []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            task = self.bar.progress.tasks[self.bar.train_progress_bar_id]
            self.seen.append((trainer.current_epoch, int(task.completed), int(task.total)))

    def run(max_steps, ckpt_path=None, callbacks=()):
        bar = StepRichProgressBar()
        rec = _BarRecorder(bar)
        pl.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, max_epochs=-1, logger=False,
                   enable_model_summary=False, callbacks=[bar, rec, *callbacks], default_root_dir=tmp_path,
                   num_sanity_val_steps=0, limit_val_batches=0,
                   enable_checkpointing=bool(callbacks)).fit(_module(), datamodule=_datamodule(synthetic_root),
                                                             ckpt_path=ckpt_path)
        return rec.seen

    cb = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=6, save_top_k=-1,
                                      filename="s{step}", auto_insert_metric_name=False)
    seen = run(25, callbacks=[cb])
    assert seen[19] == (0, 20, 20) and seen[20:] == [(1, k, 5) for k in range(1, 6)]  # the last epoch has 5
    seen = run(10, ckpt_path=str(tmp_path / "ckpt" / "s6.ckpt"))  # resumed at batch 6 of 20, 4 steps left
    assert seen == [(0, k, 10) for k in range(7, 11)]
