"""Lightning callbacks shared by the training stages."""

from callbacks.checkpoints import InterruptCheckpoint, time_checkpoint
from callbacks.progress import StepRichProgressBar
from callbacks.sample_video import SampleVideo
from callbacks.validation_metrics import ValidationMetrics

__all__ = ["InterruptCheckpoint", "SampleVideo", "StepRichProgressBar", "ValidationMetrics", "time_checkpoint"]
