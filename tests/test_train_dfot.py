"""Stage 2 training: the DFoT LightningModule, stage-1 loading, the latent cache and the train.py entry point."""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from datamodules import MotionDataModule, WindowSampler
from magnet.errors import CheckpointError, ConfigError
from magnet.models.dfot import load_dfot
from magnet.models.vqvae import load_vqvae, save_vqvae, unfold_persons, vqvae_inputs
from magnet.representation import MotionStats
from magnet.training.dfot_module import DFoTModule, load_stage1
from magnet.training.latent_cache import CachedLatentDataset, LatentCache
from magnet.training.vqvae_module import VQVAEModule

REPO = Path(__file__).resolve().parent.parent


def _datamodule(root, person_num=2, batch_size=8, epoch_length=160):
    return MotionDataModule(
        datasets=[{"name": "synthetic", "dir": str(root / "synthetic")}],
        sequence_len=64, person_num=person_num, batch_size=batch_size, num_workers=0, seed=0,
        epoch_length=epoch_length,
    )


@pytest.fixture(scope="module")
def stage1(synthetic_root, tmp_path_factory):
    """A tiny stage-1 VQ-VAE (codebook initialised by one training step) exported with the dataset's stats."""
    torch.manual_seed(0)
    dm = _datamodule(synthetic_root, person_num=1, batch_size=32)
    dm.setup("fit")
    module = VQVAEModule(model="tiny", stats=dm.stats)
    module.model.train()
    with torch.no_grad():
        module.training_step(next(iter(dm.train_dataloader())), 0)
    out = tmp_path_factory.mktemp("stage1")
    path = module.export_weights(out / "vqvae.safetensors")
    return {"path": path, "module": module, "stats": dm.stats, "dir": out}


def _module(stage1, **kw):
    args = {"vqvae_ckpt": str(stage1["path"]), "model": "tiny", "num_persons": 2, "lr": 1e-3, "warmup_steps": 5,
            "total_steps": 1000, "consistency_warmup_steps": 10}
    args.update(kw)
    return DFoTModule(**args)


def _trainer(tmp_path, max_steps, callbacks=(), **kw):
    kw.setdefault("limit_val_batches", 2)
    return pl.Trainer(
        accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=list(callbacks), default_root_dir=tmp_path,
        num_sanity_val_steps=0, **kw,
    )


def _batch(root, seed=0, batch_size=16):
    dm = _datamodule(root, batch_size=batch_size)
    dm.setup("fit")
    torch.manual_seed(seed)
    return next(iter(dm.train_dataloader()))


