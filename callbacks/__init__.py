"""Lightning callbacks shared by the training stages."""

from callbacks.progress import StepRichProgressBar
from callbacks.validation_metrics import ValidationMetrics

__all__ = ["StepRichProgressBar", "ValidationMetrics"]
