"""Tests for callbacks.ValidationMetrics inside real Lightning Trainers (CPU) with a fake LightningModule."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from callbacks import ValidationMetrics
from callbacks.validation_metrics import _valid_runs
from magnet.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
T = 64
ROWS = 4  # rows (person windows) per batch
P_ = "val_metrics/"

warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*GPU available but not used.*")


def make_joints(n: int, t: int = T, seed: int = 0) -> torch.Tensor:
    """``[n, t, 22, 3]`` random smooth motion; left foot (joint 10) on the floor (y = 0) sliding along x at
    exactly 1 m/s, right foot (joint 11) at y = 0.5 (never in contact)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, 22, 3, generator=g) + torch.tensor([0.0, 0.3, 0.0])
    walk = torch.cumsum(torch.randn(n, t, 22, 3, generator=g) * 0.01, dim=1)
    j = base + walk
    time = torch.arange(t, dtype=torch.float32) / 30.0
    j[:, :, 10] = torch.stack([time.expand(n, t), torch.zeros(n, t), torch.zeros(n, t)], dim=-1)
    j[:, :, 11, 1] = 0.5
    return j


def make_valid(n: int, t: int = T) -> torch.Tensor:
    """Every 4th row has frames 40..47 invalid (runs [0, 40) and [48, 64)), the others are fully valid."""
    v = torch.ones(n, t, dtype=torch.bool)
    v[1::4, 40:48] = False
    return v


def loader(n_batches: int = 3, seed: int = 0) -> DataLoader:
    n = n_batches * ROWS
    return DataLoader(TensorDataset(make_joints(n, seed=seed), make_valid(n)), batch_size=ROWS, shuffle=False)