class _LossRecorder(pl.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


# ------------------------------------------------------------------------------------------ stage-1 loading


def test_load_stage1_safetensors_ckpt_and_run_dir(stage1, tmp_path):
    model, stats = load_stage1(stage1["path"])
    assert not model.training and model.config.d_latent == 64
    np.testing.assert_array_equal(stats.mean, stage1["stats"].mean)
    np.testing.assert_array_equal(stats.std[:352], stage1["stats"].std[:352])
    torch.testing.assert_close(model.quantizer.codebook, stage1["module"].model.quantizer.codebook)
    assert load_stage1(stage1["dir"])[0].config == model.config  # a run directory holding vqvae.safetensors

    # a stage-1 Lightning checkpoint: config in checkpoint["magnet"], weights under "model.", stats buffers
    src = stage1["module"]
    ckpt = {"magnet": {"stage": "vqvae", "model_config": src.model.config.to_dict()},
            "state_dict": {k: v.clone() for k, v in src.state_dict().items()}}
    torch.save(ckpt, tmp_path / "last.ckpt")
    model2, stats2 = load_stage1(tmp_path / "last.ckpt")
    torch.testing.assert_close(model2.state_dict()["encoder.conv_in.weight"], src.model.encoder.conv_in.weight)
    np.testing.assert_array_equal(stats2.mean[:352], stage1["stats"].mean[:352])

    # weights without stats (e.g. imported reference weights) -> None; the datamodule's are used then
    save_vqvae(model, tmp_path / "plain.safetensors")
    assert load_stage1(tmp_path / "plain.safetensors")[1] is None


@pytest.mark.parametrize("kind, needle", [
    ("missing", "not found"),
    ("dfot_ckpt", "from stage 'dfot', not 'vqvae'"),
    ("dfot_weights", "holds DFoT weights"),
    ("corrupt", "corrupt"),
    ("corrupt_zip", "cannot be read"),
    ("empty_dir", "neither vqvae.safetensors"),
])
def test_load_stage1_errors_are_one_line(kind, needle, tmp_path):
    if kind == "missing":
        path = tmp_path / "nope.safetensors"
    elif kind == "dfot_ckpt":
        path = tmp_path / "last.ckpt"
        torch.save({"magnet": {"stage": "dfot"}, "state_dict": {}}, path)
    elif kind == "dfot_weights":
        from magnet.models.dfot import DFoT, save_dfot

        path = save_dfot(DFoT("tiny", 2, 64), tmp_path / "dfot.safetensors")
    elif kind == "corrupt":
        path = tmp_path / "vqvae.safetensors"
        path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    elif kind == "corrupt_zip":
        path = tmp_path / "x.ckpt"
        path.write_bytes(b"PK\x03\x04garbage")
    else:
        path = tmp_path
    with pytest.raises(CheckpointError) as err:
        load_stage1(path)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg, msg
    with pytest.raises(CheckpointError):
        DFoTModule(vqvae=str(path), model="tiny")


def test_missing_vqvae_is_a_config_error():
    with pytest.raises(ConfigError, match="stage.vqvae_ckpt"):
        DFoTModule(vqvae=None, model="tiny")


# ------------------------------------------------------------------------------------------ training step


def test_model_sizes_follow_the_vqvae(stage1):
    m = _module(stage1)
    assert m.token_layout.latent_dim == 64 and m.model.width == 64 + 36 * 2
    assert m.has_stats  # the VQ-VAE file carries the stats (with partner statistics)


def test_levels_are_drawn_per_token(stage1, synthetic_root):
    m = _module(stage1)
    batch = _batch(synthetic_root)
    x0, valid = m.clean_tokens(batch)
    assert x0.shape == (16, 16, 2, 64 + 72) and valid.shape == (16, 16, 2)
    assert (~valid).any() and valid.any()  # padding and void persons in this batch
    torch.manual_seed(1)
    levels, loss_mask = m.training_levels(valid)
    assert levels.dtype == torch.long and levels.shape == valid.shape
    assert bool((levels[~valid] == 999).all())
    assert torch.equal(loss_mask, valid)
    lv = levels[valid]
    assert int(lv.min()) >= 0 and int(lv.max()) <= 999 and len(torch.unique(lv)) > 100
    full = valid.all(dim=(1, 2))  # windows where every token is valid
    b = int(torch.nonzero(full)[0])
    assert len(torch.unique(levels[b, :, 0])) > 8                      # different across time
    assert bool((levels[b, :, 0] != levels[b, :, 1]).any())            # different across persons
    # random_uniform: one level per window
    m2 = _module(stage1, noise_level="random_uniform")
    lv2, _ = m2.training_levels(valid)
    assert len(torch.unique(lv2[b])) == 1 and bool((lv2[~valid] == 999).all())
    # fixed context: the first 3 latent frames clean (level 0, out of the loss) or dropped (999, in the loss)
    m3 = _module(stage1, context="fixed", context_len=3, context_dropout=0.5)
    torch.manual_seed(2)
    lv3, mask3 = m3.training_levels(valid)
    head, head_valid = lv3[:, :3], valid[:, :3]
    assert bool(((head[head_valid] == 0) | (head[head_valid] == 999)).all())
    clean = (lv3[:, :3] == 0) & head_valid
    assert clean.any() and not bool(mask3[:, :3][clean].any())
    dropped_rows = ((lv3[:, :3] == 999) | ~head_valid).all(dim=(1, 2))
    assert dropped_rows.any()  # p = 0.5 over 16 windows
    assert torch.equal(mask3[:, 3:], valid[:, 3:])


def _void_row(batch):
    """(window, person) of a void person that has a valid partner."""
    for b in range(batch["x"].shape[0]):
        if int(batch["num_persons"][b]) == 1 and bool(batch["valid"][b, :, 0].any()):
            return b, 1
    raise AssertionError("no solo window in the batch")


def test_invalid_tokens_do_not_affect_the_loss(stage1, synthetic_root):
    m = _module(stage1).eval()  # no dropout: the two forwards must be identical
    batch = _batch(synthetic_root, seed=3)
    b, p = _void_row(batch)
    changed = {k: v.clone() for k, v in batch.items()}
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(changed["x"][b, :, p, :-1].shape, generator=gen) * 3.0
    changed["x"][b, :, p, :-1] = noise  # every feature of the void person except its (zero) tpose mask
    assert not bool(changed["valid"][b, :, p].any())

    def loss(bt):
        x0, valid = m.clean_tokens(bt)
        torch.manual_seed(5)
        levels, mask = m.training_levels(valid)
        terms, _, _ = m.loss_terms(x0, levels, mask, step=100)
        return terms

    a, c = loss(batch), loss(changed)
    for key in a:
        torch.testing.assert_close(a[key], c[key], rtol=0, atol=0, msg=key)
    # sanity: changing a VALID token does change the loss
    changed["x"][b, 20:40, 0, m.packed_layout.delta] += 1.0
    assert float((loss(changed)["loss"] - a["loss"]).detach().abs()) > 1e-3


def test_training_loss_falls_and_vqvae_stays_frozen(stage1, synthetic_root, tmp_path):
    pl.seed_everything(0)
    rec = _LossRecorder()
    m = _module(stage1)
    before = {k: v.clone() for k, v in m.vqvae.state_dict().items()}
    trainer = _trainer(tmp_path, 40, [rec], val_check_interval=40, check_val_every_n_epoch=None,
                       enable_checkpointing=False, gradient_clip_val=0.5)
    trainer.fit(m, datamodule=_datamodule(synthetic_root, batch_size=16, epoch_length=640))
    first, last = np.mean(rec.losses[:5]), np.mean(rec.losses[-5:])
    assert last < 0.7 * first, (first, last)
    # frozen VQ-VAE: eval mode, no gradient, not in the optimiser, weights unchanged
    m.train()
    assert m.model.training and not m.vqvae.training
    assert all(not q.requires_grad and q.grad is None for q in m.vqvae.parameters())
    opt_params = {id(q) for g in trainer.optimizers[0].param_groups for q in g["params"]}
    assert opt_params == {id(q) for q in m.model.parameters()}
    for k, v in m.vqvae.state_dict().items():
        assert torch.equal(v, before[k]), k
    metrics = trainer.callback_metrics
    for key in ("val/loss", "val/loss_k100", "val/loss_k500", "val/loss_k900", "val/mpjpe_mm",
                "val/mpjpe_vqvae_mm", "train/latent", "train/delta", "train/partners", "train/consistency_rot",
                "train/lr"):
        assert key in metrics and torch.isfinite(metrics[key]), key
    # denoising from a cleaner level is easier
    assert float(metrics["val/loss_k100"]) < float(metrics["val/loss_k900"])


def test_validation_step_returns_joints(stage1, synthetic_root):
    m = _module(stage1).eval()
    dm = _datamodule(synthetic_root)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        out = m.validation_step(batch, 0)
    b = batch["x"].shape[0]
    assert out["joints_pred"].shape == (b * 2, 64, 22, 3) and out["joints_gt"].shape == (b * 2, 64, 22, 3)
    assert out["num_persons"] == 2 and out["valid"].shape == (b * 2, 64)
    # rows are person-minor: row b*P + p holds person p of window b
    torch.testing.assert_close(out["valid"].reshape(b, 2, 64).transpose(1, 2), batch["valid"])
    v = out["valid"]
    err = (out["joints_pred"] - out["joints_gt"]).norm(dim=-1)[v]
    assert torch.isfinite(err).all() and float(err.mean()) > 0
    # the fixed generator makes validation deterministic
    with torch.no_grad():
        again = m.validation_step(batch, 0)
    torch.testing.assert_close(again["joints_pred"], out["joints_pred"])

    # generated samples of the first fully valid windows (context = 32 frames): only generated frames count
    full = int(batch["valid"].all(dim=2).all(dim=1).sum())
    res = m.sample_windows(batch, 3, sampling_steps=2)
    n = min(3, full)
    assert res["joints_pred"].shape == (n * 2, 64, 22, 3) and res["num_persons"] == 2
    assert res["valid"][:, :32].sum() == 0 and bool(res["valid"][:, 32:].all())
    # the context frames of the samples are the decoded ground-truth context: close to the GT joints
    ctx_err = (res["joints_pred"][:, :32] - res["joints_gt"][:, :32]).norm(dim=-1).mean()
    assert float(ctx_err) < 0.2
    assert all(q.requires_grad for q in m.model.parameters())   # sampling leaves the trainable DFoT trainable


def test_resume_continues_step(stage1, synthetic_root, tmp_path):
    pl.seed_everything(0)
    ckpt_dir = tmp_path / "ckpt"
    cb = pl.callbacks.ModelCheckpoint(dirpath=ckpt_dir, save_last=True, every_n_train_steps=6)
    _trainer(tmp_path, 6, [cb], limit_val_batches=0).fit(_module(stage1), datamodule=_datamodule(synthetic_root))
    last = ckpt_dir / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=False)
    assert saved["magnet"]["stage"] == "dfot" and "rng" in saved["magnet"]
    assert saved["magnet"]["num_persons"] == 2 and saved["magnet"]["latent_dim"] == 64
    assert any(k.startswith("vqvae.") for k in saved["state_dict"])  # self-contained
    seen = {}

    class _Probe(pl.Callback):
        def on_train_start(self, trainer, module):
            seen["step"] = trainer.global_step
            seen["sched"] = trainer.lr_scheduler_configs[0].scheduler.last_epoch
            seen["w"] = module.model.head.weight.detach().clone()

    _trainer(tmp_path, 8, [_Probe()], enable_checkpointing=False, limit_val_batches=0).fit(
        _module(stage1), datamodule=_datamodule(synthetic_root), ckpt_path=str(last))
    assert seen["step"] == 6 and seen["sched"] == 6
    torch.testing.assert_close(seen["w"], saved["state_dict"]["model.head.weight"])
    # resuming with another stage.vqvae_ckpt keeps the checkpoint's VQ-VAE copy and says so
    other = save_vqvae(load_vqvae(stage1["path"]), tmp_path / "other" / "vqvae.safetensors",
                       metadata={"stats_mean": ",".join(repr(float(v)) for v in stage1["stats"].mean),
                                 "stats_std": ",".join(repr(float(v)) for v in stage1["stats"].std)})
    with pytest.warns(UserWarning, match="checkpoint's own copy of the VQ-VAE"):
        _trainer(tmp_path, 7, enable_checkpointing=False, limit_val_batches=0).fit(
            _module({**stage1, "path": other}), datamodule=_datamodule(synthetic_root), ckpt_path=str(last))
    # a DFoT checkpoint is refused as a VQ-VAE
    with pytest.raises(CheckpointError, match="stage 'dfot'"):
        load_stage1(last)


