"""A rich progress bar that reads well for step-based runs (``max_steps`` set, ``max_epochs=-1``)."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar


class StepRichProgressBar(RichProgressBar):
    """Lightning's :class:`RichProgressBar`, but an open-ended epoch count is shown as ``Epoch 3 (of 800 steps)``
    instead of ``Epoch 3/-2``."""

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        if trainer.max_epochs is not None and trainer.max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        text = f"Epoch {current_epoch}"
        if trainer.max_steps and trainer.max_steps > 0:
            text += f" (of {trainer.max_steps} steps)"
        if len(self.validation_description) > len(text):
            text = f"{text:{len(self.validation_description)}}"
        return text
