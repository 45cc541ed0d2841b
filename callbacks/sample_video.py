"""A skeleton video of one generated validation sample, logged during DFoT validation.

On every ``every_n_validations``-th validation run (sanity checks not counted), the callback takes the first
fully valid window of the validation batches, asks the module for one joint sample of it
(``pl_module.sample_windows(batch, 1, sampling_steps, seed, guidance)``: context = the window's first frames,
generation after them; see :meth:`magnet.training.dfot_module.DFoTModule.sample_windows`) and renders ground truth
and sample side by side (:func:`magnet.visualize.render.render_panels`), context frames marked. The mp4 is kept
in ``<log dir>/videos/val_step<step>.mp4`` and logged to every logger that shows videos:

* TensorBoard: an animated GIF under the tag (TensorBoard's Images tab plays it; no moviepy needed),
* Weights & Biases: ``wandb.Video`` of the mp4,
* other loggers (CSV): the file on disk only.

Cost when on: one sample with ``sampling_steps`` DDIM steps plus about 10 ms per rendered frame, once per
``every_n_validations`` validations, on global rank 0 only. Off by default (``enabled: false`` in
``conf/callbacks/default.yaml``; switch on with ``callbacks.sample_video.enabled=true``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn

from magnet.errors import ConfigError

__all__ = ["SampleVideo"]


class SampleVideo(Callback):
    """Logs a ground-truth-vs-sample skeleton video of one validation window.

    Args:
        enabled: False (default) turns the callback off.
        every_n_validations: render on the k-th, 2k-th, ... validation run.
        sampling_steps: DDIM steps of the sample.
        guidance: x0 guidance while sampling (costs a VQ-VAE decoder forward + backward per step).
        seed: sampling seed (the same window and seed give the same sample on the same machine).
        max_frames: render at most this many frames of the window (None = all).
        max_batches: look for a fully valid window in at most this many validation batches per run.
        fps: video frame rate (the data's, 30).
        panel_px: panel width in pixels.
        tag: the name the video is logged under.
    """

    def __init__(self, enabled: bool = False, every_n_validations: int = 5, sampling_steps: int = 10,
                 guidance: bool = False, seed: int = 0, max_frames: int | None = None, max_batches: int = 4,
                 fps: float = 30.0, panel_px: int = 320, tag: str = "val/sample_video"):
        super().__init__()
        if int(every_n_validations) < 1 or int(sampling_steps) < 1 or int(max_batches) < 1:
            raise ConfigError(f"SampleVideo: every_n_validations ({every_n_validations}), sampling_steps "
                              f"({sampling_steps}) and max_batches ({max_batches}) must be >= 1")
        if max_frames is not None and int(max_frames) < 2:
            raise ConfigError(f"SampleVideo: max_frames must be >= 2 or null, got {max_frames}")
        if fps <= 0:
            raise ConfigError(f"SampleVideo: fps must be positive, got {fps}")
        self.enabled = bool(enabled)
        self.every_n_validations = int(every_n_validations)
        self.sampling_steps = int(sampling_steps)
        self.guidance = bool(guidance)
        self.seed = int(seed)
        self.max_frames = None if max_frames is None else int(max_frames)
        self.max_batches = int(max_batches)
        self.fps = float(fps)
        self.panel_px = int(panel_px)
        self.tag = tag
        self.validation_runs = 0
        self.active = False
        self.batches_seen = 0
        self.last_video: Path | None = None
        self._warned = False

    # ------------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"validation_runs": self.validation_runs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.validation_runs = int(state_dict.get("validation_runs", 0))

    # ------------------------------------------------------------------------------------------------ hooks
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.active = False
        if not self.enabled or trainer.sanity_checking:
            return
        self.validation_runs += 1
        if self.validation_runs % self.every_n_validations or not trainer.is_global_zero:
            return
        if not hasattr(pl_module, "sample_windows"):
            if not self._warned:
                self._warned = True
                rank_zero_warn(f"SampleVideo: {type(pl_module).__name__} cannot generate (no sample_windows); "
                               "no video is logged")
            return
        self.active, self.batches_seen = True, 0

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self.active:
            return
        self.batches_seen += 1
        if self.batches_seen > self.max_batches or not isinstance(batch, dict) or "x" not in batch:
            return
        # validation runs under inference mode; x0 guidance differentiates through the VQ-VAE decoder
        with torch.inference_mode(False), torch.enable_grad():
            x = {k: v.clone() if isinstance(v, torch.Tensor) and v.is_inference() else v for k, v in batch.items()}
            res = pl_module.sample_windows(x, 1, self.sampling_steps, seed=self.seed, guidance=self.guidance)
        if res is None:  # no fully valid window in this batch
            return
        self.active = False
        self.last_video = self.log_video(trainer, res)

    # ------------------------------------------------------------------------------------------------ work
    @staticmethod
    def panels(result: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, int]:
        """(ground truth ``[T, P, 22, 3]``, sample ``[T, P, 22, 3]``, context frames) of the first window of a
        ``sample_windows`` result (rows ``b * P + p``; ``valid`` marks the generated frames)."""
        p = int(result.get("num_persons", 1))
        pred = result["joints_pred"][:p].detach().float().cpu().numpy().transpose(1, 0, 2, 3)
        gt = result["joints_gt"][:p].detach().float().cpu().numpy().transpose(1, 0, 2, 3)
        valid = result.get("valid")
        context = 0
        if valid is not None:
            generated = valid[0].detach().cpu().numpy().astype(bool)
            context = int(np.argmax(generated)) if generated.any() else len(generated)
        return gt, pred, context

    def log_video(self, trainer: Trainer, result: dict[str, Any]) -> Path:
        """Render ``result`` (a ``sample_windows`` output), save the mp4 and log it; returns the mp4 path."""
        from magnet.visualize.render import SkeletonRenderer, write_video

        gt, pred, context = self.panels(result)
        step = int(trainer.global_step)
        renderer = SkeletonRenderer([gt, pred], titles=["ground truth", f"sample (step {step})"],
                                    context_frames=context, generated=[False, True], fps=self.fps,
                                    caption=f"validation window, {gt.shape[1]} person(s), {self.sampling_steps} "
                                            "DDIM steps", panel_px=self.panel_px)
        frames = list(renderer.frames(self.max_frames))
        root = Path(trainer.log_dir or trainer.default_root_dir)
        video = write_video(frames, root / "videos" / f"val_step{step:07d}.mp4", fps=self.fps)
        for logger in trainer.loggers:
            kind = type(logger).__name__
            if kind == "TensorBoardLogger":
                self._log_tensorboard(logger, frames, step)
            elif kind == "WandbLogger":
                logger.log_video(self.tag, [str(video)], step=step, format=["mp4"])
        return video

    def _log_tensorboard(self, logger: Any, frames: list[np.ndarray], step: int) -> None:
        """An animated GIF as an image summary (what ``SummaryWriter.add_video`` writes, without moviepy)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        from magnet.visualize.render import gif_bytes

        h, w = frames[0].shape[:2]
        summary = Summary(value=[Summary.Value(tag=self.tag, image=Summary.Image(
            height=h, width=w, colorspace=3, encoded_image_string=gif_bytes(frames, self.fps)))])
        writer = logger.experiment
        writer._get_file_writer().add_summary(summary, step)  # the path SummaryWriter.add_* take
        writer.flush()