def test_checkpoint_loads_from_any_directory_without_the_vqvae_file(stage1, synthetic_root, tmp_path, monkeypatch):
    """A DFoT checkpoint is self-contained: trained with a relative stage.vqvae_ckpt, it loads from another working
    directory after the stage-1 file is gone, with the same weights, statistics and losses."""
    work = tmp_path / "work"
    (work / "stage1").mkdir(parents=True)
    shutil.copy(stage1["path"], work / "stage1" / "vqvae.safetensors")
    monkeypatch.chdir(work)
    pl.seed_everything(0)
    cb = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trained = _module({**stage1, "path": "stage1/vqvae.safetensors"})
    _trainer(tmp_path, 2, [cb], limit_val_batches=0).fit(trained, datamodule=_datamodule(synthetic_root))
    shutil.rmtree(work / "stage1")
    monkeypatch.chdir(tmp_path)
    restored = DFoTModule.load_from_checkpoint(tmp_path / "ckpt" / "last.ckpt", map_location="cpu")
    own = trained.state_dict()
    assert set(restored.state_dict()) == set(own)
    for key, value in restored.state_dict().items():
        assert torch.equal(value, own[key]), key
    assert restored.vqvae.config == trained.vqvae.config and not restored.vqvae.training
    assert not any(p.requires_grad for p in restored.vqvae.parameters())
    batch = _batch(synthetic_root)
    trained.eval()
    restored.eval()
    x0, valid = trained.clean_tokens(batch)
    x0_restored, valid_restored = restored.clean_tokens(batch)
    assert torch.equal(x0_restored, x0) and torch.equal(valid_restored, valid)
    levels = torch.full_like(valid, 500, dtype=torch.long)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, _, _ = trained.loss_terms(x0, levels, valid, 10, noise)
        got, _, _ = restored.loss_terms(x0, levels, valid, 10, noise)
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)


