"""callbacks.SampleVideo: a GT-vs-sample skeleton video of a real DFoT sample during validation (CPU Trainer)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import imageio_ffmpeg
import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from omegaconf import OmegaConf
from PIL import Image

from callbacks import SampleVideo
from datamodules import MotionDataModule
from magnet.errors import ConfigError
from magnet.visualize.render import CONTEXT_TINT

ROOT = Path(__file__).resolve().parents[1]
TAG = "val/sample_video"

warnings.filterwarnings("ignore", message=".*does not have many workers.*")


@pytest.fixture(scope="module")
def dfot_module(sampler_checkpoints):
    """The tiny trained 2-person DFoT of the sampler tests as a DFoTModule (it has ``sample_windows``)."""
    from magnet.training.dfot_module import DFoTModule

    ckpt_dir = sampler_checkpoints[2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the default-skeleton notice
        module = DFoTModule(vqvae=str(ckpt_dir.parent / "stage1" / "vqvae.safetensors"), model="tiny", num_persons=2)
    state = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    module.load_state_dict(state)
    return module.eval()


@pytest.fixture(scope="module")
def datamodule(synthetic_root):
    dm = MotionDataModule(datasets=[{"name": "synthetic", "dir": str(synthetic_root / "synthetic")}],
                          sequence_len=64, person_num=2, batch_size=4, num_workers=0, seed=0)
    dm.setup("validate")
    return dm


def _trainer(tmp_path: Path, callback: SampleVideo, loggers) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, logger=loggers, callbacks=[callback], limit_val_batches=2,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)


def _tint() -> np.ndarray:
    return np.array([int(CONTEXT_TINT[i:i + 2], 16) for i in (1, 3, 5)])


def test_logs_a_video_to_disk_and_tensorboard(dfot_module, datamodule, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = TensorBoardLogger(tmp_path, name="tb", version=0)
    csv = CSVLogger(tmp_path, name="csv", version=0)
    cb = SampleVideo(enabled=True, every_n_validations=1, sampling_steps=2, max_frames=40, panel_px=160)
    _trainer(tmp_path, cb, [tb, csv]).validate(dfot_module, datamodule=datamodule, verbose=False)

    # the mp4 on disk: 40 frames, two 160-pixel panels; the window's first 32 frames are context (tinted)
    video = Path(tb.log_dir) / "videos" / "val_step0000000.mp4"
    assert cb.last_video == video and video.is_file()
    gen = imageio_ffmpeg.read_frames(str(video))
    meta = next(gen)
    w, h = meta["size"]
    frames = [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in gen]
    assert len(frames) == 40 and w == 320
    panel = slice(30, h - 22), slice(0, w // 2)
    assert np.abs(np.median(frames[5][panel].reshape(-1, 3), axis=0) - _tint()).max() <= 6
    assert np.median(frames[36][panel].reshape(-1, 3), axis=0).min() >= 248

    # TensorBoard: one animated GIF image summary with the same 40 frames
    acc = EventAccumulator(tb.log_dir, size_guidance={"images": 0})
    acc.Reload()
    assert TAG in acc.Tags()["images"]
    (event,) = acc.Images(TAG)
    assert event.step == 0 and (event.width, event.height) == (w, h)
    gif = Image.open(io.BytesIO(event.encoded_image_string))
    assert gif.format == "GIF" and gif.n_frames == 40


def test_every_n_validations_and_state(dfot_module, datamodule, tmp_path):
    """Every second validation run; x0 guidance works although validation runs under inference mode."""
    cb = SampleVideo(enabled=True, every_n_validations=2, sampling_steps=1, guidance=True, max_frames=4, panel_px=96)
    trainer = _trainer(tmp_path, cb, CSVLogger(tmp_path, name="csv", version=0))
    trainer.validate(dfot_module, datamodule=datamodule, verbose=False)
    assert cb.last_video is None and cb.state_dict() == {"validation_runs": 1}
    trainer.validate(dfot_module, datamodule=datamodule, verbose=False)
    assert cb.last_video is not None and imageio_ffmpeg.count_frames_and_secs(str(cb.last_video))[0] == 4
    again = SampleVideo(enabled=True)
    again.load_state_dict(cb.state_dict())
    assert again.validation_runs == 2


def test_off_by_default_and_in_the_config(dfot_module, datamodule, tmp_path):
    cfg = OmegaConf.load(ROOT / "conf" / "callbacks" / "default.yaml")
    cfg = OmegaConf.merge({"dataset": {"fps": 30}}, {"callbacks": cfg})  # fps: ${dataset.fps}
    cb = instantiate(cfg.callbacks.sample_video)
    assert isinstance(cb, SampleVideo) and cb.enabled is False and cb.every_n_validations == 5 and cb.fps == 30
    _trainer(tmp_path, cb, CSVLogger(tmp_path, name="csv", version=0)).validate(dfot_module, datamodule=datamodule,
                                                                                  verbose=False)
    assert cb.last_video is None and not list(tmp_path.rglob("*.mp4"))
    with pytest.raises(ConfigError, match="every_n_validations"):
        SampleVideo(every_n_validations=0)


def test_logs_the_mp4_to_wandb_offline(dfot_module, datamodule, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    import wandb

    if wandb.run is not None:  # a run another test left open would be reused (and its folder written to)
        wandb.finish()
    logger = WandbLogger(project="magnet-tests", save_dir=str(tmp_path), offline=True)
    cb = SampleVideo(enabled=True, every_n_validations=1, sampling_steps=1, max_frames=6, panel_px=96)
    try:
        _trainer(tmp_path, cb, logger).validate(dfot_module, datamodule=datamodule, verbose=False)
    finally:
        logger.experiment.finish()
    logged = list((tmp_path / "wandb").glob("offline-run-*/files/media/videos/**/*.mp4"))
    assert len(logged) == 1 and imageio_ffmpeg.count_frames_and_secs(str(logged[0]))[0] == 6