class FakeModule(pl.LightningModule):
    """``validation_step`` returns pred = gt + offset + drift * frame; invalid frames get garbage (+100 m)."""

    def __init__(self, offset=(0.0, 0.0, 0.0), drift=(0.0, 0.0, 0.0), output: str = "joints"):
        super().__init__()
        self.layer = nn.Linear(3, 1)
        self.offset = torch.tensor(offset)
        self.drift = torch.tensor(drift)
        self.output = output
        self.metrics_fps = 30

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0][:, :, 0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        gt, valid = batch
        frames = torch.arange(gt.shape[1], dtype=gt.dtype)[:, None, None]
        pred = gt + self.offset + self.drift * frames
        pred = torch.where(valid[..., None, None], pred, gt + 100.0)
        if self.output == "none":
            return None
        if self.output == "loss_only":
            return {"loss": pred.sum()}
        return {"joints_pred": pred, "joints_gt": gt, "valid": valid}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def trainer(cb, **kw) -> pl.Trainer:
    args = {"accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False,
            "enable_progress_bar": False, "enable_model_summary": False, "callbacks": [cb], **kw}
    return pl.Trainer(**args)


def validate(cb: ValidationMetrics, module: FakeModule, dl: DataLoader | None = None, tr=None) -> dict[str, float]:
    tr = tr or trainer(cb)
    (res,) = tr.validate(module, dataloaders=dl or loader(), verbose=False)
    return {k: float(v) for k, v in res.items() if k.startswith(P_)}


def valid_frames(n_batches: int) -> int:
    return int(make_valid(n_batches * ROWS).sum())


# ---------------------------------------------------------------------------------------------------- values
def test_constant_offset_gives_offset_mpjpe_and_mean_shift_fd():
    cb = ValidationMetrics(max_batches=None, fd_window=8, fd_stride=4)
    out = validate(cb, FakeModule(offset=(0.03, 0.04, 0.0)))
    assert out[P_ + "num_frames"] == valid_frames(3)
    assert out[P_ + "mpjpe_mm"] == pytest.approx(50.0, rel=1e-5)  # |(30, 40, 0)| mm; garbage frames masked
    assert out[P_ + "mpjve_mm_per_s"] == pytest.approx(0.0, abs=1e-3)
    # same covariance, mean shifted by the offset in each of the 21 joints: FD = 21 * 0.05^2
    assert out[P_ + "fd_g"] == pytest.approx(21 * 0.0025, rel=1e-3)
    assert out[P_ + "fd_seq_g"] == pytest.approx(21 * 0.0025, rel=1e-3)  # 8 * 21 * 0.0025 / 8
    assert out[P_ + "fd_k"] == pytest.approx(0.0, abs=1e-5)
    # left foot at y = 0.04 (< 0.05 contact height) sliding at 1 m/s in pred and gt
    for side in ("pred", "gt"):
        assert out[P_ + f"foot_sliding_ratio_{side}"] == pytest.approx(1.0)
        assert out[P_ + f"avg_foot_sliding_vel_m_per_s_{side}"] == pytest.approx(1.0, rel=1e-5)


def test_identical_pred_gives_zero_errors_and_fd():
    out = validate(ValidationMetrics(fd_window=8, fd_stride=4), FakeModule())
    assert out[P_ + "mpjpe_mm"] == 0.0
    assert out[P_ + "mpjve_mm_per_s"] == 0.0
    for key in ("fd_g", "fd_k", "fd_seq_g"):
        assert abs(out[P_ + key]) < 1e-5, key


def test_drift_gives_velocity_error_and_frame_weighted_mpjpe():
    # pred - gt = (1 mm per frame) * t along x: MPJVE = 1 mm * 30 fps; MPJPE = mean of t over valid frames (mm)
    out = validate(ValidationMetrics(fd_window=None), FakeModule(drift=(0.001, 0.0, 0.0)))
    assert out[P_ + "mpjve_mm_per_s"] == pytest.approx(30.0, rel=1e-4)  # no transition across the gap
    valid = make_valid(3 * ROWS)
    frames = torch.arange(T, dtype=torch.float64).expand(valid.shape)
    assert out[P_ + "mpjpe_mm"] == pytest.approx(float(frames[valid].mean()), rel=1e-5)
    assert P_ + "fd_seq_g" not in out  # windowed FD turned off


def test_lifted_feet_do_not_slide_in_pred():
    out = validate(ValidationMetrics(fd_window=None), FakeModule(offset=(0.0, 0.1, 0.0)))
    assert out[P_ + "mpjpe_mm"] == pytest.approx(100.0, rel=1e-5)
    assert out[P_ + "foot_sliding_ratio_pred"] == 0.0
    assert out[P_ + "avg_foot_sliding_vel_m_per_s_pred"] == 0.0  # fixed mode: 0 when nothing slides
    assert out[P_ + "foot_sliding_ratio_gt"] == pytest.approx(1.0)


def test_reference_mode_reports_metres():
    out = validate(ValidationMetrics(mode="reference", fd_window=None), FakeModule(offset=(0.03, 0.04, 0.0)))
    assert out[P_ + "mpjpe_m"] == pytest.approx(0.05, rel=1e-5)
    assert P_ + "mpjpe_mm" not in out


# -------------------------------------------------------------------------------------------- masking / runs
def test_valid_runs_hand_values():
    v = torch.tensor([[1, 1, 0, 1], [0, 0, 0, 0], [0, 1, 1, 1]], dtype=torch.bool)
    assert _valid_runs(v) == [(0, 0, 2), (0, 3, 4), (2, 1, 4)]
    assert _valid_runs(torch.zeros(0, 5, dtype=torch.bool)) == []


def direct(fd_window=30, num_persons=None) -> ValidationMetrics:
    cb = ValidationMetrics(fd_window=fd_window, num_persons=num_persons)
    cb.setup(None, SimpleNamespace(metrics_fps=30), "validate")
    return cb


def test_window_counts_and_frame_counts_follow_valid_runs():
    cb = direct()
    gt = make_joints(4)
    valid = make_valid(4)  # row 1: runs of 40 and 16 frames
    pred = gt.clone()
    pred[2, 5] = float("nan")  # a non-finite valid frame is dropped: row 2 -> runs [0, 5), [6, 64)
    with pytest.warns(UserWarning, match="NaN/inf"):
        cb.update(pred, gt, valid)
    m = cb.metrics
    assert float(m["num_frames"].compute()) == 4 * 64 - 8 - 1
    # 64 frames -> 4 windows of 30 with stride 10; 40 -> 2; 16, 5 -> 0; 58 -> 3
    assert float(m["fd_seq_g"].real_count) == 2 * 4 + 2 + 3
    assert float(m["fd_g"].fake_count) == 4 * 64 - 8 - 1
    assert float(m["fd_k"].real_count) == 2 * 63 + 39 + 15 + 4 + 57  # transitions inside runs
    assert float(m["mpjve"].count) == 21 * (2 * 63 + 39 + 15 + 4 + 57)


def test_two_persons_combine_validity_and_give_correlation():
    cb = direct(fd_window=None, num_persons=2)
    a = make_joints(3, seed=1)
    gt = torch.stack([a, a + torch.tensor([1.0, 0.0, 0.0])], dim=1).reshape(6, T, 22, 3)  # row b*2 + p
    pred = gt.clone()
    pred[1::2] = 2.0 - gt[0::2]  # pred person 1 mirrors person 0: correlation -1
    valid = torch.ones(6, T, dtype=torch.bool)
    valid[3, 10:20] = False  # person 1 of window 1 -> frames 10..19 of window 1 dropped for both persons
    cb.update(pred, gt, valid, num_persons=2)
    out = cb.compute()
    assert out["num_frames"] == 2 * (3 * T - 10)
    assert out["corr_gt"] == pytest.approx(1.0, abs=1e-9)
    assert out["corr_pred"] == pytest.approx(-1.0, abs=1e-9)
    with pytest.warns(UserWarning, match="num_persons"):  # one person per window: correlation skipped
        cb.update(gt, gt, None, num_persons=1)


def test_bad_shapes_raise_data_error():
    cb = direct()
    j = make_joints(2)
    with pytest.raises(DataError, match="J>=22"):
        cb.update(j[:, :, :21], j[:, :, :21])
    with pytest.raises(DataError, match="J>=22"):
        cb.update(j, j[:, :32])
    with pytest.raises(DataError, match="valid"):
        cb.update(j, j, torch.ones(2, 10, dtype=torch.bool))
    with pytest.raises(DataError, match="num_persons"):
        cb.update(j[:1], j[:1], None, num_persons=2)


def test_bad_arguments_raise_config_error():
    for kwargs in ({"every_n_validations": 0}, {"max_batches": 0}, {"fd_stride": 0}, {"mode": "paper"}):
        with pytest.raises(ConfigError):
            ValidationMetrics(**kwargs)


# ------------------------------------------------------------------------------------------ scheduling / bounds
def test_max_batches_bound_is_respected():
    out = validate(ValidationMetrics(max_batches=2, fd_window=None), FakeModule())
    assert out[P_ + "num_frames"] == valid_frames(2)


def test_every_n_validations_and_disabled():
    cb = ValidationMetrics(every_n_validations=2, fd_window=None)
    tr, module = trainer(cb), FakeModule(offset=(0.0, 0.0, 0.01))
    logged = [P_ + "mpjpe_mm" in validate(cb, module, tr=tr) for _ in range(4)]
    assert logged == [False, True, False, True]
    assert cb.state_dict() == {"validation_runs": 4}
    off = ValidationMetrics(enabled=False)
    assert validate(off, module) == {}


def test_missing_keys_and_none_outputs_log_nothing_and_warn_once():
    cb = ValidationMetrics(fd_window=None)
    with pytest.warns(UserWarning, match="lacks joints_pred/joints_gt") as rec:
        assert validate(cb, FakeModule(output="loss_only")) == {}
    assert sum("lacks" in str(w.message) for w in rec) == 1
    cb = ValidationMetrics(fd_window=None)
    with pytest.warns(UserWarning, match="no validation batch returned valid joints"):
        assert validate(cb, FakeModule(output="none")) == {}


# ------------------------------------------------------------------------------------------ fit + CSV + config
def test_fit_logs_to_csv_on_every_second_validation(tmp_path):
    cb = ValidationMetrics(every_n_validations=2, max_batches=2, fd_window=8, fd_stride=4)
    tr = pl.Trainer(accelerator="cpu", devices=1, max_steps=4, val_check_interval=1, limit_val_batches=3,
                    num_sanity_val_steps=1, fast_dev_run=False, logger=CSVLogger(tmp_path, name="run"),
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    callbacks=[cb])
    tr.fit(FakeModule(offset=(0.0, 0.02, 0.0)), train_dataloaders=loader(4), val_dataloaders=loader(3))
    assert cb.validation_runs == 4  # the sanity check is not counted
    with open(next(tmp_path.rglob("metrics.csv"))) as f:
        rows = list(csv.DictReader(f))
    logged = [r for r in rows if r.get(P_ + "mpjpe_mm")]
    assert len(logged) == 2
    assert [int(r["step"]) for r in logged] == [1, 3]  # after the 2nd and 4th training step
    for r in logged:
        assert float(r[P_ + "mpjpe_mm"]) == pytest.approx(20.0, rel=1e-5)
        assert float(r[P_ + "num_frames"]) == valid_frames(2)  # max_batches=2 of the 3 validation batches
        assert float(r[P_ + "fd_g"]) == pytest.approx(21 * 0.02**2, rel=1e-3)
    assert float(tr.callback_metrics[P_ + "mpjpe_mm"]) == pytest.approx(20.0, rel=1e-5)


def test_config_entry_instantiates():
    from hydra.utils import instantiate

    conf = OmegaConf.load(ROOT / "conf" / "callbacks" / "default.yaml")
    assert {"model_checkpoint", "rich_progress_bar", "lr_monitor"} <= set(conf)
    cfg = OmegaConf.create({"stage": {"num_persons": 2}, "dataset": {"fps": 30}, "cb": conf.validation_metrics})
    cb = instantiate(cfg.cb)
    assert isinstance(cb, ValidationMetrics)
    assert (cb.every_n_validations, cb.max_batches, cb.mode, cb.fd_window, cb.fd_stride, cb.fps, cb.num_persons,
            cb.prefix, cb.enabled) == (1, 8, "fixed", 30, 10, 30, 2, "val_metrics/", True)


def test_step_progress_bar_describes_step_based_runs(tmp_path):
    import lightning.pytorch as pl

    from callbacks import StepRichProgressBar

    for max_epochs in (-1, None):  # conf/trainer sets -1; Lightning leaves None when only max_steps is given
        bar = StepRichProgressBar()
        bar._trainer = pl.Trainer(max_steps=800, max_epochs=max_epochs, callbacks=[bar], logger=False,
                                  default_root_dir=tmp_path)  # set by Trainer.fit's setup normally
        assert bar._get_train_description(3).strip() == "Epoch 3 (of 800 steps)"
    bar = StepRichProgressBar()
    bar._trainer = pl.Trainer(max_epochs=5, callbacks=[bar], logger=False, default_root_dir=tmp_path)
    assert bar._get_train_description(2).strip() == "Epoch 2/4"