def test_frozen_vqvae_does_not_warn_about_eval_mode(stage1, synthetic_root, tmp_path):
    """Lightning's "Found N module(s) in eval mode" is silenced for exactly the frozen VQ-VAE's modules."""
    def eval_mode_warnings(module):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _trainer(tmp_path, 1, limit_val_batches=0, enable_checkpointing=False).fit(
                module, datamodule=_datamodule(synthetic_root))
        return [str(w.message) for w in caught if "in eval mode" in str(w.message)]

    assert eval_mode_warnings(_module(stage1)) == []
    m = _module(stage1)

    class _KeepHeadInEval(pl.Callback):  # a module left in eval mode by mistake still gets the warning
        def on_fit_start(self, trainer, module):
            module.model.head.eval()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(tmp_path, 1, [_KeepHeadInEval()], limit_val_batches=0, enable_checkpointing=False).fit(
            m, datamodule=_datamodule(synthetic_root))
    vq_modules = sum(1 for _ in m.vqvae.modules())
    messages = [str(w.message) for w in caught if "in eval mode" in str(w.message)]
    assert len(messages) == 1 and messages[0].startswith(f"Found {vq_modules + 1} module(s) in eval mode")


def test_stats_and_person_mismatch_are_config_errors(stage1, synthetic_root, tmp_path):
    st = stage1["stats"]
    mean = st.mean.copy()
    mean[5] += 0.5
    bad = save_vqvae(load_vqvae(stage1["path"]), tmp_path / "vqvae.safetensors", metadata={
        "stats_mean": ",".join(repr(float(v)) for v in mean), "stats_std": ",".join(repr(float(v)) for v in st.std)})
    m = _module({"path": bad})
    with pytest.raises(ConfigError, match="differs from the VQ-VAE's") as err:
        _trainer(tmp_path, 1, limit_val_batches=0).fit(m, datamodule=_datamodule(synthetic_root))
    assert "entry 5" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="person_num=3"):
        _trainer(tmp_path, 1, limit_val_batches=0).fit(_module(stage1),
                                                       datamodule=_datamodule(synthetic_root, person_num=3))
    with pytest.raises(ConfigError, match="differs"):
        _module(stage1, stats=MotionStats(mean, st.std))


