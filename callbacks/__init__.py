"""Lightning callbacks shared by the training stages."""

from callbacks.validation_metrics import ValidationMetrics

__all__ = ["ValidationMetrics"]
