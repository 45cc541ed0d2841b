"""A rich progress bar that reads well for step-based runs (``max_steps`` set, ``max_epochs=-1``)."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar


class StepRichProgressBar(RichProgressBar):
    """Lightning's :class:`RichProgressBar`, but an open-ended epoch count is shown as ``Epoch 3 (of 800 steps)``
    instead of ``Epoch 3/-2``, and the bar's total stays right after a mid-epoch resume (Lightning counts the
    epoch's batches from where it stopped but sizes the bar by the remaining steps alone: "100/79")."""

    _epoch_first_step: int | None = None  # global step at this epoch's start (None: resumed mid-epoch)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_first_step = trainer.global_step
        super().on_train_epoch_start(trainer, pl_module)

    @property
    def total_train_batches(self) -> int | float:
        """Batches this epoch runs: all of them, or for a step-based run (``max_steps``, no epoch limit) the ones
        run so far in this epoch plus the remaining steps, if fewer."""
        trainer = self.trainer
        if trainer.max_epochs not in (None, -1) or not trainer.max_steps or trainer.max_steps < 0:
            return trainer.num_training_batches
        if self._epoch_first_step is not None:
            done = trainer.global_step - self._epoch_first_step
        else:  # resumed in the middle of an epoch: the restored count of this epoch's batches
            done = trainer.fit_loop.epoch_loop.batch_progress.current.ready
        return min(trainer.num_training_batches, done + max(trainer.max_steps - trainer.global_step, 0))

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