# ------------------------------------------------------------------------------------------ latent cache


def test_latent_cache_equals_on_the_fly_encoding(stage1, synthetic_root):
    m = _module(stage1)
    dm = _datamodule(synthetic_root, batch_size=64)
    dm.setup("fit")
    base = dm.train_set
    frames = sum(c.num_persons * (c.num_frames + 65) for c in base.datasets[0].clips)
    cache = LatentCache.build(m.vqvae, base, batch_size=256)
    assert cache.num_windows == frames
    assert cache.nbytes == frames * 16 * 2  # int16 code per latent frame
    wrapped = CachedLatentDataset(base, cache)
    sampler = WindowSampler(wrapped, shuffle=True, epoch_length=128, slicing="random_uniform_len",
                            shuffle_persons=True, seed=0)
    specs = list(sampler)
    assert any(s[2] < 64 for s in specs) and any(len(s[3]) == 1 for s in specs)  # edges and void persons
    batch = wrapped.__getitems__(specs)
    idx = batch["latent_idx"]
    assert idx.shape == (128, 16, 2)
    value, enc, _, mask = vqvae_inputs(batch["x"], m.packed_layout, 4)
    z_fly, lmask = m.vqvae.encode(value, enc, mask)
    _, code_fly = m.vqvae.quantizer.quantize(m.vqvae.encode_continuous(value, enc))
    code_fly = unfold_persons(torch.where(lmask, code_fly, torch.full_like(code_fly, -1)), 2)
    assert torch.equal(idx, code_fly)  # every code of every window, edges and void persons included
    torch.testing.assert_close(cache.dequantize(idx), unfold_persons(z_fly, 2), rtol=0, atol=0)
    # the module consumes cached batches and gets the same tokens
    x0_cache, valid_cache = m.clean_tokens(batch)
    x0_fly, valid_fly = m.clean_tokens({k: v for k, v in batch.items() if k != "latent_idx"})
    assert torch.equal(x0_cache, x0_fly) and torch.equal(valid_cache, valid_fly)
    assert torch.equal(idx >= 0, valid_fly)


def test_fit_with_latent_cache(stage1, synthetic_root, tmp_path):
    pl.seed_everything(0)
    m = _module(stage1, latent_cache=True)
    seen = []

    class _Probe(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.append("latent_idx" in batch)

    dm = _datamodule(synthetic_root)
    _trainer(tmp_path, 3, [_Probe()], limit_val_batches=0, enable_checkpointing=False).fit(m, datamodule=dm)
    assert seen == [True, True, True]
    assert isinstance(dm.train_set, CachedLatentDataset) and m.latent_cache is not None


# ------------------------------------------------------------------------------------------ export, train.py


def test_export_weights(stage1, synthetic_root, tmp_path):
    m = _module(stage1).eval()
    path = m.export_weights(tmp_path / "run" / "dfot.safetensors")
    dfot = load_dfot(path).eval()
    vq, stats = load_stage1(tmp_path / "run" / "vqvae.safetensors")
    np.testing.assert_array_equal(stats.mean[:352], stage1["stats"].mean[:352])
    x = torch.randn(2, 16, 2, m.model.width)
    levels = torch.randint(0, 1000, (2, 16, 2))
    torch.testing.assert_close(dfot(x, levels), m.model(x, levels))
    torch.testing.assert_close(vq.quantizer.codebook, m.vqvae.quantizer.codebook)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["diffusion.objective"] == "pred_x0" and meta["stage"] == "dfot" and "stats_mean" in meta


def _run(args):
    return subprocess.run([sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True, timeout=600,
                          check=False)


def _common(root, out):
    return ["experiment=demo_dfot", f"paths.data_dir={root}", f"paths.output_root={out}",
            "dataset.build.num_clips=12", "+dataset.prepare.frames=[90,150]"]


def test_train_py_end_to_end(stage1, synthetic_root, tmp_path):
    out = tmp_path / "outputs"
    res = _run(["stage=dfot", *_common(synthetic_root, out), f"stage.vqvae_ckpt={stage1['path']}",
                "stage.total_steps=10", "stage.batch_size=8", "stage.val_every_n_steps=5", "stage.val_batches=1",
                "callbacks.model_checkpoint.every_n_train_steps=5", "data.epoch_length=160",
                "trainer.log_every_n_steps=2", "stage.latent_cache=true"])
    assert res.returncode == 0, res.stderr[-3000:]
    run = next((out / "dfot" / "synthetic").iterdir())
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "dfot.safetensors").is_file() and (run / "vqvae.safetensors").is_file()
    metrics = (run / "csv" / "metrics.csv").read_text()
    assert "val/loss_k500" in metrics and "train/consistency_trans" in metrics and "val_metrics/mpjpe_mm" in metrics
    assert "val_samples/mpjpe_mm" in metrics and "val_samples/fd_seq_g" in metrics   # real samples, generated frames
    assert "final validation:" in res.stdout
    # a clean run: no Lightning eval-mode warning for the frozen VQ-VAE, no logger tip, no deprecation warning
    for noise in ("module(s) in eval mode", "Tip:", "litlogger", "is deprecated", "Warning:"):
        assert noise not in res.stdout + res.stderr, noise

    # Resume from the step-5 checkpoint as a user does (ckpt_path=): it loads with weights_only=True (plain
    # hyper-parameters) and training continues at step 5 up to the new total.
    mid = run / "checkpoints" / "step0000005.ckpt"
    assert torch.load(mid, map_location="cpu", weights_only=True)["global_step"] == 5
    out2 = tmp_path / "resumed"
    res = _run(["stage=dfot", *_common(synthetic_root, out2), f"stage.vqvae_ckpt={stage1['path']}",
                "stage.total_steps=7", "stage.batch_size=8", "stage.val_every_n_steps=5", "stage.val_batches=1",
                "data.epoch_length=160", f"ckpt_path={mid}"])
    assert res.returncode == 0, res.stderr[-3000:]
    (run2,) = list((out2 / "dfot" / "synthetic").iterdir())
    assert torch.load(run2 / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 7

    # Another DFoT size (model=paper) cannot resume it: one line naming the mismatch, no run directory left.
    out3 = tmp_path / "mismatch"
    res = _run(["stage=dfot", *_common(synthetic_root, out3), f"stage.vqvae_ckpt={stage1['path']}", "model=paper",
                f"ckpt_path={mid}"])
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "this model expects" in lines[0], res.stderr[-2000:]
    assert not any(p.is_file() for p in out3.rglob("*"))


def test_train_py_without_vqvae_ckpt_is_one_line(synthetic_root, tmp_path):
    out = tmp_path / "outputs"
    res = _run(["stage=dfot", *_common(synthetic_root, out)])
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "stage.vqvae_ckpt" in lines[0], res.stderr[-2000:]
    assert not any(out.rglob("*.ckpt"))
